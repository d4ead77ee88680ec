package peer

// This file owns seeding: turning a finished download into a shared file.
// It runs on the downloading goroutine after the download is complete and
// touches only the share folder and, through rescan, the sync goroutine's
// cache; it reads no download state.

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// seed makes a finished download part of the share folder and registers
// it. The file's hashes are handed to the cache, so it is not hashed again.
// It blocks until the index acknowledges the file or ctx ends.
func (p *Peer) seed(ctx context.Context, dest string, size, pieceSize int64, hashes []byte) error {
	rel, err := filepath.Rel(p.store.dir, dest)
	if err != nil || !filepath.IsLocal(rel) {
		rel, err = p.linkIntoShare(dest, FileIDOf(size, pieceSize, leaves(hashes))[:8])
		if err != nil {
			return err
		}
	}
	// The hashes are those the download verified, but the file's bytes
	// are trusted by seal only as far as the piece server proves them
	// (Settled false): it was written a moment ago.
	st, err := p.store.root.Stat(rel)
	if err != nil {
		return err
	}
	e := cacheEntry{Path: filepath.ToSlash(rel), Size: size, ModTime: st.ModTime().UnixNano(), PieceSize: pieceSize, Hashes: hashes, Seal: sealOf(st)}
	if st.Size() != size {
		return fmt.Errorf("%s changed after the download", dest)
	}
	if err := p.rescan(ctx, &e); err != nil {
		return err
	}
	if p.servedFile(FileIDOf(size, pieceSize, leaves(hashes))) == nil {
		return fmt.Errorf("the index did not accept %s; see the log", dest)
	}
	return nil
}

// linkIntoShare hard-links dest into the share folder's top level (copying
// if the link fails, e.g. across file systems) under its base name, or
// under name-TAG if that is taken, and returns the new relative path.
func (p *Peer) linkIntoShare(dest, tag string) (string, error) {
	base := filepath.Base(dest)
	ext := filepath.Ext(base)
	for _, name := range []string{base, strings.TrimSuffix(base, ext) + "-" + tag + ext} {
		target := filepath.Join(p.store.dir, name)
		if _, err := os.Lstat(target); err == nil {
			continue
		}
		if err := os.Link(dest, target); err == nil {
			return name, nil
		}
		if err := copyFile(dest, target); err != nil {
			return "", fmt.Errorf("copy into the share folder: %w", err)
		}
		return name, nil
	}
	return "", fmt.Errorf("the share folder already has files named like %s", base)
}

// copyFile copies src to a new file dst (never over an existing one) and
// fsyncs it; on failure dst is removed.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	return out.Close()
}
