package peer

// This file owns a download's files on disk: the partial file DEST +
// PartialSuffix, written in place piece by piece, its checkpoints in DEST +
// ResumeSuffix (the format is in resume.go), and the final move to DEST.
// The coordinator (the goroutine running Peer.Download) opens, re-verifies,
// checkpoints, finishes and closes it, and alone touches lastSaved and
// lastKick; verifier goroutines only call writePiece, which holds writeMu.
// f is replaced or closed only while no worker runs.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// ErrPartialIsSymlink means a download's partial file or resume state is
// a symbolic link. A download never writes or reads through one: whoever
// could plant it in the download's directory could otherwise point the
// peer's writes at any file it may write.
var ErrPartialIsSymlink = errors.New("a download's partial file or resume state is a symbolic link")

// openNoFollow opens path without following a symbolic link in its last
// element, and names the refusal (openNoFollowFlag is the system's way).
func openNoFollow(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := openNoFollowFlag(path, flag, perm)
	if errors.Is(err, errIsSymlink) {
		return nil, fmt.Errorf("%w: %s; remove it and start the download again", ErrPartialIsSymlink, path)
	}
	return f, err
}

// readNoFollow reads the file at path without following a symbolic link.
func readNoFollow(path string) ([]byte, error) {
	f, err := openNoFollow(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// errWrite marks a local write failure (disk full…): fatal for the download.
var errWrite = errors.New("cannot write the partial file")

// partialFile is the on-disk state of one download.
type partialFile struct {
	id              string // the file ID, for logs
	dest            string
	path            string // dest + PartialSuffix
	statePath       string // dest + ResumeSuffix
	size, pieceSize int64
	logger          *slog.Logger

	f *os.File // nil once finished or discarded
	// writeAt writes to f; f.WriteAt but in tests that inject a failing
	// disk.
	writeAt func(b []byte, off int64) (int, error)

	// writeMu serialises the writes to the partial file. Writers to one
	// file queue on its inode lock anyway, and the kernel spins for it:
	// two verifier goroutines writing at once cost half as much CPU again
	// as one, for less throughput. Parked goroutines cost nothing.
	writeMu sync.Mutex

	lastSaved int   // pieces recorded by the last checkpoint (coordinator); -1: none recorded the current marks
	rewrote   bool  // openPartial replaced the state on disk with an empty one
	lastKick  int64 // verified bytes when writeback was last started (coordinator)
}

// openPartial opens (or creates) the partial file of dest, sized to the
// file, and returns it with the resume state found next to it if that
// state belongs to this file (root, size, piece size). A damaged state
// (failing its checksum or format) is replaced by one marking every piece,
// so that reverify salvages what hashes right; the state of another file is
// discarded, and a partial file with no usable state is emptied first.
// The returned state's marks are not yet verified: see reverify. A second
// download to the same dest, in this process or another, gets
// ErrDestinationExists.
func openPartial(dest string, root [32]byte, size, pieceSize int64, logger *slog.Logger) (_ *partialFile, _ *resumeState, err error) {
	pf := &partialFile{
		id: hex.EncodeToString(root[:]), dest: dest,
		path: dest + PartialSuffix, statePath: dest + ResumeSuffix,
		size: size, pieceSize: pieceSize, logger: logger,
	}
	f, err := openNoFollow(pf.path, os.O_RDWR|os.O_CREATE, 0o644)
	if errors.Is(err, ErrPartialIsSymlink) {
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", pf.path, err)
	}
	// One download per destination: the lock ends with the process.
	if err := tryLock(f); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%w: another download to %s is running (%s is locked)", ErrDestinationExists, dest, pf.path)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	st := newResumeState(root, size, pieceSize)
	loaded := false
	if b, err := readNoFollow(pf.statePath); err == nil {
		old, err := decodeResumeState(b)
		switch {
		case err != nil:
			// Damaged (bit flips, a torn or truncated file): its marks
			// cannot be trusted, but the data can be checked. Every piece
			// is a candidate, and reverify keeps only those that hash
			// right; the rest are fetched again.
			logger.Warn("resume state is damaged; re-verifying every piece of the partial file instead", "path", pf.statePath, "err", err)
			if fi, serr := f.Stat(); serr == nil && fi.Size() == size && size > 0 {
				for i := range st.Pieces {
					st.set(i)
				}
			}
		case old.ID != root || old.Size != size || old.PieceSize != pieceSize:
			logger.Warn("discarding resume state of another file", "path", pf.statePath)
		default:
			st, loaded = old, true
		}
	} else if errors.Is(err, ErrPartialIsSymlink) {
		return nil, nil, err
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("read resume state %s: %w", pf.statePath, err)
	}
	if st.count() == 0 {
		if err := f.Truncate(0); err != nil {
			return nil, nil, fmt.Errorf("truncate %s: %w", pf.path, err)
		}
	}
	if err := f.Truncate(size); err != nil {
		return nil, nil, fmt.Errorf("size %s: %w", pf.path, err)
	}
	pf.f = f
	pf.writeAt = f.WriteAt
	// Write the state now, while there is room, so that a checkpoint on a
	// disk that has filled up can overwrite it in place (see saveState).
	// A state read intact is there already; otherwise write an empty one
	// (marks are only ever recorded after an fsync of their pieces).
	if !loaded {
		pf.rewrote = true
		if err := pf.saveState(newResumeState(root, size, pieceSize).encode()); err != nil {
			return nil, nil, fmt.Errorf("write resume state %s: %w", pf.statePath, err)
		}
	}
	return pf, st, nil
}

// reverify re-hashes the pieces st marks against hashes and unmarks any
// that no longer match, so only verified bytes are ever trusted. Called by
// the coordinator before any worker starts.
func (pf *partialFile) reverify(st *resumeState, hashes [][32]byte) error {
	marked := st.count()
	if marked == 0 {
		return nil
	}
	buf := make([]byte, pf.pieceSize)
	valid, validBytes := 0, int64(0)
	for i := range st.Pieces {
		if !st.has(i) {
			continue
		}
		l := pieceLen(pf.size, pf.pieceSize, i)
		if _, err := pf.f.ReadAt(buf[:l], int64(i)*pf.pieceSize); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("re-verify %s: %w", pf.path, err)
		}
		if sha256.Sum256(buf[:l]) != hashes[i] {
			st.clear(i)
			continue
		}
		valid++
		validBytes += l
	}
	pf.lastSaved = valid
	if pf.rewrote {
		pf.lastSaved = -1 // the salvaged marks are not on disk yet
	}
	pf.lastKick = validBytes
	if valid < marked {
		pf.logger.Warn("some resumed pieces failed re-verification and will be fetched again", "marked", marked, "valid", valid)
	}
	if valid > 0 {
		pf.logger.Info("resuming download", "file", pf.id, "pieces", valid, "of", st.Pieces)
	}
	return nil
}

// writePiece writes verified piece i in place. Any goroutine may call it
// while f is open; a failure wraps errWrite, and also ErrDiskFull when the
// disk or quota is full. A piece that could not be written whole is
// deallocated again (where the file system can), so that the room its
// first bytes took is there for the resume state, which must still record
// the pieces verified before it.
func (pf *partialFile) writePiece(i int, b []byte) error {
	off := int64(i) * pf.pieceSize
	pf.writeMu.Lock()
	_, err := pf.writeAt(b, off)
	if err != nil {
		freeRange(pf.f, off, int64(len(b)))
	}
	pf.writeMu.Unlock()
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w %s: %w", ErrDiskFull, errWrite, pf.path, err)
	}
	return fmt.Errorf("%w %s: %w", errWrite, pf.path, err)
}

// writebackEvery is how many verified bytes may gather in the page cache
// before the coordinator (on its next wake-up, at least every 50 ms) asks
// the kernel to start writing them to disk. Otherwise the kernel keeps a
// fast download's data in memory, up to vm.dirty_background_ratio of it,
// and fsync writes it while the download waits: measured on a 1 GiB
// download, the final fsync took 250–300 ms without checkpoints and
// 30–110 ms with one a second, against under 10 ms with this. The same
// idea as RocksDB's bytes_per_sync and PostgreSQL's backend_flush_after.
const writebackEvery = 8 << 20

// kickWriteback starts the disk writes of the pieces stored since the last
// call, once there are writebackEvery bytes of them; done is the verified
// byte count now. Called by the coordinator.
func (pf *partialFile) kickWriteback(done int64) {
	if done-pf.lastKick < writebackEvery {
		return
	}
	pf.lastKick = done
	startWriteback(pf.f)
}

// checkpoint makes the verified pieces durable and records them: it copies
// the bitmap, fsyncs the partial file (so every piece in the copy is on
// disk), then atomically replaces the resume state. A crash at any point
// leaves a state that marks only pieces that are on disk. Called by the
// coordinator; verifiers may be writing meanwhile.
func (pf *partialFile) checkpoint(t *pieceTable) error {
	snap, count := t.snapshot()
	if count == pf.lastSaved {
		return nil
	}
	if err := pf.f.Sync(); err != nil {
		return err
	}
	if err := pf.saveState(snap.encode()); err != nil {
		return err
	}
	pf.lastSaved = count
	return nil
}

// saveState replaces the resume state with b. It writes a new file and
// renames it over the old one; when the disk is too full for a new file it
// overwrites the old one in place instead, which needs no new room (the
// state of one file always has the same length, and openPartial writes it
// first thing). A write torn by a crash then fails the state's checksum,
// and the next run re-verifies every piece rather than trust it.
func (pf *partialFile) saveState(b []byte) error {
	err := writeFileAtomic(pf.statePath, b, 0o644)
	if err == nil || !(errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)) {
		return err
	}
	f, oerr := openNoFollow(pf.statePath, os.O_WRONLY, 0)
	if oerr != nil {
		return err
	}
	defer f.Close()
	if fi, serr := f.Stat(); serr != nil || fi.Size() != int64(len(b)) {
		return err
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		return err
	}
	return f.Sync()
}

// discardIfEmpty removes the partial file and resume state of a failed
// download when t is nil (the download failed before its pieces were
// re-verified, and the caller knows no earlier run verified any) or t
// verified nothing: there is nothing to resume. Called by the coordinator
// once no worker runs.
func (pf *partialFile) discardIfEmpty(t *pieceTable) {
	if (t != nil && t.stats().Done != 0) || pf.f == nil {
		return
	}
	pf.f.Close()
	pf.f = nil
	os.Remove(pf.path)
	os.Remove(pf.statePath)
}

// finish makes the complete file durable and moves it to dest without ever
// overwriting a file that appeared there meanwhile. Called by the
// coordinator once no worker runs.
func (pf *partialFile) finish() error {
	if err := pf.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", pf.path, err)
	}
	if err := pf.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", pf.path, err)
	}
	pf.f = nil
	// link+remove instead of rename: link fails if dest exists.
	if err := os.Link(pf.path, pf.dest); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s appeared during the download; the complete file is in %s", ErrDestinationExists, pf.dest, pf.path)
		}
		if _, serr := os.Lstat(pf.dest); serr == nil {
			return fmt.Errorf("%w: %s appeared during the download; the complete file is in %s", ErrDestinationExists, pf.dest, pf.path)
		}
		if err := os.Rename(pf.path, pf.dest); err != nil {
			return fmt.Errorf("move %s to %s: %w", pf.path, pf.dest, err)
		}
	} else if err := os.Remove(pf.path); err != nil {
		return fmt.Errorf("remove %s: %w", pf.path, err)
	}
	if err := os.Remove(pf.statePath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		pf.logger.Warn("cannot remove resume state", "path", pf.statePath, "err", err)
	}
	return syncDir(filepath.Dir(pf.dest))
}

// close closes the partial file if it is still open, leaving it and its
// resume state for the next run. Called by the coordinator once no worker
// runs.
func (pf *partialFile) close() {
	if pf.f != nil {
		pf.f.Close()
		pf.f = nil
	}
}
