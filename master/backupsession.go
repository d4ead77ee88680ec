package master

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/client"
	"fileshare/transport"
)

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
