package master

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/transport"
)

// Backup archive format, version 1. A backup file ('fileshare cluster
// backup') is:
//
//	magic     8 bytes  "FSBACKUP"
//	version   4 bytes  big-endian uint32, ArchiveVersion
//	metaLen   4 bytes  big-endian uint32, 2 ≤ metaLen ≤ MaxArchiveMetaSize
//	meta      metaLen bytes of JSON, an ArchiveMeta
//	snapshot  meta.snapshot_size bytes: the FSM snapshot exactly as raft's
//	          snapshot store holds it (fsm's own format, "FSHRSNAP" …, with
//	          its own seal)
//	checksum  32 bytes: SHA-256 of every byte above, magic to snapshot
//
// Nothing may follow the checksum. ReadArchive accepts exactly this and
// nothing else: a wrong magic, an unknown version, metadata that is not
// one JSON object of known fields, a snapshot shorter than announced, a
// checksum that does not match, or trailing bytes are each an error
// wrapping ErrBadArchive that names what is wrong.
const (
	archiveMagic = "FSBACKUP"
	// ArchiveVersion is the archive format version WriteArchive writes and
	// the only one ReadArchive accepts.
	ArchiveVersion = 1
	// MaxArchiveMetaSize caps the metadata section.
	MaxArchiveMetaSize = 1 << 20
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
// meta.SnapshotSize bytes read from snapshot, and the checksum. It
// returns the checksum. It fails, without writing the checksum, if
// snapshot holds fewer or more bytes than meta.SnapshotSize or returns an
// error (for a client.BackupStream: ErrBackupCorrupt if the bytes differ
// from what the leader sent).
func WriteArchive(w io.Writer, meta ArchiveMeta, snapshot io.Reader) ([32]byte, error) {
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
	n, err := io.Copy(hw, io.LimitReader(snapshot, meta.SnapshotSize))
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
// the metadata and a buffer in memory.
func ReadArchive(r io.Reader, snapshot io.Writer) (ArchiveMeta, [32]byte, error) {
	var meta ArchiveMeta
	var sum [32]byte
	h := sha256.New()
	br := bufio.NewReaderSize(r, 256<<10)
	tr := io.TeeReader(br, h)
	var hdr [16]byte
	if n, err := io.ReadFull(tr, hdr[:]); err != nil {
		if n >= len(archiveMagic) && string(hdr[:len(archiveMagic)]) == archiveMagic || n == 0 {
			return meta, sum, fmt.Errorf("%w: the file ends inside its %d-byte header (after %d bytes)", ErrBadArchive, len(hdr), n)
		}
		return meta, sum, fmt.Errorf("%w: it does not start with %q (is it a backup made by 'fileshare cluster backup'?)", ErrBadArchive, archiveMagic)
	}
	if string(hdr[:8]) != archiveMagic {
		return meta, sum, fmt.Errorf("%w: it does not start with %q (is it a backup made by 'fileshare cluster backup'?)", ErrBadArchive, archiveMagic)
	}
	if v := binary.BigEndian.Uint32(hdr[8:12]); v != ArchiveVersion {
		return meta, sum, fmt.Errorf("%w: archive format version %d; this fileshare reads only version %d (use the fileshare release that made it)", ErrBadArchive, v, ArchiveVersion)
	}
	metaLen := binary.BigEndian.Uint32(hdr[12:16])
	if metaLen < 2 || metaLen > MaxArchiveMetaSize {
		return meta, sum, fmt.Errorf("%w: metadata length %d is outside 2..%d", ErrBadArchive, metaLen, MaxArchiveMetaSize)
	}
	mj := make([]byte, metaLen)
	if _, err := io.ReadFull(tr, mj); err != nil {
		return meta, sum, fmt.Errorf("%w: the file ends inside its %d-byte metadata", ErrBadArchive, metaLen)
	}
	dec := json.NewDecoder(bytes.NewReader(mj))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&meta); err != nil {
		return meta, sum, fmt.Errorf("%w: metadata is not valid: %v", ErrBadArchive, err)
	}
	if dec.More() {
		return meta, sum, fmt.Errorf("%w: metadata holds more than one JSON value", ErrBadArchive)
	}
	if meta.SnapshotSize < 0 {
		return meta, sum, fmt.Errorf("%w: metadata gives a negative snapshot size %d", ErrBadArchive, meta.SnapshotSize)
	}
	if meta.RaftIndex == 0 || meta.RaftTerm == 0 {
		return meta, sum, fmt.Errorf("%w: metadata gives raft index %d and term %d; both must be positive", ErrBadArchive, meta.RaftIndex, meta.RaftTerm)
	}
	n, err := io.Copy(snapshot, io.LimitReader(tr, meta.SnapshotSize))
	if err != nil {
		return meta, sum, fmt.Errorf("read the archive's snapshot: %w", err)
	}
	if n != meta.SnapshotSize {
		return meta, sum, fmt.Errorf("%w: the file is truncated: its snapshot ends after %d of %d bytes", ErrBadArchive, n, meta.SnapshotSize)
	}
	copy(sum[:], h.Sum(nil))
	var got [32]byte
	if k, err := io.ReadFull(br, got[:]); err != nil {
		return meta, sum, fmt.Errorf("%w: the file is truncated: %d of the 32 checksum bytes are present", ErrBadArchive, k)
	}
	if got != sum {
		return meta, sum, fmt.Errorf("%w: checksum mismatch (the file says %x, its contents hash to %x): the file is damaged; use another copy", ErrBadArchive, got[:8], sum[:8])
	}
	if k, _ := br.Read(make([]byte, 1)); k > 0 {
		return meta, sum, fmt.Errorf("%w: bytes follow the checksum", ErrBadArchive)
	}
	return meta, sum, nil
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
		m.logger.Info("backup sent", "session", req.Session, "bytes", s.size)
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
		return meta, fmt.Errorf("create the backup file: %w; choose an --out in a directory this user can write", err)
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
	meta, sum, err := ReadArchive(r, pw)
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
	out.Meta, out.SHA256 = meta, sum
	out.AppliedIndex, out.Counts, out.Digest = f.AppliedIndex(), f.Counts(), f.Digest()
	return out, nil
}
