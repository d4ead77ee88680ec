//go:build linux

package jepsenlike

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// powerSupported says why power-loss filesystems cannot be mounted here,
// or "" if they can: root on Linux with /dev/fuse. go-fuse mounts by
// itself (mount(2) with DirectMountStrict), so no fusermount is needed.
func powerSupported() string {
	if os.Geteuid() != 0 {
		return "power loss needs root to mount a FUSE filesystem as each master's data dir"
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return "power loss needs /dev/fuse (load the fuse kernel module, or give the container the /dev/fuse device)"
	}
	return ""
}

// powerFS is a FUSE filesystem that passes everything through to a
// backing directory and remembers, until it is made durable, how to undo
// each change:
//
//   - a write or a size change of a file is undone (the old bytes and
//     size restored) unless the file was fsynced (fsync or fdatasync)
//     after it;
//   - a directory operation (create, mkdir, unlink, rmdir, rename) is
//     undone unless the directory it changed was fsynced after it, or it
//     created a file that was fsynced after it (as ext4, XFS and btrfs
//     commit a new file's entry with the file). Directory operations
//     become durable in order, as a metadata journal commits them: once
//     one is durable, so is every earlier one.
//
// powerLoss undoes every change that is not durable (the state a machine
// finds after its power fails), optionally keeping a 512-byte-aligned
// prefix of each file's last unsynced write (a torn write). Deleted and
// replaced files are kept in a graveyard beside the backing directory
// until their removal is durable, so undoing a removal brings them back.
//
// The filesystem is mounted at mnt; backing and graveyard live on one
// filesystem (rename between them). Methods are safe for concurrent use;
// powerLoss, sync and close must be called while no process uses the
// mount (the master is stopped).
type powerFS struct {
	mnt, backing, grave string
	server              *fuse.Server

	mu    sync.Mutex
	files map[uint64]*fileUndo // by the backing file's inode number
	ops   []dirOp              // directory operations, oldest first
	// durable is the number of ops (a prefix) that are durable.
	durable int
	graveN  int
}

// fileUndo is what undoes a file's unsynced writes: the changes in
// order, and a descriptor of the backing file (it outlives renames and
// unlinks).
type fileUndo struct {
	f    *os.File
	recs []undoRec
}

// undoRec undoes one change: bytes old were at off before a write of n
// bytes there, and the file was oldSize long.
type undoRec struct {
	off     int64
	n       int64
	old     []byte
	oldSize int64
}

// dirOp is one directory operation and how to undo it; paths are
// relative to the backing directory.
type dirOp struct {
	kind     string // create, mkdir, unlink, rmdir, rename
	dir      string // the directory whose entry changed (the new name's, for rename)
	path     string // the name created or removed (rename: the new name)
	from     string // rename: the old name
	ino      uint64 // create: the new file's inode
	graveRel string // unlink, or rename over a file: where the old file waits
}

// newPowerFS mounts a power-loss filesystem at mnt over base/fs, with
// its graveyard in base/grave.
func newPowerFS(base, mnt string) (*powerFS, error) {
	p := &powerFS{mnt: mnt, backing: filepath.Join(base, "fs"), grave: filepath.Join(base, "grave"), files: map[uint64]*fileUndo{}}
	for _, d := range []string{p.backing, p.grave, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := p.mount(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *powerFS) mount() error {
	var st syscall.Stat_t
	if err := syscall.Stat(p.backing, &st); err != nil {
		return err
	}
	root := &fs.LoopbackRoot{Path: p.backing, Dev: uint64(st.Dev)}
	root.NewNode = func(r *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
		return &powerNode{LoopbackNode: fs.LoopbackNode{RootData: r}, p: p}
	}
	root.RootNode = root.NewNode(root, nil, "", &st)
	sec := time.Second
	server, err := fs.Mount(p.mnt, root.RootNode, &fs.Options{
		AttrTimeout: &sec, EntryTimeout: &sec,
		MountOptions: fuse.MountOptions{DirectMountStrict: true, FsName: "fileshare-powerloss", Name: "powerloss", MaxBackground: 64},
	})
	if err != nil {
		return fmt.Errorf("mount the power-loss filesystem at %s: %w", p.mnt, err)
	}
	p.server = server
	return nil
}

func (p *powerFS) unmount() error {
	if p.server == nil {
		return nil
	}
	err := p.server.Unmount()
	if err != nil {
		// A process still holds a file there: detach, so the serve
		// loop ends once it lets go.
		if e := syscall.Unmount(p.mnt, syscall.MNT_DETACH); e == nil || errors.Is(e, syscall.EINVAL) {
			err = nil
		}
	}
	p.server.Wait()
	p.server = nil
	if err != nil {
		return fmt.Errorf("unmount %s: %w", p.mnt, err)
	}
	return nil
}

// powerLoss unmounts the filesystem, undoes every change that is not
// durable (keeping a torn prefix of each file's last write if tear is
// set, at offsets drawn from rng), mounts it again, and says what it
// discarded.
func (p *powerFS) powerLoss(tear bool, rng *rand.Rand) (string, error) {
	if err := p.unmount(); err != nil {
		return "", err
	}
	p.mu.Lock()
	var errs []error
	files, bytesLost, torn := 0, int64(0), 0
	for _, u := range p.files {
		if len(u.recs) > 0 {
			files++
		}
		for k := len(u.recs) - 1; k >= 0; k-- {
			r := u.recs[k]
			keep := int64(0)
			if tear && k == len(u.recs)-1 && r.n > 512 {
				keep = rng.Int64N(r.n/512+1) * 512
				if keep > 0 {
					torn++
				}
			}
			bytesLost += r.n - keep
			errs = append(errs, undoWrite(u.f, r, keep))
		}
		u.f.Close()
	}
	undone := len(p.ops) - p.durable
	for k := len(p.ops) - 1; k >= p.durable; k-- {
		if err := p.undoDirOp(p.ops[k]); err != nil {
			errs = append(errs, fmt.Errorf("undo %s %s: %w", p.ops[k].kind, p.ops[k].path, err))
		}
	}
	p.resetLocked()
	p.mu.Unlock()
	errs = append(errs, p.mount())
	what := fmt.Sprintf("discarded %d unsynced bytes in %d files and %d directory operations", bytesLost, files, undone)
	if tear {
		what += fmt.Sprintf("; tore %d last writes at a 512-byte boundary", torn)
	}
	return what, errors.Join(errs...)
}

// sync makes every change durable, as sync(2) would: for changes the
// harness makes (a wipe, damage) that no power loss should undo.
func (p *powerFS) sync() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.files {
		u.f.Close()
	}
	p.resetLocked()
}

func (p *powerFS) resetLocked() {
	p.files, p.ops, p.durable = map[uint64]*fileUndo{}, nil, 0
	_ = os.RemoveAll(p.grave)
	_ = os.MkdirAll(p.grave, 0o755)
}

// close unmounts the filesystem, keeping what the master wrote.
func (p *powerFS) close() error {
	p.sync()
	return p.unmount()
}

// undoWrite restores what r overwrote, except the first keep bytes.
func undoWrite(f *os.File, r undoRec, keep int64) error {
	if keep < int64(len(r.old)) {
		if _, err := f.WriteAt(r.old[keep:], r.off+keep); err != nil {
			return err
		}
	}
	if r.off+r.n > r.oldSize || r.n == 0 { // it grew the file (or changed its size)
		size := max(r.oldSize, r.off+keep)
		if r.n == 0 {
			size = r.oldSize
		}
		return f.Truncate(size)
	}
	return nil
}

func (p *powerFS) undoDirOp(op dirOp) error {
	abs := func(rel string) string { return filepath.Join(p.backing, rel) }
	switch op.kind {
	case "create":
		return ignoreMissing(os.Remove(abs(op.path)))
	case "mkdir":
		return ignoreMissing(os.RemoveAll(abs(op.path)))
	case "unlink":
		return os.Rename(filepath.Join(p.grave, op.graveRel), abs(op.path))
	case "rmdir":
		return os.Mkdir(abs(op.path), 0o755)
	case "rename":
		if err := os.Rename(abs(op.path), abs(op.from)); err != nil {
			return err
		}
		if op.graveRel != "" {
			return os.Rename(filepath.Join(p.grave, op.graveRel), abs(op.path))
		}
	}
	return nil
}

func ignoreMissing(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// record remembers, before a change of n bytes at off (n 0: a size
// change to newSize), how to undo it, through fd (an open descriptor of
// the backing file).
func (p *powerFS) record(fd int, off, n, newSize int64) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	u := p.files[st.Ino]
	if u == nil {
		f, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(fd), os.O_RDWR, 0)
		if err != nil {
			return fs.ToErrno(err)
		}
		u = &fileUndo{f: f}
		p.files[st.Ino] = u
	}
	r := undoRec{off: off, n: n, oldSize: st.Size}
	if n == 0 {
		r.off = newSize // a shrink loses [newSize, oldSize)
	}
	end := r.off + n
	if n == 0 {
		end = st.Size
	}
	if end = min(end, st.Size); end > r.off {
		r.old = make([]byte, end-r.off)
		if _, err := u.f.ReadAt(r.old, r.off); err != nil {
			return fs.ToErrno(err)
		}
	}
	u.recs = append(u.recs, r)
	return 0
}

// pending returns how many undo records the file behind fd has.
func (p *powerFS) pending(fd int) int {
	var st syscall.Stat_t
	if syscall.Fstat(fd, &st) != nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if u := p.files[st.Ino]; u != nil {
		return len(u.recs)
	}
	return 0
}

// fileSynced makes the first n changes of the file behind fd durable
// (those made before its fsync began), and the directory operation that
// created it.
func (p *powerFS) fileSynced(fd, n int) {
	var st syscall.Stat_t
	if syscall.Fstat(fd, &st) != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if u := p.files[st.Ino]; u != nil {
		if n >= len(u.recs) {
			u.f.Close()
			delete(p.files, st.Ino)
		} else {
			u.recs = append([]undoRec(nil), u.recs[n:]...)
		}
	}
	for k := len(p.ops) - 1; k >= p.durable; k-- {
		if p.ops[k].kind == "create" && p.ops[k].ino == st.Ino {
			p.advanceLocked(k + 1)
			break
		}
	}
}

// dirSynced makes every operation on directory rel durable.
func (p *powerFS) dirSynced(rel string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := len(p.ops) - 1; k >= p.durable; k-- {
		if p.ops[k].dir == rel {
			p.advanceLocked(k + 1)
			break
		}
	}
}

// advanceLocked makes the first n ops durable: it forgets them and
// deletes the files their removals left in the graveyard.
func (p *powerFS) advanceLocked(n int) {
	for _, op := range p.ops[:n] {
		if op.graveRel != "" {
			_ = os.Remove(filepath.Join(p.grave, op.graveRel))
		}
	}
	p.ops = append([]dirOp(nil), p.ops[n:]...)
	p.durable = 0
}

// bury moves the backing file at rel into the graveyard and returns its
// name there.
func (p *powerFS) bury(rel string) (string, error) {
	p.graveN++
	g := strconv.Itoa(p.graveN)
	return g, os.Rename(filepath.Join(p.backing, rel), filepath.Join(p.grave, g))
}
