package transport

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// SelfSigned returns a TLS certificate for a peer's Ed25519 key. Its
// subject and dates carry no meaning: the key is the peer's identity, and
// the TLS handshake proves possession of it.
func SelfSigned(key ed25519.PrivateKey) (tls.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "fileshare peer"},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("make peer certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// CA is a cluster certificate authority held in memory while issuing.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA makes a self-signed cluster CA valid for validity.
func NewCA(name string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"FileShare"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Issue makes a certificate and key for a master or an admin. A master's
// certificate serves and authenticates as a client (masters dial each
// other); hosts (IPs or DNS names) become its SANs. An admin's is a client
// certificate only.
func (ca *CA) Issue(r Role, name string, hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if r != RoleMaster && r != RoleAdmin {
		return nil, nil, fmt.Errorf("%w: a CA issues master and admin certificates, not %s", ErrTLSConfig, r)
	}
	if err := validCertName(name); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: r.String() + "." + name, Organization: []string{"FileShare"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{RoleURI(r, name)},
	}
	if r == RoleMaster {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else if h != "" {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// LoadCA reads a CA's certificate and private key (as InitFiles writes
// them), to issue more certificates.
func LoadCA(certFile, keyFile string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: load CA %s: %v", ErrTLSConfig, certFile, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || !cert.IsCA {
		return nil, fmt.Errorf("%w: %s is not a CA certificate with a signing key", ErrTLSConfig, certFile)
	}
	return &CA{Cert: cert, Key: signer}, nil
}

// CertPEM returns the CA's certificate in PEM.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// KeyPEM returns the CA's private key in PEM.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ErrExists means a file that would be written already exists.
var ErrExists = errors.New("file already exists")

// InitFiles writes, into dir, what a dev or test cluster needs: ca.pem and
// ca-key.pem, MASTER.pem and MASTER-key.pem for every master (with hosts as
// SANs), and admin.pem and admin-key.pem. Keys are written with mode 0600.
// It refuses to overwrite any existing file, so a CA is never replaced by
// accident. It returns the paths written.
func InitFiles(dir string, masters, hosts []string, validity time.Duration) ([]string, error) {
	if len(masters) == 0 {
		return nil, fmt.Errorf("%w: name at least one master", ErrTLSConfig)
	}
	names := []string{"ca", "ca-key", "admin", "admin-key"}
	for _, m := range masters {
		if err := validCertName(m); err != nil {
			return nil, err
		}
		if m == "admin" || m == "ca" {
			return nil, fmt.Errorf("%w: %q cannot name a master (its file would clash)", ErrTLSConfig, m)
		}
		names = append(names, m, m+"-key")
	}
	for _, n := range names {
		p := filepath.Join(dir, n+".pem")
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("%w: %s; choose an empty directory, or delete the old files if you mean to replace the CA", ErrExists, p)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ca, err := NewCA("FileShare cluster CA", validity)
	if err != nil {
		return nil, err
	}
	var written []string
	write := func(name string, b []byte, mode os.FileMode) error {
		p := filepath.Join(dir, name+".pem")
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		written = append(written, p)
		return nil
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	if err := write("ca", ca.CertPEM(), 0o644); err != nil {
		return written, err
	}
	if err := write("ca-key", caKey, 0o600); err != nil {
		return written, err
	}
	issue := func(r Role, name string) error {
		c, k, err := ca.Issue(r, name, hosts, validity)
		if err != nil {
			return err
		}
		if err := write(name, c, 0o644); err != nil {
			return err
		}
		return write(name+"-key", k, 0o600)
	}
	for _, m := range masters {
		if err := issue(RoleMaster, m); err != nil {
			return written, err
		}
	}
	if err := issue(RoleAdmin, "admin"); err != nil {
		return written, err
	}
	return written, nil
}

// validCertName accepts the names a master ID may have: 1 to 64 ASCII
// letters, digits, '.', '_' and '-', not starting with '.'.
func validCertName(n string) error {
	ok := n != "" && len(n) <= 64 && n[0] != '.'
	for i := 0; ok && i < len(n); i++ {
		c := n[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%w: master name %q: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'", ErrTLSConfig, n)
	}
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
