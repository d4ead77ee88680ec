package peer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"fileshare/client"
	"fileshare/fsm"
)

// sharedFile is one file this peer offers, as found by a scan.
type sharedFile struct {
	ID        string
	Path      string // slash-separated, relative to the share folder
	Name      string // the name registered in the index
	Size      int64
	ModTime   int64 // Unix nanoseconds
	PieceSize int64
	Hashes    []byte // raw piece-hash list, 32 bytes per piece
	// proof tells the piece server which pieces it may send without
	// hashing them again (see pieceProof); never nil once published.
	proof *pieceProof
}

func (f *sharedFile) entry() client.FileEntry {
	return client.FileEntry{ID: f.ID, Name: f.Name, Size: f.Size, PieceSize: f.PieceSize}
}

// store is the share folder and the hash cache. Only the peer's sync
// goroutine calls its methods; the piece server reads the published result
// of a scan (Peer.served), never the store.
type store struct {
	dir       string   // the share folder, absolute
	root      *os.Root // the share folder; every open goes through it
	cachePath string
	cache     map[string]cacheEntry  // by path
	proofs    map[string]*pieceProof // by path; kept across scans while the seal holds
	logger    *slog.Logger

	// The data dir is never shared, whichever path leads to it: the share
	// folder may be the data dir, contain it, or reach it through a
	// symlink, and the key may be hard-linked anywhere.
	realDir       string      // the share folder with symlinks resolved
	realData      string      // the data dir with symlinks resolved
	key           os.FileInfo // the peer's key file
	includeHidden bool        // share dotfiles and dot-folders too
}

func openStore(shareDir, dataDir string, includeHidden bool, logger *slog.Logger) (*store, error) {
	abs, err := filepath.Abs(shareDir)
	if err != nil {
		return nil, fmt.Errorf("%w: share folder %s: %v", ErrConfig, shareDir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("%w: create share folder %s: %v", ErrConfig, abs, err)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("%w: open share folder %s: %v", ErrConfig, abs, err)
	}
	s := &store{dir: abs, root: root, cachePath: filepath.Join(dataDir, hashCacheFile), cache: map[string]cacheEntry{}, logger: logger, includeHidden: includeHidden}
	if s.realDir, err = filepath.EvalSymlinks(abs); err != nil {
		root.Close()
		return nil, fmt.Errorf("%w: share folder %s: %v", ErrConfig, abs, err)
	}
	if s.realData, err = filepath.EvalSymlinks(dataDir); err != nil {
		root.Close()
		return nil, fmt.Errorf("%w: data dir %s: %v", ErrConfig, dataDir, err)
	}
	if s.key, err = os.Stat(filepath.Join(dataDir, keyFile)); err != nil {
		root.Close()
		return nil, fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	if b, err := os.ReadFile(s.cachePath); err == nil {
		if c, err := decodeHashCache(b); err != nil {
			logger.Warn("discarding unreadable hash cache; files will be rehashed", "path", s.cachePath, "err", err)
		} else {
			s.cache = c
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		logger.Warn("cannot read hash cache; files will be rehashed", "path", s.cachePath, "err", err)
	}
	return s, nil
}

func (s *store) close() error { return s.root.Close() }

// cachedIDs returns the IDs of every file in the hash cache: what this peer
// shared when it last ran.
func (s *store) cachedIDs() map[string]bool {
	out := make(map[string]bool, len(s.cache))
	for _, e := range s.cache {
		out[FileIDOf(e.Size, e.PieceSize, leaves(e.Hashes))] = true
	}
	return out
}

// addCache records hashes computed elsewhere (a finished download being
// seeded), so the next scan does not hash the file again.
func (s *store) addCache(e cacheEntry) { s.cache[e.Path] = e }

// scan walks the share folder and returns every shareable file by ID:
// regular files, and symlinks that resolve to a regular file inside the
// folder (os.Root refuses the others), except partial downloads and the data
// dir. A file's hashes come from the cache when its size and mtime are
// unchanged; otherwise it is hashed now. When two paths hold the same
// content, the first in lexical order is the one served and named. The cache
// is pruned to the files seen and saved if it changed.
func (s *store) scan(ctx context.Context) (map[string]*sharedFile, error) {
	seen := make(map[string]cacheEntry, len(s.cache))
	files := make(map[string]*sharedFile)
	proofs := make(map[string]*pieceProof)
	changed := false
	err := fs.WalkDir(s.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if err != nil {
			s.logger.Warn("skipping unreadable path in share folder", "path", p, "err", err)
			if d != nil && d.IsDir() && p != "." {
				return fs.SkipDir
			}
			return nil
		}
		if p == "." {
			return nil
		}
		if d.IsDir() {
			if s.hidden(p) || filepath.Join(s.realDir, p) == s.realData {
				return fs.SkipDir
			}
			return nil
		}
		if skipName(path.Base(p)) || s.hidden(p) || s.isDataFile(p) {
			return nil
		}
		var info fs.FileInfo
		switch {
		case d.Type().IsRegular():
			info, err = d.Info()
		case d.Type()&fs.ModeSymlink != 0:
			// Stat through the root follows the link only if it stays
			// inside the share folder.
			info, err = s.root.Stat(filepath.FromSlash(p))
			if err != nil {
				s.logger.Debug("not sharing symlink that dangles or leaves the share folder", "path", p, "err", err)
				return nil
			}
			if !info.Mode().IsRegular() {
				return nil // directory links are not followed: no loops
			}
			if s.linksIntoDataDir(p) {
				s.logger.Warn("not sharing symlink into the data dir", "path", p)
				return nil
			}
		default:
			return nil // devices, pipes, sockets
		}
		if err != nil {
			return nil // vanished since the directory was read
		}
		if os.SameFile(info, s.key) {
			s.logger.Warn("not sharing a link to the peer's key", "path", p)
			return nil
		}
		name := registeredName(p)
		if name == "" {
			s.logger.Warn("not sharing file whose name is not valid UTF-8 or too long", "path", p)
			return nil
		}
		size, mtime := info.Size(), info.ModTime().UnixNano()
		e, ok := s.cache[p]
		if !ok || !e.fresh(size, mtime, sealOf(info)) {
			e, err = s.hash(ctx, p)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s.logger.Warn("cannot hash file; will retry on the next scan", "path", p, "err", err)
				return nil
			}
			changed = true
		}
		seen[p] = e
		id := FileIDOf(e.Size, e.PieceSize, leaves(e.Hashes))
		if _, dup := files[id]; !dup {
			pr := s.proofs[p]
			if pr == nil || pr.seal != e.Seal || pr.id != id {
				pr = newPieceProof(id, e.Seal, PieceCount(e.Size, e.PieceSize), e.Settled)
			}
			proofs[p] = pr
			files[id] = &sharedFile{ID: id, Path: p, Name: name, Size: e.Size, ModTime: e.ModTime, PieceSize: e.PieceSize, Hashes: e.Hashes, proof: pr}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(seen) != len(s.cache) {
		changed = true
	}
	s.cache = seen
	s.proofs = proofs
	if changed {
		if err := s.saveCache(); err != nil {
			s.logger.Warn("cannot save hash cache; files will be rehashed after a restart", "path", s.cachePath, "err", err)
		}
	}
	return files, nil
}

// hash hashes the file at p. It takes size, mtime and seal from the open
// file and checks them again afterwards: a file written to while being
// hashed is skipped until a later scan sees it settled.
func (s *store) hash(ctx context.Context, p string) (cacheEntry, error) {
	f, err := s.root.Open(filepath.FromSlash(p))
	if err != nil {
		return cacheEntry{}, err
	}
	defer f.Close()
	readAt := time.Now() // every read below comes after this
	before, err := f.Stat()
	if err != nil {
		return cacheEntry{}, err
	}
	if !before.Mode().IsRegular() {
		return cacheEntry{}, errors.New("not a regular file")
	}
	fh, err := HashFile(ctx, f, before.Size())
	if err != nil {
		return cacheEntry{}, err
	}
	after, err := f.Stat()
	if err != nil {
		return cacheEntry{}, err
	}
	seal := sealOf(before)
	if after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) || sealOf(after) != seal {
		return cacheEntry{}, errors.New("file changed while being hashed")
	}
	return cacheEntry{Path: p, Size: fh.Size, ModTime: before.ModTime().UnixNano(), PieceSize: fh.PieceSize, Hashes: rawHashes(fh.Pieces),
		Seal: seal, Settled: seal.settled(readAt)}, nil
}

func (s *store) saveCache() error {
	b, err := encodeHashCache(s.cache)
	if err != nil {
		return err
	}
	return writeFileAtomic(s.cachePath, b, 0o600)
}

// skipName reports whether a file name is one of ours that must never be
// shared: a partial download, its resume state, or a temporary file.
// hidden reports whether slash path p is a dotfile or lies in a dot-folder
// and so is not shared without includeHidden.
func (s *store) hidden(p string) bool {
	return !s.includeHidden && strings.HasPrefix(path.Base(p), ".")
}

// dataFiles are the files a peer keeps in its data dir.
var dataFiles = []string{keyFile, hashCacheFile, lockFile, legacyIdentityFile}

// isDataFile reports whether slash path p is one of the data dir's own
// files, as when the share folder is the data dir.
func (s *store) isDataFile(p string) bool {
	return filepath.Dir(filepath.Join(s.realDir, filepath.FromSlash(p))) == s.realData && slices.Contains(dataFiles, path.Base(p))
}

// linksIntoDataDir reports whether the symlink at slash path p resolves
// into the data dir.
func (s *store) linksIntoDataDir(p string) bool {
	target, err := filepath.EvalSymlinks(filepath.Join(s.dir, filepath.FromSlash(p)))
	if err != nil {
		return true // cannot tell: do not share
	}
	rel, err := filepath.Rel(s.realData, target)
	return err == nil && filepath.IsLocal(rel)
}

func skipName(base string) bool {
	return strings.HasSuffix(base, PartialSuffix) || strings.HasSuffix(base, ResumeSuffix) ||
		strings.Contains(base, PartialSuffix+".") || strings.Contains(base, ResumeSuffix+".")
}

// registeredName is the name a file is registered under: its slash path
// relative to the share folder (so a search for a folder name finds its
// files), or its base name if the path is longer than fsm.MaxNameLen, or ""
// if neither is a valid name.
func registeredName(p string) string {
	for _, n := range []string{p, path.Base(p)} {
		if len(n) <= fsm.MaxNameLen && utf8.ValidString(n) && !strings.ContainsRune(n, 0) {
			return n
		}
	}
	return ""
}

// errUnsafePath is wrapped when a path would leave the share folder.
var errUnsafePath = errors.New("path is not inside the share folder")

// openShared opens the regular file at rel (slash-separated, relative to the
// share folder) for serving. It refuses, before touching the disk, any path
// that is absolute, empty, or contains ".." (fs.ValidPath); the open goes
// through root, which refuses any symlink — at any depth — that resolves
// outside the share folder and allows those that stay inside. The result must
// be a regular file.
func openShared(root *os.Root, rel string) (*os.File, error) {
	if !fs.ValidPath(rel) || rel == "." || !filepath.IsLocal(filepath.FromSlash(rel)) {
		return nil, fmt.Errorf("%w: %q", errUnsafePath, rel)
	}
	f, err := root.Open(filepath.FromSlash(rel))
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%q is not a regular file", rel)
	}
	return f, nil
}
