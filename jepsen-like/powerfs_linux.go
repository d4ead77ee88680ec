//go:build linux

package jepsenlike

import (
	"context"
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

// powerNode is a loopback node that records how to undo each change.
type powerNode struct {
	fs.LoopbackNode
	p *powerFS
}

func (n *powerNode) rel(name string) string {
	return filepath.Join(n.EmbeddedInode().Path(n.Root()), name)
}

// selfRel is the node's own path relative to the backing directory.
func (n *powerNode) selfRel() string { return n.EmbeddedInode().Path(n.Root()) }

func (n *powerNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	p := n.p
	p.mu.Lock()
	defer p.mu.Unlock()
	rel := n.rel(name)
	_, statErr := os.Lstat(filepath.Join(p.backing, rel))
	if statErr == nil && flags&syscall.O_TRUNC != 0 {
		if f, err := os.OpenFile(filepath.Join(p.backing, rel), os.O_RDWR, 0); err == nil {
			errno := p.record(int(f.Fd()), 0, 0, 0)
			f.Close()
			if errno != 0 {
				return nil, nil, 0, errno
			}
		}
	}
	ino, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if errors.Is(statErr, os.ErrNotExist) {
		p.ops = append(p.ops, dirOp{kind: "create", dir: n.selfRel(), path: rel, ino: out.Attr.Ino})
		var st syscall.Stat_t
		if syscall.Lstat(filepath.Join(p.backing, rel), &st) == nil {
			p.ops[len(p.ops)-1].ino = st.Ino
		}
	}
	return ino, wrapFile(fh, p), fl, 0
}

func (n *powerNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	p := n.p
	if flags&syscall.O_TRUNC != 0 {
		p.mu.Lock()
		f, err := os.OpenFile(filepath.Join(p.backing, n.selfRel()), os.O_RDWR, 0)
		if err == nil {
			errno := p.record(int(f.Fd()), 0, 0, 0)
			f.Close()
			if errno != 0 {
				p.mu.Unlock()
				return nil, 0, errno
			}
		}
		p.mu.Unlock()
	}
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return wrapFile(fh, p), fl, 0
}

func (n *powerNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		p := n.p
		p.mu.Lock()
		bf, err := os.OpenFile(filepath.Join(p.backing, n.selfRel()), os.O_RDWR, 0)
		if err != nil {
			p.mu.Unlock()
			return fs.ToErrno(err)
		}
		errno := p.record(int(bf.Fd()), 0, 0, int64(sz))
		bf.Close()
		p.mu.Unlock()
		if errno != 0 {
			return errno
		}
	}
	if pf, ok := f.(*powerFile); ok {
		f = pf.lf
	}
	return n.LoopbackNode.Setattr(ctx, f, in, out)
}

func (n *powerNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.p.mu.Lock()
	defer n.p.mu.Unlock()
	ino, errno := n.LoopbackNode.Mkdir(ctx, name, mode, out)
	if errno == 0 {
		n.p.ops = append(n.p.ops, dirOp{kind: "mkdir", dir: n.selfRel(), path: n.rel(name)})
	}
	return ino, errno
}

func (n *powerNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	n.p.mu.Lock()
	defer n.p.mu.Unlock()
	errno := n.LoopbackNode.Rmdir(ctx, name)
	if errno == 0 {
		n.p.ops = append(n.p.ops, dirOp{kind: "rmdir", dir: n.selfRel(), path: n.rel(name)})
	}
	return errno
}

func (n *powerNode) Unlink(ctx context.Context, name string) syscall.Errno {
	p := n.p
	p.mu.Lock()
	defer p.mu.Unlock()
	rel := n.rel(name)
	g, err := p.bury(rel)
	if err != nil {
		return fs.ToErrno(err)
	}
	p.ops = append(p.ops, dirOp{kind: "unlink", dir: n.selfRel(), path: rel, graveRel: g})
	return 0
}

func (n *powerNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	p := n.p
	np, ok := newParent.(*powerNode)
	if !ok || flags != 0 {
		return syscall.ENOTSUP // RENAME_NOREPLACE/EXCHANGE: not recorded, so not offered
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	from, to := n.rel(name), np.rel(newName)
	op := dirOp{kind: "rename", dir: np.selfRel(), path: to, from: from}
	if st, err := os.Lstat(filepath.Join(p.backing, to)); err == nil && !st.IsDir() {
		// Keep the file the rename replaces: link it into the graveyard.
		p.graveN++
		op.graveRel = strconv.Itoa(p.graveN)
		if err := os.Link(filepath.Join(p.backing, to), filepath.Join(p.grave, op.graveRel)); err != nil {
			return fs.ToErrno(err)
		}
	}
	errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
	if errno == 0 {
		p.ops = append(p.ops, op)
	}
	return errno
}

func (n *powerNode) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	d, ok := fh.(dirHandle)
	if !ok {
		return fh, fl, 0
	}
	return &powerDir{dirHandle: d, p: n.p, rel: n.selfRel()}, fl, 0
}

// dirHandle is what go-fuse's loopback directory handle implements.
type dirHandle interface {
	fs.FileReaddirenter
	fs.FileSeekdirer
	fs.FileReleasedirer
	fs.FileFsyncdirer
}

type powerDir struct {
	dirHandle
	p   *powerFS
	rel string
}

func (d *powerDir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	errno := d.dirHandle.Fsyncdir(ctx, flags)
	if errno == 0 {
		d.p.dirSynced(d.rel)
	}
	return errno
}

// powerFile is a loopback file handle that records each write before it
// happens and forgets a file's records when it is fsynced. It forwards to
// the loopback handle method by method and does not offer
// PassthroughFd: with it, go-fuse would let the kernel write to the
// backing file directly (FUSE passthrough), past the records.
type powerFile struct {
	lf *fs.LoopbackFile
	p  *powerFS
	fd int
}

var (
	_ fs.FileReader    = (*powerFile)(nil)
	_ fs.FileWriter    = (*powerFile)(nil)
	_ fs.FileFsyncer   = (*powerFile)(nil)
	_ fs.FileFlusher   = (*powerFile)(nil)
	_ fs.FileReleaser  = (*powerFile)(nil)
	_ fs.FileGetattrer = (*powerFile)(nil)
	_ fs.FileSetattrer = (*powerFile)(nil)
	_ fs.FileLseeker   = (*powerFile)(nil)
	_ fs.FileAllocater = (*powerFile)(nil)
)

func wrapFile(fh fs.FileHandle, p *powerFS) fs.FileHandle {
	lf, ok := fh.(*fs.LoopbackFile)
	if !ok {
		return fh
	}
	fd, ok := lf.PassthroughFd() // the descriptor, for our records only
	if !ok {
		return fh
	}
	return &powerFile{lf: lf, p: p, fd: fd}
}

func (f *powerFile) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.lf.Read(ctx, buf, off)
}

func (f *powerFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	if errno := f.p.record(f.fd, off, int64(len(data)), 0); errno != 0 {
		return 0, errno
	}
	return f.lf.Write(ctx, data, off)
}

func (f *powerFile) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	var st syscall.Stat_t
	if err := syscall.Fstat(f.fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	if errno := f.p.record(f.fd, 0, 0, st.Size); errno != 0 {
		return errno
	}
	return f.lf.Allocate(ctx, off, size, mode)
}

// Setattr is reached through powerNode.Setattr, which records a size
// change first.
func (f *powerFile) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Setattr(ctx, in, out)
}

func (f *powerFile) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Getattr(ctx, out)
}

func (f *powerFile) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.lf.Lseek(ctx, off, whence)
}

func (f *powerFile) Flush(ctx context.Context) syscall.Errno { return f.lf.Flush(ctx) }

func (f *powerFile) Release(ctx context.Context) syscall.Errno { return f.lf.Release(ctx) }

// Fsync makes durable what was written before it began: a write that
// lands while the fsync runs stays undoable.
func (f *powerFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	before := f.p.pending(f.fd)
	errno := f.lf.Fsync(ctx, flags)
	if errno == 0 {
		f.p.fileSynced(f.fd, before)
	}
	return errno
}
