package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"fileshare/transport"
)

// Backup methods. A backup is a chunked download of one Raft snapshot of
// the leader's index, so that an index of any size crosses the 8 MiB RPC
// frame cap and the leader holds at most one chunk per backup in memory:
//
//  1. BackupOpen (admin, leader only) makes the leader take a snapshot
//     after a Barrier, so the snapshot holds every write acknowledged
//     before the call, opens it and returns a session and its metadata.
//  2. BackupRead returns up to BackupChunkSize bytes at Offset, which must
//     be the end of the previous chunk (or its start again, to retry a
//     lost reply). The last chunk has EOF set and the SHA-256 of every
//     byte the leader read, which the client checks, and, on a TLS
//     cluster, the leader's signature over the backup's metadata and that
//     SHA-256 with the certificate chain of its master certificate (see
//     master.ArchiveSignature), which the archive keeps.
//  3. BackupClose releases the session; one left idle for
//     BackupSessionIdle is released by the leader on its own.
const (
	MethodBackupOpen  = "Cluster.BackupOpen"
	MethodBackupRead  = "Cluster.BackupRead"
	MethodBackupClose = "Cluster.BackupClose"
)

// BackupChunkSize is the most snapshot bytes one BackupRead reply carries:
// well under transport.MaxFrameSize with the reply's framing.
const BackupChunkSize = 4 << 20

// BackupSessionIdle is how long a backup session may go without a read
// before the leader releases it.
const BackupSessionIdle = time.Minute

// Backup errors, testable across RPC.
var (
	// ErrBackupSession means a BackupRead or BackupClose named a session
	// the master does not hold (never opened there, closed, or released
	// after BackupSessionIdle, or the master restarted): start the backup
	// again.
	ErrBackupSession = transport.NewError("backup_session", "no such backup session on this master (closed, idle too long, or the master restarted); start the backup again")
	// ErrBackupOffset means a BackupRead asked for an offset other than
	// the next chunk or a retry of the last one.
	ErrBackupOffset = transport.NewError("backup_offset", "backup chunks must be read in order")
	// ErrBackupBusy means the leader already serves as many backups as it
	// allows at once (MaxBackupSessions).
	ErrBackupBusy = transport.NewError("backup_busy", "too many backups are running on the leader; wait for one to finish")
	// ErrBackupCorrupt means the bytes a backup received do not match what
	// the leader sent (length or SHA-256).
	ErrBackupCorrupt = errors.New("the backup stream was damaged in transit")
)

// BackupOpenAttemptTimeout bounds one attempt of BackupOpen at least:
// it waits for a snapshot of the whole index.
const BackupOpenAttemptTimeout = 2 * time.Minute

// MaxBackupSessions bounds the backups one master serves at once.
const MaxBackupSessions = 2

// BackupMember is one voter of the configuration a backup's snapshot was
// taken in.
type BackupMember struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

// BackupOpenRequest starts a backup at the leader.
type BackupOpenRequest struct{}

// BackupInfo describes the snapshot a backup session streams.
type BackupInfo struct {
	Session    string         // names the session in BackupRead/BackupClose
	Index      uint64         // last Raft log index the snapshot covers
	Term       uint64         // Raft term of that entry
	Size       int64          // bytes of the FSM snapshot
	TimeUnixNs int64          // when the leader took the snapshot
	Version    string         // the leader's fileshare version
	LeaderID   string         // the master that took the snapshot
	LeaderAddr string         // its cluster address: BackupRead goes there
	Members    []BackupMember // the configuration at Index
}

// BackupReadRequest asks for the chunk at Offset of a session.
type BackupReadRequest struct {
	Session string
	Offset  int64
}

// BackupReadReply is one chunk. SHA256 is set with EOF, and so are
// Signature and Certificates when the leader has a certificate.
type BackupReadReply struct {
	Data   []byte
	EOF    bool
	SHA256 []byte `codec:",omitempty"`
	// Signature is the leader's signature over the backup (see
	// master.ArchiveSignature); Certificates is its certificate chain,
	// leaf first, DER.
	Signature    []byte   `codec:",omitempty"`
	Certificates [][]byte `codec:",omitempty"`
}

// BackupCloseRequest releases a session.
type BackupCloseRequest struct {
	Session string
}

// BackupStream reads one backup's snapshot bytes from the leader, chunk by
// chunk. Read returns io.EOF only after the length and SHA-256 the leader
// reported have been checked; a mismatch is ErrBackupCorrupt. Not safe for
// concurrent use. Close it to release the leader's session.
type BackupStream struct {
	Info BackupInfo

	c      *Client
	ctx    context.Context
	offset int64
	buf    []byte // the unread part of chunk
	chunk  []byte // the last chunk received; reused for the next
	eof    bool
	sum    hash.Hash
	want   []byte // the SHA-256 the leader sent with EOF
	err    error

	signature    []byte   // sent with EOF, if the leader signs
	certificates [][]byte // the signer's chain, leaf first
}

// BackupSignature returns the leader's signature over the backup and its
// certificate chain (leaf first, DER), both nil if the leader sent none
// (a cluster without TLS). Valid once Read has returned io.EOF.
func (s *BackupStream) BackupSignature() (signature []byte, certificates [][]byte) {
	return s.signature, s.certificates
}

// OpenBackup starts a backup at the cluster's leader (following leader
// hints like any call) and returns the stream of its snapshot. ctx bounds
// the whole backup, including every later Read. Needs an admin or master
// certificate on a TLS cluster.
func (c *Client) OpenBackup(ctx context.Context) (*BackupStream, error) {
	var info BackupInfo
	// Opening takes a snapshot of the whole index, which may take far
	// longer than an ordinary call; an attempt cut short would leave the
	// leader a session nobody reads (until BackupSessionIdle).
	if err := c.call(ctx, max(c.cfg.AttemptTimeout, BackupOpenAttemptTimeout), MethodBackupOpen, &BackupOpenRequest{}, &info); err != nil {
		return nil, err
	}
	if info.Session == "" || info.LeaderAddr == "" || info.Size < 0 {
		return nil, fmt.Errorf("%w: the leader's backup reply names no session", ErrBackupCorrupt)
	}
	return &BackupStream{Info: info, c: c, ctx: ctx, sum: sha256.New()}, nil
}

// backupReadAttempts bounds the tries of one chunk: a lost reply is retried
// at the same offset, which the leader serves again from its last chunk.
const backupReadAttempts = 4

// Read implements io.Reader.
func (s *BackupStream) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.eof {
			s.err = s.finish()
			continue
		}
		s.err = s.fetch()
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

func (s *BackupStream) fetch() error {
	var out BackupReadReply
	var err error
	for attempt := range backupReadAttempts {
		if attempt > 0 {
			select {
			case <-s.ctx.Done():
				return fmt.Errorf("backup stopped at byte %d of %d: %w (last error: %v)", s.offset, s.Info.Size, s.ctx.Err(), err)
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
		}
		// Decode into the previous chunk's buffer (drained by now), so a
		// backup allocates one chunk buffer instead of one per chunk.
		out = BackupReadReply{Data: s.chunk[:0]}
		actx, cancel := context.WithTimeout(s.ctx, s.c.cfg.AttemptTimeout)
		err = s.c.CallAt(actx, s.Info.LeaderAddr, MethodBackupRead, &BackupReadRequest{Session: s.Info.Session, Offset: s.offset}, &out)
		cancel()
		if err == nil || !transport.Retryable(err) || s.ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("read backup chunk at byte %d of %d from %s: %w", s.offset, s.Info.Size, s.Info.LeaderAddr, err)
	}
	if s.offset+int64(len(out.Data)) > s.Info.Size {
		return fmt.Errorf("%w: the leader sent more than the %d bytes it announced", ErrBackupCorrupt, s.Info.Size)
	}
	if len(out.Data) == 0 && !out.EOF {
		return fmt.Errorf("%w: the leader sent an empty chunk at byte %d", ErrBackupCorrupt, s.offset)
	}
	s.sum.Write(out.Data)
	s.offset += int64(len(out.Data))
	s.buf, s.eof, s.chunk = out.Data, out.EOF, out.Data
	if out.EOF {
		s.want = out.SHA256
		s.signature, s.certificates = out.Signature, out.Certificates
	}
	return nil
}

func (s *BackupStream) finish() error {
	if s.offset != s.Info.Size {
		return fmt.Errorf("%w: got %d bytes, the leader announced %d", ErrBackupCorrupt, s.offset, s.Info.Size)
	}
	if got := s.sum.Sum(nil); !bytes.Equal(got, s.want) {
		return fmt.Errorf("%w: SHA-256 of the received snapshot is %x, the leader sent %x", ErrBackupCorrupt, got, s.want)
	}
	return io.EOF
}

// Close releases the leader's session (best effort: a session nobody
// closes is released after BackupSessionIdle). Safe to call more than once.
func (s *BackupStream) Close() error {
	if s.c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 2*time.Second)
	defer cancel()
	err := s.c.CallAt(ctx, s.Info.LeaderAddr, MethodBackupClose, &BackupCloseRequest{Session: s.Info.Session}, nil)
	s.c = nil
	if errors.Is(err, ErrBackupSession) {
		return nil // already released
	}
	return err
}
