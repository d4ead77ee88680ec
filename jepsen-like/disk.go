package jepsenlike

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// diskSize is the size of each master's own filesystem under disk-full
// faults: large enough for a long run's Raft log and snapshots, small
// enough that filling it takes well under a second.
const diskSize = 256 << 20

// fillerName is the file a disk-full fault grows until ENOSPC.
const fillerName = "filler"

// disks are the masters' own filesystems for disk-full faults: a tmpfs
// of diskSize per master mounted at root/mI, whose data dir is
// root/mI/data (a subdirectory, so wiping it leaves the mount point).
// Its methods are called by one goroutine at a time (the nemesis, then
// Run's cleanup).
type disks struct {
	root    string
	mounts  []string
	mounted []bool
}

// newDisks mounts one filesystem per id under root. On an error it
// unmounts what it mounted.
func newDisks(root string, ids []string) (*disks, error) {
	d := &disks{root: root}
	for _, id := range ids {
		dir := filepath.Join(root, id)
		d.mounts = append(d.mounts, dir)
		if err := mountDisk(dir, diskSize); err != nil {
			return nil, errors.Join(err, d.close(""))
		}
		d.mounted = append(d.mounted, true)
		if err := os.MkdirAll(d.dataDir(len(d.mounted)-1), 0o755); err != nil {
			return nil, errors.Join(err, d.close(""))
		}
	}
	return d, nil
}

// dataDir is master i's data dir on its own filesystem.
func (d *disks) dataDir(i int) string { return filepath.Join(d.mounts[i], "data") }

// fill writes master i's filler file until the filesystem is full
// (ENOSPC), first in 1 MiB writes, then in 4 KiB ones for the last
// pages. It returns the filler's size. Any error but ENOSPC is returned.
func (d *disks) fill(i int) (int64, error) {
	f, err := os.OpenFile(filepath.Join(d.mounts[i], fillerName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("create the filler: %w", err)
	}
	defer f.Close()
	var n int64
	for _, chunk := range []int{1 << 20, 4 << 10} {
		buf := make([]byte, chunk)
		for i := range buf {
			buf[i] = byte(i) | 1
		}
		for {
			w, err := f.Write(buf)
			n += int64(w)
			if isNoSpace(err) {
				break
			}
			if err != nil {
				return n, fmt.Errorf("write the filler: %w", err)
			}
		}
	}
	return n, nil
}

// free deletes master i's filler; a missing one is fine.
func (d *disks) free(i int) error {
	if err := os.Remove(filepath.Join(d.mounts[i], fillerName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete the filler: %w", err)
	}
	return nil
}

// close unmounts every filesystem, after copying each data dir to
// keepTo/mI if keepTo is not "", and removes the mount points. The
// masters must have stopped. It is safe to call twice.
func (d *disks) close(keepTo string) error {
	var errs []error
	for i, dir := range d.mounts {
		if i >= len(d.mounted) || !d.mounted[i] {
			continue
		}
		if keepTo != "" {
			dst := filepath.Join(keepTo, filepath.Base(dir))
			if err := copyTree(dst, d.dataDir(i)); err != nil {
				errs = append(errs, fmt.Errorf("keep the data dir of %s: %w", filepath.Base(dir), err))
			}
		}
		if err := unmountDisk(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		d.mounted[i] = false
	}
	if !slices.Contains(d.mounted, true) {
		if err := os.RemoveAll(d.root); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// copyTree copies the regular files and directories under src to dst.
func copyTree(dst, src string) error {
	return filepath.WalkDir(src, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if e.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !e.Type().IsRegular() {
			return nil
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}
