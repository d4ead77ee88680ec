package master

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/raft"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/transport"
)

// Backup archive format, version 2. A backup file ('fileshare cluster
// backup') is:
//
//	magic     8 bytes  "FSBACKUP"
//	version   4 bytes  big-endian uint32, ArchiveVersion
//	metaLen   4 bytes  big-endian uint32, 2 ≤ metaLen ≤ MaxArchiveMetaSize
//	meta      metaLen bytes of JSON, an ArchiveMeta
//	snapshot  meta.snapshot_size bytes: the FSM snapshot exactly as raft's
//	          snapshot store holds it (fsm's own format, "FSHRSNAP" …, with
//	          its own seal)
//	sigLen    4 bytes  big-endian uint32, 0 ≤ sigLen ≤ MaxArchiveSigSize
//	sig       sigLen bytes of JSON, an ArchiveSignature; none (sigLen 0)
//	          for a backup of a cluster without TLS
//	checksum  32 bytes: SHA-256 of every byte above, magic to sig
//
// Version 1 is the same without sigLen and sig; ReadArchive still reads
// it, as unsigned. Nothing may follow the checksum. ReadArchive accepts
// exactly this and nothing else: a wrong magic, an unknown version,
// metadata that is not one JSON object of known fields (or that names
// masters with impossible IDs, holds control characters, or gives a raft
// index or term above MaxArchiveIndex), a snapshot shorter than
// announced, a checksum that does not match, or trailing bytes are each
// an error wrapping ErrBadArchive that names what is wrong.
//
// What each check proves. The checksum proves only that the file is as
// it was written: anyone can recompute it after changing the file. The
// signature proves that a master holding a certificate from the cluster
// CA (the leader that took the snapshot) produced the metadata and the
// snapshot; ArchiveSignature.Verify checks it against the CA, and
// restoring on a TLS master requires it.
const (
	archiveMagic = "FSBACKUP"
	// ArchiveVersion is the archive format version WriteArchive writes.
	// ReadArchive reads it and version 1 (unsigned).
	ArchiveVersion = 2
	// MaxArchiveMetaSize caps the metadata section.
	MaxArchiveMetaSize = 1 << 20
	// MaxArchiveSigSize caps the signature section.
	MaxArchiveSigSize = 64 << 10
	// MaxArchiveIndex bounds the raft index and term an archive may give.
	// A cluster committing a million entries a second takes 146,000 years
	// to get there; above it, a restored cluster could overflow its index
	// or term and never elect a ready leader.
	MaxArchiveIndex = 1 << 62
)

// ArchiveMeta is the metadata section of a backup archive.
type ArchiveMeta struct {
	// RaftIndex and RaftTerm are the last log entry the snapshot covers.
	RaftIndex uint64 `json:"raft_index"`
	RaftTerm  uint64 `json:"raft_term"`
	// Time is when the leader took the snapshot.
	Time time.Time `json:"time"`
	// Version is the leader's fileshare version.
	Version string `json:"fileshare_version"`
	// SnapshotSize is the length of the snapshot section in bytes.
	SnapshotSize int64 `json:"snapshot_size"`
	// LeaderID and LeaderAddr name the master that took the snapshot.
	LeaderID   string `json:"leader_id"`
	LeaderAddr string `json:"leader_addr"`
	// Members is the cluster's configuration at RaftIndex (informational:
	// a restore takes the new membership from --initial-cluster).
	Members []client.BackupMember `json:"members"`
}

// check refuses metadata no master writes: a zero or impossible index or
// term, a negative size, IDs a master cannot have, or text holding
// control characters (which a terminal would run).
func (meta ArchiveMeta) check() error {
	if meta.SnapshotSize < 0 {
		return fmt.Errorf("metadata gives a negative snapshot size %d", meta.SnapshotSize)
	}
	if meta.RaftIndex == 0 || meta.RaftTerm == 0 {
		return fmt.Errorf("metadata gives raft index %d and term %d; both must be positive", meta.RaftIndex, meta.RaftTerm)
	}
	if meta.RaftIndex > MaxArchiveIndex || meta.RaftTerm > MaxArchiveIndex {
		return fmt.Errorf("metadata gives raft index %d and term %d; no cluster gets past %d, so the file was made by hand", meta.RaftIndex, meta.RaftTerm, uint64(MaxArchiveIndex))
	}
	if err := validID(meta.LeaderID); err != nil {
		return fmt.Errorf("metadata names leader %s: %v", quoteText(meta.LeaderID), err)
	}
	texts := []string{meta.Version, meta.LeaderAddr}
	for _, m := range meta.Members {
		if err := validID(m.ID); err != nil {
			return fmt.Errorf("metadata names member %s: %v", quoteText(m.ID), err)
		}
		texts = append(texts, m.Addr)
	}
	for _, t := range texts {
		if !printableText(t) {
			return fmt.Errorf("metadata holds control characters or invalid UTF-8: %s", quoteText(t))
		}
	}
	return nil
}

// printableText reports whether s is valid UTF-8 of graphic characters
// and spaces only (no escape sequences a terminal would act on).
func printableText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsGraphic(r) {
			return false
		}
	}
	return true
}

// quoteText quotes s for an error message, escaping anything not
// printable.
func quoteText(s string) string { return strconv.QuoteToGraphic(s) }

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

// Errors of the backup archive.
var (
	// ErrBadArchive wraps every reason a file is not an intact backup
	// archive; the message names which.
	ErrBadArchive = errors.New("not an intact fileshare backup archive")
)

// ArchiveMetaFromInfo turns what BackupOpen reported into the archive's
// metadata.
func ArchiveMetaFromInfo(info client.BackupInfo) ArchiveMeta {
	return ArchiveMeta{
		RaftIndex: info.Index, RaftTerm: info.Term, Time: time.Unix(0, info.TimeUnixNs).UTC(),
		Version: info.Version, SnapshotSize: info.Size, LeaderID: info.LeaderID, LeaderAddr: info.LeaderAddr,
		Members: append([]client.BackupMember(nil), info.Members...),
	}
}

// signedSnapshot is what a snapshot stream that the leader signed offers
// (client.BackupStream): the signature and certificate chain, once the
// stream has ended.
type signedSnapshot interface {
	BackupSignature() (signature []byte, certificates [][]byte)
}

// WriteArchive writes a complete archive to w: the header for meta, the
// meta.SnapshotSize bytes read from snapshot, the signature if snapshot
// offers one (a client.BackupStream from a TLS cluster's leader), and the
// checksum. It returns the checksum. It fails, without writing the
// checksum, if snapshot holds fewer or more bytes than meta.SnapshotSize
// or returns an error (for a client.BackupStream: ErrBackupCorrupt if the
// bytes differ from what the leader sent).
func WriteArchive(w io.Writer, meta ArchiveMeta, snapshot io.Reader) ([32]byte, error) {
	return writeArchive(w, meta, snapshot, nil)
}

// WriteSignedArchive is WriteArchive signing the archive itself with
// cert's key (a master certificate's, for a backup a master makes of its
// own snapshot) instead of taking the snapshot stream's signature.
func WriteSignedArchive(w io.Writer, meta ArchiveMeta, snapshot io.Reader, cert *tls.Certificate) ([32]byte, error) {
	return writeArchive(w, meta, snapshot, func(meta ArchiveMeta, snapSum [32]byte) (*ArchiveSignature, error) {
		return signBackup(cert, meta, snapSum)
	})
}

// writeArchive is WriteArchive; sign, if not nil, signs in place of the
// snapshot stream's own signature.
func writeArchive(w io.Writer, meta ArchiveMeta, snapshot io.Reader, sign func(ArchiveMeta, [32]byte) (*ArchiveSignature, error)) ([32]byte, error) {
	var sum [32]byte
	if meta.SnapshotSize < 0 {
		return sum, fmt.Errorf("%w: negative snapshot size %d", ErrBadArchive, meta.SnapshotSize)
	}
	mj, err := json.Marshal(meta)
	if err != nil {
		return sum, err
	}
	if len(mj) > MaxArchiveMetaSize {
		return sum, fmt.Errorf("%w: metadata of %d bytes is over %d", ErrBadArchive, len(mj), MaxArchiveMetaSize)
	}
	h := sha256.New()
	hw := io.MultiWriter(w, h)
	hdr := make([]byte, 0, 16)
	hdr = append(hdr, archiveMagic...)
	hdr = binary.BigEndian.AppendUint32(hdr, ArchiveVersion)
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(mj)))
	if _, err := hw.Write(hdr); err != nil {
		return sum, err
	}
	if _, err := hw.Write(mj); err != nil {
		return sum, err
	}
	hs := sha256.New()
	n, err := io.Copy(io.MultiWriter(hw, hs), io.LimitReader(snapshot, meta.SnapshotSize))
	if err != nil {
		return sum, fmt.Errorf("copy snapshot into the archive: %w", err)
	}
	if n != meta.SnapshotSize {
		return sum, fmt.Errorf("the snapshot ended after %d of %d bytes", n, meta.SnapshotSize)
	}
	// The stream must end exactly here (a BackupStream checks its
	// length and SHA-256 when it reports EOF).
	var one [1]byte
	if k, err := io.ReadFull(snapshot, one[:]); k > 0 {
		return sum, fmt.Errorf("the snapshot is longer than the %d bytes announced", meta.SnapshotSize)
	} else if err != io.EOF && err != io.ErrUnexpectedEOF {
		return sum, fmt.Errorf("finish the snapshot: %w", err)
	}
	var sig *ArchiveSignature
	switch {
	case sign != nil:
		if sig, err = sign(meta, [32]byte(hs.Sum(nil))); err != nil {
			return sum, err
		}
	default:
		if ss, ok := snapshot.(signedSnapshot); ok {
			if b, certs := ss.BackupSignature(); len(b) > 0 {
				sig = &ArchiveSignature{Signature: b, Certificates: certs}
			}
		}
	}
	var sj []byte
	if sig != nil {
		if sj, err = json.Marshal(sig); err != nil {
			return sum, err
		}
		if len(sj) > MaxArchiveSigSize {
			return sum, fmt.Errorf("%w: signature of %d bytes is over %d", ErrBadArchive, len(sj), MaxArchiveSigSize)
		}
	}
	if _, err := hw.Write(binary.BigEndian.AppendUint32(nil, uint32(len(sj)))); err != nil {
		return sum, err
	}
	if _, err := hw.Write(sj); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	if _, err := w.Write(sum[:]); err != nil {
		return sum, err
	}
	return sum, nil
}

// ReadArchive reads one archive from r, copies its snapshot section to
// snapshot as it goes, and verifies the checksum at the end. It returns
// the metadata and the checksum, or an error wrapping ErrBadArchive that
// names what is wrong (or the error of r or snapshot). snapshot has seen
// every snapshot byte before the checksum is checked: a caller that
// consumes them (a raft snapshot sink, an FSM restore) must discard its
// work when ReadArchive fails. It reads r in one pass and holds at most
// the metadata, the signature and a buffer in memory. It does not check
// the signature: see ReadSignedArchive.
func ReadArchive(r io.Reader, snapshot io.Writer) (ArchiveMeta, [32]byte, error) {
	meta, sum, _, err := ReadSignedArchive(r, snapshot)
	return meta, sum, err
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

// backupSession is one backup being read: an open raft snapshot and the
// last chunk sent, kept so a lost reply can be asked for again. Its mutex
// serializes reads.
type backupSession struct {
	mu       sync.Mutex
	rc       io.ReadCloser
	size     int64
	offset   int64  // bytes sent so far (the next chunk's offset)
	last     []byte // the last chunk sent, at offset-len(last)
	lastEOF  bool
	sum      hash.Hash
	lastUsed time.Time
	info     client.BackupInfo // what BackupOpen answered: the signed metadata
	sig      *ArchiveSignature // made at EOF, resent with a retried last chunk
}

// backups holds the backup sessions of one master. At most
// client.MaxBackupSessions run at once; run releases idle ones and, at
// shutdown, all. Safe for concurrent use.
type backups struct {
	mu       sync.Mutex
	sessions map[string]*backupSession
	closed   bool
}

func newBackups() *backups { return &backups{sessions: make(map[string]*backupSession)} }

// run releases sessions idle for client.BackupSessionIdle until ctx ends,
// then releases every session. Owned by the Master (m.wg).
func (b *backups) run(ctx context.Context) {
	t := time.NewTicker(client.BackupSessionIdle / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			b.mu.Lock()
			b.closed = true
			all := b.sessions
			b.sessions = nil
			b.mu.Unlock()
			for _, s := range all {
				s.rc.Close()
			}
			return
		case now := <-t.C:
			b.mu.Lock()
			for id, s := range b.sessions {
				if s.mu.TryLock() {
					if now.Sub(s.lastUsed) > client.BackupSessionIdle {
						s.rc.Close()
						delete(b.sessions, id)
					}
					s.mu.Unlock()
				}
			}
			b.mu.Unlock()
		}
	}
}

func (b *backups) add(s *backupSession) (string, error) {
	var id [16]byte
	_, _ = rand.Read(id[:])
	key := hex.EncodeToString(id[:])
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return "", transport.ErrShuttingDown
	}
	if len(b.sessions) >= client.MaxBackupSessions {
		return "", client.ErrBackupBusy
	}
	b.sessions[key] = s
	return key, nil
}

func (b *backups) get(id string) *backupSession {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sessions[id]
}

func (b *backups) remove(id string) *backupSession {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[id]
	delete(b.sessions, id)
	return s
}

// handleBackupOpen starts a backup here, at the leader: a Barrier makes
// the FSM hold every entry committed before the call (so every write
// acknowledged before it), then a user snapshot through raft's own
// machinery (fsm.Snapshot, then Persist into the snapshot store) captures
// it, and the session streams that snapshot file. Memory stays bounded:
// the session holds an open file and one chunk. A follower answers with
// the leader's address, which the client follows.
func (m *Master) handleBackupOpen(ctx context.Context, _ *client.BackupOpenRequest) (*client.BackupInfo, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	if !m.IsLeader() {
		return nil, m.notLeader()
	}
	if !m.leaderReady() {
		return nil, fmt.Errorf("%w: this master was just elected and is catching up", transport.ErrBusy)
	}
	timeout := m.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if err := m.raft.Barrier(timeout).Error(); err != nil {
		return nil, fmt.Errorf("backup barrier: %w", m.raftError(err))
	}
	f := m.raft.Snapshot()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("backup snapshot: %w", m.raftError(err))
	}
	meta, rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("open the backup snapshot: %w", err)
	}
	if ctx.Err() != nil {
		rc.Close() // the caller gave up while the snapshot was taken
		return nil, fmt.Errorf("%w: the snapshot took longer than the caller waited", transport.ErrTimeout)
	}
	now := m.cfg.Now()
	s := &backupSession{rc: rc, size: meta.Size, sum: sha256.New(), lastUsed: time.Now()}
	id, err := m.backups.add(s)
	if err != nil {
		rc.Close()
		return nil, err
	}
	info := &client.BackupInfo{
		Session: id, Index: meta.Index, Term: meta.Term, Size: meta.Size, TimeUnixNs: now.UnixNano(),
		Version: Version(), LeaderID: m.cfg.ID, LeaderAddr: m.advertise,
	}
	for _, srv := range meta.Configuration.Servers {
		if srv.Suffrage == raft.Voter {
			info.Members = append(info.Members, client.BackupMember{ID: string(srv.ID), Addr: string(srv.Address)})
		}
	}
	s.info = *info
	m.logger.Info("backup started", "session", id, "index", meta.Index, "term", meta.Term, "bytes", meta.Size)
	return info, nil
}

// handleBackupRead returns the chunk at req.Offset of a session: the next
// one, or the last one again if the client lost the reply.
func (m *Master) handleBackupRead(ctx context.Context, req *client.BackupReadRequest) (*client.BackupReadReply, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	s := m.backups.get(req.Session)
	if s == nil {
		return nil, client.ErrBackupSession
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastUsed = time.Now()
	reply := func(data []byte, eof bool) *client.BackupReadReply {
		out := &client.BackupReadReply{Data: data, EOF: eof}
		if eof {
			out.SHA256 = s.sum.Sum(nil)
			if s.sig != nil {
				out.Signature, out.Certificates = s.sig.Signature, s.sig.Certificates
			}
		}
		return out
	}
	switch {
	case req.Offset == s.offset-int64(len(s.last)) && (len(s.last) > 0 || s.lastEOF):
		return reply(s.last, s.lastEOF), nil // a retry of the last chunk
	case req.Offset != s.offset:
		return nil, fmt.Errorf("%w: asked for byte %d, the next chunk starts at byte %d", client.ErrBackupOffset, req.Offset, s.offset)
	}
	n := min(int64(client.BackupChunkSize), s.size-s.offset)
	buf := make([]byte, n)
	if _, err := io.ReadFull(s.rc, buf); err != nil {
		return nil, fmt.Errorf("read the backup snapshot at byte %d of %d: %w", s.offset, s.size, err)
	}
	s.sum.Write(buf)
	s.offset += n
	s.last, s.lastEOF = buf, s.offset == s.size
	if s.lastEOF {
		// Sign the backup with this master's certificate key, so that a
		// restore can tell it was made by a master of this cluster.
		if m.cfg.TLS.HasCertificate() {
			cert, err := m.cfg.TLS.Certificate()
			if err == nil {
				s.sig, err = signBackup(cert, ArchiveMetaFromInfo(s.info), [32]byte(s.sum.Sum(nil)))
			}
			if err != nil {
				return nil, fmt.Errorf("sign the backup: %w", err)
			}
		}
		m.logger.Info("backup sent", "session", req.Session, "bytes", s.size, "signed", s.sig != nil)
	}
	return reply(buf, s.lastEOF), nil
}

func (m *Master) handleBackupClose(ctx context.Context, req *client.BackupCloseRequest) (*client.Empty, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	s := m.backups.remove(req.Session)
	if s == nil {
		return nil, client.ErrBackupSession
	}
	s.mu.Lock()
	s.rc.Close()
	s.mu.Unlock()
	return &client.Empty{}, nil
}

// SaveBackup takes a backup of the cluster c reaches (at its leader) and
// writes it as an archive to path. It writes a temporary file beside
// path, syncs it, reads it back and verifies the whole archive
// (ReadArchive), and only then renames it to path, so path is either
// absent or a complete, verified archive. It needs admin credentials in c
// on a TLS cluster; ctx bounds the whole backup.
func SaveBackup(ctx context.Context, c *client.Client, path string) (ArchiveMeta, error) {
	stream, err := c.OpenBackup(ctx)
	if err != nil {
		return ArchiveMeta{}, fmt.Errorf("start the backup: %w", err)
	}
	defer stream.Close()
	meta := ArchiveMetaFromInfo(stream.Info)
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".partial-*")
	if err != nil {
		return meta, fmt.Errorf("create the backup file: %w; choose a file in a directory this user can write", err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	bw := bufio.NewWriterSize(tmp, 1<<20)
	sum, err := WriteArchive(bw, meta, stream)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		tmp.Close()
		return meta, fmt.Errorf("write the backup: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return meta, fmt.Errorf("sync the backup file: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		tmp.Close()
		return meta, err
	}
	_, got, err := ReadArchive(tmp, io.Discard)
	tmp.Close()
	if err != nil {
		return meta, fmt.Errorf("verify the backup file before keeping it: %w", err)
	}
	if got != sum {
		return meta, fmt.Errorf("%w: the file on disk does not hold what was written", ErrBadArchive)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return meta, fmt.Errorf("move the verified backup to %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // make the rename durable where the OS allows
		d.Close()
	}
	return meta, nil
}

// ArchiveContents is what InspectArchive finds in an archive.
type ArchiveContents struct {
	Meta   ArchiveMeta
	SHA256 [32]byte
	// AppliedIndex is the FSM's own applied index in the snapshot; it
	// equals Meta.RaftIndex or precedes it by entries the FSM never sees
	// (barriers, configuration changes).
	AppliedIndex uint64
	Counts       fsm.Counts
	// Digest is the restored index's fsm.Digest, comparable with the
	// digest a master's status reports.
	Digest string
	// Signature is the archive's signature, nil if it has none; check it
	// with Signature.Verify.
	Signature *ArchiveSignature
}

// InspectArchive verifies the archive read from r and restores its
// snapshot into an in-memory fsm.New() to count what it holds. It reads r
// once; the whole index is in memory while it runs. Errors wrap
// ErrBadArchive when the file is damaged, naming what is wrong.
func InspectArchive(r io.Reader) (ArchiveContents, error) {
	var out ArchiveContents
	pr, pw := io.Pipe()
	f := fsm.New()
	restored := make(chan error, 1)
	// Owned by InspectArchive, which waits for it: it ends once the pipe
	// closes, which ReadArchive's side does below in every case.
	go func() {
		err := f.Restore(pr)
		pr.CloseWithError(io.ErrClosedPipe) // unblock the writer if Restore stopped early
		restored <- err
	}()
	meta, sum, sig, err := ReadSignedArchive(r, pw)
	pw.CloseWithError(err)
	rerr := <-restored
	if err != nil {
		if errors.Is(err, io.ErrClosedPipe) && rerr != nil {
			return out, fmt.Errorf("%w: its snapshot does not restore: %v", ErrBadArchive, rerr)
		}
		if errors.Is(err, io.ErrClosedPipe) {
			return out, fmt.Errorf("%w: its snapshot section holds bytes after the index snapshot's end", ErrBadArchive)
		}
		return out, err
	}
	if rerr != nil {
		return out, fmt.Errorf("%w: the checksum matches but the snapshot does not restore (the backup was made from a damaged or incompatible index): %v", ErrBadArchive, rerr)
	}
	out.Meta, out.SHA256, out.Signature = meta, sum, sig
	if f.AppliedIndex() > meta.RaftIndex {
		return out, fmt.Errorf("%w: its snapshot has applied index %d, past the raft index %d its metadata gives", ErrBadArchive, f.AppliedIndex(), meta.RaftIndex)
	}
	out.AppliedIndex, out.Counts, out.Digest = f.AppliedIndex(), f.Counts(), f.Digest()
	return out, nil
}
