//go:build linux

package jepsenlike

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

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
