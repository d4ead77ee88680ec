package peer

// This file owns the holder's cheap "has this file changed?" test: a seal
// (device, inode, change time) taken when a file is hashed, and the proof
// of which pieces are known to match their hashes while the file keeps its
// seal. The sync goroutine creates seals and proofs during a scan; piece
// server goroutines read seals and read and extend proofs, which guard
// themselves.

import (
	"io/fs"
	"sync/atomic"
	"time"
)

// fileSeal identifies one state of a file's content: the kernel sets a
// file's change time (ctime) to the current time on every write, truncate,
// link or attribute change, and no system call lets a user set it back
// (utimensat sets mtime, never ctime). So while device, inode and ctime are
// what they were when the file was hashed, its bytes are the bytes that
// were hashed, up to the clock race stated at settled. The zero seal means
// "unknown" (another OS, a cache entry written by an older build) and never
// matches.
type fileSeal struct {
	Dev, Ino uint64
	Ctime    int64 // Unix nanoseconds
}

func (s fileSeal) known() bool { return s != fileSeal{} }

// settleAfter is how long after a file's last change its content may be
// trusted by seal: a write in the same tick of the kernel's coarse clock as
// the last change keeps the same ctime, so bytes read within that tick may
// not be the final ones. Linux stamps with a clock that advances every
// 1–10 ms on file systems of nanosecond granularity; coarseSettleAfter
// covers those that keep whole seconds (ext3, FAT), recognised by a ctime
// that is a whole second. Clock skew between an NFS server and this host is
// not covered: there the downloader's verification still catches a change.
const (
	fineSettleAfter   = 100 * time.Millisecond
	coarseSettleAfter = 2 * time.Second
)

// settled reports whether bytes read at time readAt (or later) from a file
// whose seal is s, still s after the read, are the bytes of that seal:
// readAt is far enough past the change time that any write after it would
// have moved the ctime.
func (s fileSeal) settled(readAt time.Time) bool {
	if !s.known() {
		return false
	}
	margin := fineSettleAfter
	if s.Ctime%int64(time.Second) == 0 {
		margin = coarseSettleAfter
	}
	return readAt.UnixNano()-s.Ctime > int64(margin)
}

// sealOf returns the seal of a file described by fi (from Stat on the open
// file), or the zero seal where the OS gives none.
func sealOf(fi fs.FileInfo) fileSeal { return sysSeal(fi) }

// pieceProof records which pieces of one sealed file are known to match
// their registered hashes, so the piece server hashes each at most once
// while the file keeps its seal instead of on every send. all is set when
// the scan hashed the whole file after it had settled. Safe for concurrent
// use.
type pieceProof struct {
	id   string // the file ID the proof is for
	seal fileSeal
	all  bool
	bits []atomic.Uint64
}

func newPieceProof(id string, seal fileSeal, pieces int, all bool) *pieceProof {
	return &pieceProof{id: id, seal: seal, all: all && seal.known(), bits: make([]atomic.Uint64, (pieces+63)/64)}
}

// proven reports whether piece i may be sent without hashing it, given the
// seal cur of the open file now: only if cur is the proof's seal.
func (p *pieceProof) proven(cur fileSeal, i int) bool {
	if p == nil || !p.seal.known() || cur != p.seal {
		return false
	}
	return p.all || p.bits[i/64].Load()&(1<<(i%64)) != 0
}

// prove records that piece i, read at readAt from the file while its seal
// was cur, matched its hash. It records nothing unless cur is the proof's
// seal and the read came after the file settled.
func (p *pieceProof) prove(cur fileSeal, i int, readAt time.Time) {
	if p == nil || cur != p.seal || !cur.settled(readAt) || p.all {
		return
	}
	p.bits[i/64].Or(1 << (i % 64))
}
