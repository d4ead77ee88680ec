package transport

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Role is what the certificate a connection presented lets it do. Roles
// are ordered: a master may do all an admin may, and an admin all a peer
// may, except act as a peer (only a peer's own key names a peer).
type Role uint8

const (
	// RoleAnonymous is a connection without a certificate, or with one that
	// is neither a peer's key nor signed by the cluster CA: reads only.
	RoleAnonymous Role = iota
	// RolePeer is a connection that presented a self-signed Ed25519
	// certificate: it may act as the one peer its key names.
	RolePeer
	// RoleAdmin holds a certificate from the cluster CA that names an
	// admin: cluster administration (membership, leadership, snapshots).
	RoleAdmin
	// RoleMaster holds a certificate from the cluster CA that names a
	// master: Raft, forwarded writes, and everything an admin may do.
	RoleMaster
)

func (r Role) String() string {
	switch r {
	case RolePeer:
		return "peer"
	case RoleAdmin:
		return "admin"
	case RoleMaster:
		return "master"
	}
	return "anonymous"
}

// Caller is who is at the other end of a connection, as its TLS
// certificate proved. A plaintext connection (a cluster run with
// --insecure on loopback) has Insecure set and no proof at all.
type Caller struct {
	Role Role
	// Name is the master ID or admin name a CA-signed certificate carries.
	Name string
	// Key is a peer's public key (RolePeer only).
	Key ed25519.PublicKey
	// Insecure means the connection is plaintext: the node was started
	// without TLS and trusts whoever reaches its loopback port.
	Insecure bool
	// Addr is the remote address of the connection.
	Addr net.Addr
	// Serial is the serial number, in lower-case hex, of a certificate
	// the cluster CA verified (RoleAdmin, RoleMaster); "" otherwise.
	Serial string
	// Member is set by the node's Gate when the certificate names a
	// current member of its cluster.
	Member bool
	// Outsider is set by the node's Gate when a CA-signed certificate
	// gives no rights now: a master certificate that names no current
	// member. Such a caller may do what an anonymous one may, and ask to
	// join as itself (the node decides that, not Allows).
	Outsider bool
}

// Allows reports whether the caller may act with role r. A plaintext
// connection may do anything: without TLS nothing can be proved, which is
// why a master without TLS listens on loopback only.
func (c Caller) Allows(r Role) bool {
	if c.Insecure {
		return true
	}
	if r == RolePeer {
		return c.Role == RolePeer
	}
	if c.Outsider {
		return r == RoleAnonymous
	}
	return c.Role >= r
}

// ErrForbidden means the caller's certificate does not allow the call.
var ErrForbidden = NewError("forbidden", "this call needs a certificate the caller did not present")

// Require returns nil if the caller of ctx may act with role r, else an
// error wrapping ErrForbidden that says which certificate is needed.
func Require(ctx context.Context, r Role) error {
	c := CallerFrom(ctx)
	if c.Allows(r) {
		return nil
	}
	if c.Outsider {
		return fmt.Errorf("%w: %s %q is not a member of this cluster, so its certificate gives no rights here beyond joining as itself", ErrForbidden, c.Role, c.Name)
	}
	switch r {
	case RoleMaster:
		return fmt.Errorf("%w: only a master's certificate (signed by the cluster CA) may do this; the caller is %s", ErrForbidden, c.Role)
	case RoleAdmin:
		return fmt.Errorf("%w: cluster administration needs an admin or master certificate signed by the cluster CA (see 'fileshare tls init') as this side's certificate and key; the caller is %s", ErrForbidden, c.Role)
	default:
		return fmt.Errorf("%w: writes need the peer's own key as its TLS client certificate; the caller is %s", ErrForbidden, c.Role)
	}
}

type callerKey struct{}

// WithCaller returns ctx carrying c. The RPC server sets it for every
// handler; tests use it to call handlers directly.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller a handler's ctx carries. Without one it is
// an anonymous TLS caller: nothing is allowed that needs proof.
func CallerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// callerConn is a connection whose TLS handshake the Mux completed.
type callerConn struct {
	net.Conn
	mux    *Mux
	kind   byte
	chain  []*x509.Certificate // what the client presented, leaf first
	base   Caller              // as its certificate proved it (before the Gate)
	caller Caller              // as admitted (after the Gate)
	// version is the Gate's version before it admitted the connection: the
	// RPC server asks the Gate again once it differs.
	version uint64
	once    sync.Once
}

// Close closes the connection and forgets it.
func (c *callerConn) Close() error {
	c.once.Do(func() {
		if c.mux != nil {
			c.mux.forget(c)
		}
	})
	return c.Conn.Close()
}

// ReadFrom passes through, so io.Copy from a file to a plaintext
// connection still uses sendfile.
func (c *callerConn) ReadFrom(r io.Reader) (int64, error) { return readFrom(c.Conn, r) }

// CallerOf returns who is at the other end of a connection the Mux
// accepted. Connections from a plaintext Mux are Insecure.
func CallerOf(conn net.Conn) Caller {
	if cc, ok := conn.(*callerConn); ok {
		return cc.caller
	}
	return Caller{Insecure: true, Addr: conn.RemoteAddr()}
}

// Certificate names. A CA-signed certificate names its holder with one URI
// SAN, fileshare://master/ID or fileshare://admin/NAME, so a certificate
// from the same CA for some other purpose never passes for a master.
const uriScheme = "fileshare"

// RoleURI returns the URI SAN that names a master or an admin.
func RoleURI(r Role, name string) *url.URL {
	return &url.URL{Scheme: uriScheme, Host: r.String(), Path: "/" + name}
}

// roleOf returns the role and name a CA-verified leaf certificate names.
func roleOf(leaf *x509.Certificate) (Role, string) {
	for _, u := range leaf.URIs {
		if u.Scheme != uriScheme || len(u.Path) < 2 {
			continue
		}
		switch u.Host {
		case "master":
			return RoleMaster, u.Path[1:]
		case "admin":
			return RoleAdmin, u.Path[1:]
		}
	}
	return RoleAnonymous, ""
}

// TLS is a node's credentials: its certificate and the cluster CA it
// trusts. Masters and admins load both from files (reloaded when the files
// change); a peer's certificate is made from its key, and it may trust a
// CA to verify masters. Safe for concurrent use.
type TLS struct {
	cert func() (*tls.Certificate, error)
	ca   func() (*x509.CertPool, error) // nil: no CA known
	// caGen counts the CA's loads (nil: it never changes).
	caGen func() uint64
}

// CAGeneration returns a number that changes whenever the trusted CA is
// loaded again from its file (checking the file, at most once a second).
// A Mux uses it to re-check open connections when the CA is rotated.
func (t *TLS) CAGeneration() uint64 {
	if t == nil || t.caGen == nil {
		return 0
	}
	return t.caGen()
}

// ErrTLSConfig means TLS credentials could not be loaded or do not fit.
var ErrTLSConfig = errors.New("bad TLS configuration")

// LoadTLS reads a PEM certificate and key and, if caFile is not empty, the
// cluster CA. Each is read again when its file changes (checked at most
// once a second), so a renewed certificate takes effect without a restart;
// a file that fails to parse keeps the last good one in use.
func LoadTLS(certFile, keyFile, caFile string) (*TLS, error) {
	t := &TLS{}
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, fmt.Errorf("%w: give both a certificate file and its key file", ErrTLSConfig)
		}
		w := &watched[*tls.Certificate]{files: []string{certFile, keyFile}, load: func() (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, err
			}
			return &c, nil
		}}
		if _, err := w.get(); err != nil {
			return nil, fmt.Errorf("%w: load certificate %s with key %s: %v", ErrTLSConfig, certFile, keyFile, err)
		}
		t.cert = w.get
	}
	if caFile != "" {
		w := &watched[*x509.CertPool]{files: []string{caFile}, load: func() (*x509.CertPool, error) {
			b, err := os.ReadFile(caFile)
			if err != nil {
				return nil, err
			}
			p := x509.NewCertPool()
			if !p.AppendCertsFromPEM(b) {
				return nil, errors.New("no PEM certificate in it")
			}
			return p, nil
		}}
		if _, err := w.get(); err != nil {
			return nil, fmt.Errorf("%w: load CA %s: %v", ErrTLSConfig, caFile, err)
		}
		t.ca = w.get
		t.caGen = func() uint64 {
			_, _ = w.get()
			return w.gen.Load()
		}
	}
	return t, nil
}

// PeerTLS returns credentials for a peer: the certificate is a
// self-signed one for key, and ca (may be nil) is the TLS whose CA verifies
// masters.
func PeerTLS(key ed25519.PrivateKey, ca *TLS) (*TLS, error) {
	cert, err := SelfSigned(key)
	if err != nil {
		return nil, err
	}
	t := &TLS{cert: func() (*tls.Certificate, error) { return &cert, nil }}
	if ca != nil {
		t.ca, t.caGen = ca.ca, ca.caGen
	}
	return t, nil
}

// HasCertificate reports whether t presents a certificate of its own.
func (t *TLS) HasCertificate() bool { return t != nil && t.cert != nil }

// HasCA reports whether t knows a cluster CA.
func (t *TLS) HasCA() bool { return t != nil && t.ca != nil }

// Certificate returns t's certificate as loaded now.
func (t *TLS) Certificate() (*tls.Certificate, error) {
	if t.cert == nil {
		return nil, fmt.Errorf("%w: no certificate configured", ErrTLSConfig)
	}
	return t.cert()
}

func (t *TLS) pool() (*x509.CertPool, error) {
	if t.ca == nil {
		return nil, nil
	}
	return t.ca()
}

// ServerConfig is the tls.Config a node accepts connections with: TLS 1.3,
// its own certificate, and a client certificate requested but not
// required (peers present their key, admins and masters a CA-signed
// certificate, anonymous readers none); Classify tells them apart.
func (t *TLS) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return t.Certificate() },
		ClientAuth:     tls.RequestClientCert,
	}
}

// Classify returns who presented chain (leaf first) on a completed
// handshake: a master or admin if the cluster CA verifies it for client
// authentication and it names one, a peer if its key is Ed25519, else
// anonymous.
func (t *TLS) Classify(chain []*x509.Certificate) Caller {
	if len(chain) == 0 {
		return Caller{}
	}
	leaf := chain[0]
	if pool, err := t.pool(); err == nil && pool != nil {
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
			if r, name := roleOf(leaf); r != RoleAnonymous {
				return Caller{Role: r, Name: name, Serial: SerialOf(leaf)}
			}
		}
	}
	if k, ok := leaf.PublicKey.(ed25519.PublicKey); ok {
		return Caller{Role: RolePeer, Key: k}
	}
	return Caller{}
}

// SerialOf returns a certificate's serial number as the deny list names
// it: lower-case hex without leading zeros ("0" for zero).
func SerialOf(cert *x509.Certificate) string {
	if cert == nil || cert.SerialNumber == nil {
		return ""
	}
	return cert.SerialNumber.Text(16)
}

// ErrNotAMaster means the node dialled did not prove it is a master of
// this cluster.
var ErrNotAMaster = errors.New("the remote node's certificate is not a master certificate from the trusted cluster CA")

// MasterClientConfig is the tls.Config for dialling a master: the server
// must present a certificate that the cluster CA verifies and that names a
// master, so a leader hint or a hostile address never leads a client to an
// impostor. Host names are not checked: masters are named by the CA, not
// by the address a client was given. This node presents its own
// certificate, if it has one.
func (t *TLS) MasterClientConfig() *tls.Config {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified below, against the reloaded CA and the role
		VerifyConnection: func(cs tls.ConnectionState) error {
			pool, err := t.pool()
			if err != nil || pool == nil {
				return fmt.Errorf("%w: no trusted CA configured; give the cluster CA", ErrNotAMaster)
			}
			if len(cs.PeerCertificates) == 0 {
				return ErrNotAMaster
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("%w: %v", ErrNotAMaster, err)
			}
			if r, _ := roleOf(leaf); r != RoleMaster {
				return ErrNotAMaster
			}
			return nil
		},
	}
	if t.cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return t.Certificate() }
	}
	return cfg
}

// ErrWrongPeer means the node dialled presented another key than the one
// the caller expected.
var ErrWrongPeer = errors.New("the remote peer's key does not match the peer the index lists at that address")

// PeerClientConfig is the tls.Config for dialling another peer: check
// receives the key the remote peer presented and says whether it is the
// expected one.
func (t *TLS) PeerClientConfig(check func(ed25519.PublicKey) error) *tls.Config {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // a peer's certificate is self-signed: its key is its identity
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return ErrWrongPeer
			}
			k, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
			if !ok {
				return fmt.Errorf("%w: it presented no Ed25519 key", ErrWrongPeer)
			}
			return check(k)
		},
	}
	if t.cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return t.Certificate() }
	}
	return cfg
}

// watched is a value loaded from files and loaded again when any of them
// changes size or modification time.
type watched[T any] struct {
	files []string
	load  func() (T, error)

	gen     atomic.Uint64 // counts loads
	mu      sync.Mutex
	val     T
	loaded  bool
	stamp   string
	checked time.Time
}

// reloadEvery is how often a watched value looks at its files.
const reloadEvery = time.Second

func (w *watched[T]) get() (T, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.loaded && time.Since(w.checked) < reloadEvery {
		return w.val, nil
	}
	w.checked = time.Now()
	stamp := ""
	for _, f := range w.files {
		fi, err := os.Stat(f)
		if err != nil {
			if w.loaded {
				return w.val, nil // keep serving with what we have
			}
			return w.val, err
		}
		stamp += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	if w.loaded && stamp == w.stamp {
		return w.val, nil
	}
	v, err := w.load()
	if err != nil {
		if w.loaded {
			return w.val, nil
		}
		return w.val, err
	}
	w.val, w.loaded, w.stamp = v, true, stamp
	w.gen.Add(1)
	return v, nil
}
