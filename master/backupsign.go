package master

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"fileshare/transport"
)

// ArchiveSignature is the signature section of a backup archive: the
// leader's signature over the metadata and the snapshot, made with the
// key of its master certificate.
type ArchiveSignature struct {
	// Certificates is the signer's certificate chain, leaf first, DER.
	Certificates [][]byte `json:"certificates"`
	// Signature is over signedDigest(meta, snapshot SHA-256): ECDSA or
	// RSA PKCS #1 v1.5 with SHA-256 of that digest, or Ed25519 of it.
	Signature []byte `json:"signature"`

	// Set by ReadArchive: what the signature must cover.
	metaJSON []byte
	snapSum  [32]byte
}

// signedDigest is what a backup signature covers: the metadata exactly as
// the archive holds it and the SHA-256 of the snapshot section.
func signedDigest(metaJSON []byte, snapSum [32]byte) []byte {
	h := sha256.New()
	h.Write([]byte("fileshare backup signature v1\x00"))
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(metaJSON)))
	h.Write(n[:])
	h.Write(metaJSON)
	h.Write(snapSum[:])
	return h.Sum(nil)
}

// signBackup signs a backup with cert's key.
func signBackup(cert *tls.Certificate, meta ArchiveMeta, snapSum [32]byte) (*ArchiveSignature, error) {
	mj, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("the master's key (%T) cannot sign", cert.PrivateKey)
	}
	msg := signedDigest(mj, snapSum)
	var sig []byte
	switch signer.Public().(type) {
	case ed25519.PublicKey:
		sig, err = signer.Sign(rand.Reader, msg, crypto.Hash(0))
	case *ecdsa.PublicKey, *rsa.PublicKey:
		d := sha256.Sum256(msg)
		sig, err = signer.Sign(rand.Reader, d[:], crypto.SHA256)
	default:
		return nil, fmt.Errorf("the master's key (%T) is of no kind backups are signed with", signer.Public())
	}
	if err != nil {
		return nil, fmt.Errorf("sign the backup: %w", err)
	}
	return &ArchiveSignature{Certificates: slices.Clone(cert.Certificate), Signature: sig}, nil
}

// Errors of backup signatures.
var (
	// ErrUnsignedArchive means a backup holds no signature where one is
	// required (restoring on a TLS master).
	ErrUnsignedArchive = errors.New("the backup is not signed")
	// ErrBadSignature means a backup's signature does not verify: it was
	// not made by a master of the cluster whose CA is trusted, or the
	// file was changed after it was signed.
	ErrBadSignature = errors.New("the backup's signature does not verify")
)

// Verify checks the signature of an archive ReadArchive returned against
// the cluster CA in ca: the chain must verify to it and name a master
// (the leader the metadata names), and the signature must cover this
// archive's metadata and snapshot. It returns the signing master's ID.
// A nil sig is ErrUnsignedArchive; any failure wraps ErrBadSignature.
func (sig *ArchiveSignature) Verify(ca *transport.TLS, meta ArchiveMeta) (string, error) {
	if sig == nil {
		return "", fmt.Errorf("%w: it was made on a cluster without TLS or by an older fileshare, so nothing shows who made it", ErrUnsignedArchive)
	}
	if !ca.HasCA() {
		return "", fmt.Errorf("%w: no cluster CA to check it against", ErrBadSignature)
	}
	var chain []*x509.Certificate
	for _, der := range sig.Certificates {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return "", fmt.Errorf("%w: a certificate in it does not parse: %v", ErrBadSignature, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return "", fmt.Errorf("%w: it carries no certificate", ErrBadSignature)
	}
	who := ca.Classify(chain)
	if who.Role != transport.RoleMaster {
		return "", fmt.Errorf("%w: its certificate is not a master certificate from the trusted cluster CA", ErrBadSignature)
	}
	if who.Name != meta.LeaderID {
		return "", fmt.Errorf("%w: signed by master %s, but the metadata names leader %s", ErrBadSignature, quoteText(who.Name), quoteText(meta.LeaderID))
	}
	msg := signedDigest(sig.metaJSON, sig.snapSum)
	var alg x509.SignatureAlgorithm
	switch chain[0].PublicKey.(type) {
	case ed25519.PublicKey:
		alg = x509.PureEd25519
	case *ecdsa.PublicKey:
		alg = x509.ECDSAWithSHA256
	case *rsa.PublicKey:
		alg = x509.SHA256WithRSA
	default:
		return "", fmt.Errorf("%w: the signer's key is of an unknown kind", ErrBadSignature)
	}
	if err := chain[0].CheckSignature(alg, msg, sig.Signature); err != nil {
		return "", fmt.Errorf("%w: the file was changed after master %s signed it (%v)", ErrBadSignature, who.Name, err)
	}
	return who.Name, nil
}

// signedSnapshot is what a snapshot stream that the leader signed offers
// (client.BackupStream): the signature and certificate chain, once the
// stream has ended.
type signedSnapshot interface {
	BackupSignature() (signature []byte, certificates [][]byte)
}

// WriteSignedArchive is WriteArchive signing the archive itself with
// cert's key (a master certificate's, for a backup a master makes of its
// own snapshot) instead of taking the snapshot stream's signature.
func WriteSignedArchive(w io.Writer, meta ArchiveMeta, snapshot io.Reader, cert *tls.Certificate) ([32]byte, error) {
	return writeArchive(w, meta, snapshot, func(meta ArchiveMeta, snapSum [32]byte) (*ArchiveSignature, error) {
		return signBackup(cert, meta, snapSum)
	})
}

// ReadSignedArchive is ReadArchive that also returns the archive's
// signature (nil if it has none), ready for ArchiveSignature.Verify.
func ReadSignedArchive(r io.Reader, snapshot io.Writer) (ArchiveMeta, [32]byte, *ArchiveSignature, error) {
	var meta ArchiveMeta
	var sum [32]byte
	h := sha256.New()
	br := bufio.NewReaderSize(r, 256<<10)
	tr := io.TeeReader(br, h)
	var hdr [16]byte
	if n, err := io.ReadFull(tr, hdr[:]); err != nil {
		if n >= len(archiveMagic) && string(hdr[:len(archiveMagic)]) == archiveMagic || n == 0 {
			return meta, sum, nil, fmt.Errorf("%w: the file ends inside its %d-byte header (after %d bytes)", ErrBadArchive, len(hdr), n)
		}
		return meta, sum, nil, fmt.Errorf("%w: it does not start with %q (is it a backup made by 'fileshare cluster backup'?)", ErrBadArchive, archiveMagic)
	}
	if string(hdr[:8]) != archiveMagic {
		return meta, sum, nil, fmt.Errorf("%w: it does not start with %q (is it a backup made by 'fileshare cluster backup'?)", ErrBadArchive, archiveMagic)
	}
	version := binary.BigEndian.Uint32(hdr[8:12])
	if version != 1 && version != ArchiveVersion {
		return meta, sum, nil, fmt.Errorf("%w: archive format version %d; this fileshare reads only versions 1 and %d (use the fileshare release that made it)", ErrBadArchive, version, ArchiveVersion)
	}
	metaLen := binary.BigEndian.Uint32(hdr[12:16])
	if metaLen < 2 || metaLen > MaxArchiveMetaSize {
		return meta, sum, nil, fmt.Errorf("%w: metadata length %d is outside 2..%d", ErrBadArchive, metaLen, MaxArchiveMetaSize)
	}
	mj := make([]byte, metaLen)
	if _, err := io.ReadFull(tr, mj); err != nil {
		return meta, sum, nil, fmt.Errorf("%w: the file ends inside its %d-byte metadata", ErrBadArchive, metaLen)
	}
	dec := json.NewDecoder(bytes.NewReader(mj))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&meta); err != nil {
		return meta, sum, nil, fmt.Errorf("%w: metadata is not valid: %v", ErrBadArchive, err)
	}
	if dec.More() {
		return meta, sum, nil, fmt.Errorf("%w: metadata holds more than one JSON value", ErrBadArchive)
	}
	if err := meta.check(); err != nil {
		return meta, sum, nil, fmt.Errorf("%w: %v", ErrBadArchive, err)
	}
	hs := sha256.New()
	n, err := io.Copy(io.MultiWriter(snapshot, hs), io.LimitReader(tr, meta.SnapshotSize))
	if err != nil {
		return meta, sum, nil, fmt.Errorf("read the archive's snapshot: %w", err)
	}
	if n != meta.SnapshotSize {
		return meta, sum, nil, fmt.Errorf("%w: the file is truncated: its snapshot ends after %d of %d bytes", ErrBadArchive, n, meta.SnapshotSize)
	}
	var sig *ArchiveSignature
	if version >= 2 {
		var l [4]byte
		if _, err := io.ReadFull(tr, l[:]); err != nil {
			return meta, sum, nil, fmt.Errorf("%w: the file is truncated: it ends before its signature section", ErrBadArchive)
		}
		sigLen := binary.BigEndian.Uint32(l[:])
		if sigLen > MaxArchiveSigSize {
			return meta, sum, nil, fmt.Errorf("%w: signature length %d is over %d", ErrBadArchive, sigLen, MaxArchiveSigSize)
		}
		if sigLen > 0 {
			sj := make([]byte, sigLen)
			if _, err := io.ReadFull(tr, sj); err != nil {
				return meta, sum, nil, fmt.Errorf("%w: the file ends inside its %d-byte signature", ErrBadArchive, sigLen)
			}
			sig = &ArchiveSignature{}
			sdec := json.NewDecoder(bytes.NewReader(sj))
			sdec.DisallowUnknownFields()
			if err := sdec.Decode(sig); err != nil || sdec.More() {
				return meta, sum, nil, fmt.Errorf("%w: the signature section is not valid: %v", ErrBadArchive, err)
			}
			sig.metaJSON, sig.snapSum = mj, [32]byte(hs.Sum(nil))
		}
	}
	copy(sum[:], h.Sum(nil))
	var got [32]byte
	if k, err := io.ReadFull(br, got[:]); err != nil {
		return meta, sum, nil, fmt.Errorf("%w: the file is truncated: %d of the 32 checksum bytes are present", ErrBadArchive, k)
	}
	if got != sum {
		return meta, sum, nil, fmt.Errorf("%w: checksum mismatch (the file says %x, its contents hash to %x): the file is damaged; use another copy", ErrBadArchive, got[:8], sum[:8])
	}
	if k, _ := br.Read(make([]byte, 1)); k > 0 {
		return meta, sum, nil, fmt.Errorf("%w: bytes follow the checksum", ErrBadArchive)
	}
	return meta, sum, sig, nil
}
