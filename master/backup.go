package master

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"fileshare/client"
	"fileshare/fsm"
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
