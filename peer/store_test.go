package peer

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"fileshare/client"
)

func TestOpenSharedRefusesPathsOutsideTheShareFolder(t *testing.T) {
	base := t.TempDir()
	share := filepath.Join(base, "share")
	outside := filepath.Join(base, "secret.txt")
	mustWrite(t, outside, "top secret")
	mustWrite(t, filepath.Join(share, "ok.txt"), "fine")
	mustWrite(t, filepath.Join(share, "sub", "deep.txt"), "fine too")
	if err := os.Symlink(outside, filepath.Join(share, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../secret.txt", filepath.Join(share, "sub", "relative-escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(base, filepath.Join(share, "dirlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/deep.txt", filepath.Join(share, "inside")); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(share)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, tc := range []struct {
		path string
		ok   bool
		want string
	}{
		{"ok.txt", true, "fine"},
		{"sub/deep.txt", true, "fine too"},
		{"inside", true, "fine too"},        // a symlink that stays inside is served
		{"../secret.txt", false, ""},        // parent traversal
		{"sub/../../secret.txt", false, ""}, // traversal hidden in the middle
		{outside, false, ""},                // absolute path
		{"escape", false, ""},               // absolute symlink to outside
		{"sub/relative-escape", false, ""},  // relative symlink to outside
		{"dirlink/secret.txt", false, ""},   // symlinked directory to outside
		{"sub", false, ""},                  // a directory is not a file
		{"", false, ""},                     // empty
		{".", false, ""},                    // the folder itself
	} {
		t.Run(tc.path, func(t *testing.T) {
			f, err := openShared(root, tc.path)
			if !tc.ok {
				if err == nil {
					b, _ := os.ReadFile(f.Name())
					f.Close()
					t.Fatalf("opened %q (content %q), want refusal", tc.path, b)
				}
				return
			}
			if err != nil {
				t.Fatalf("open %q: %v", tc.path, err)
			}
			defer f.Close()
			b := make([]byte, 64)
			n, _ := f.Read(b)
			if string(b[:n]) != tc.want {
				t.Fatalf("read %q, want %q", b[:n], tc.want)
			}
		})
	}
	if _, err := openShared(root, "../secret.txt"); !errors.Is(err, errUnsafePath) {
		t.Fatalf("traversal error %v does not wrap errUnsafePath", err)
	}
}

func TestScanSkipsEscapingSymlinksAndPartialDownloads(t *testing.T) {
	base := t.TempDir()
	share, data := filepath.Join(base, "share"), filepath.Join(base, "data")
	mustWrite(t, filepath.Join(base, "outside.txt"), "outside")
	mustWrite(t, filepath.Join(share, "a.txt"), "a")
	mustWrite(t, filepath.Join(share, "dir", "b.txt"), "b")
	mustWrite(t, filepath.Join(share, "movie.mkv"+PartialSuffix), "partial")
	mustWrite(t, filepath.Join(share, "movie.mkv"+ResumeSuffix), "state")
	os.Symlink(filepath.Join(base, "outside.txt"), filepath.Join(share, "escape.txt"))
	os.Symlink("a.txt", filepath.Join(share, "alias.txt"))
	os.MkdirAll(data, 0o700)
	s := newTestStore(t, share, data)
	files, err := s.scan(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range files {
		got[f.Name] = true
	}
	// alias.txt has a.txt's content: one ID, served from the first path.
	want := map[string]bool{"a.txt": true, "dir/b.txt": true}
	if len(got) != len(want) || !got["a.txt"] || !got["dir/b.txt"] {
		t.Fatalf("scan shares %v, want %v", got, want)
	}
}

func TestScanSkipsTheDataDirInsideTheShareFolder(t *testing.T) {
	share := t.TempDir()
	data := filepath.Join(share, "fsdata") // not hidden: the data-dir rule must skip it
	mustWrite(t, filepath.Join(data, "notes.txt"), "{}")
	mustWrite(t, filepath.Join(share, "x.txt"), "x")
	s := newTestStore(t, share, data)
	files, err := s.scan(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 {
		t.Fatalf("scan shares %d files, want only x.txt", len(files))
	}
}

// A file is rehashed when its size, mtime or seal (inode and ctime)
// changes, and only then; the cache survives a restart.
func TestHashCacheIsInvalidatedBySizeOrMtimeChange(t *testing.T) {
	base := t.TempDir()
	share, data := filepath.Join(base, "share"), filepath.Join(base, "data")
	os.MkdirAll(data, 0o700)
	p := filepath.Join(share, "f.txt")
	mustWrite(t, p, "version one")
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	os.Chtimes(p, old, old)

	s := newTestStore(t, share, data)
	first := scanOne(t, s)

	// A restart reads the cache: with the file untouched, the cached
	// hashes are used as they are. Prove it by planting other hashes.
	cachePath := filepath.Join(data, hashCacheFile)
	b, err := os.ReadFile(cachePath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := decodeHashCache(b)
	if err != nil {
		t.Fatal(err)
	}
	e := c["f.txt"]
	e.Hashes = bytes.Repeat([]byte{7}, len(e.Hashes))
	c["f.txt"] = e
	if b, err = encodeHashCache(c); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cachePath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	planted := FileIDOf(e.Size, e.PieceSize, leaves(e.Hashes))
	if got := scanOne(t, newTestStore(t, share, data)); got.ID != planted {
		t.Fatalf("untouched file after a restart: ID %s, want the cached %s, so the cache was not used", got.ID, planted)
	}

	// An edit that puts size and mtime back still moves the ctime, which
	// no system call can set back: the file is rehashed.
	mustWrite(t, p, "version two")
	os.Chtimes(p, old, old)
	s2 := newTestStore(t, share, data)
	if got := scanOne(t, s2); got.ID == first.ID || got.ID == planted || got.ID != idOf(t, []byte("version two")) {
		t.Fatalf("edit keeping size and mtime: ID %s, want that of the new content", got.ID)
	}

	// A cache entry from an older build has no seal: size and mtime alone
	// decide, and a new mtime invalidates it.
	plant := func() string {
		t.Helper()
		b, err := os.ReadFile(cachePath)
		if err != nil {
			t.Fatal(err)
		}
		c, err := decodeHashCache(b)
		if err != nil {
			t.Fatal(err)
		}
		e := c["f.txt"]
		e.Hashes, e.Seal, e.Settled = bytes.Repeat([]byte{9}, len(e.Hashes)), fileSeal{}, false
		c["f.txt"] = e
		if b, err = encodeHashCache(c); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cachePath, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return FileIDOf(e.Size, e.PieceSize, leaves(e.Hashes))
	}
	planted = plant()
	s2 = newTestStore(t, share, data)
	if got := scanOne(t, s2); got.ID != planted {
		t.Fatalf("unsealed cache entry, file untouched: ID %s, want the cached %s", got.ID, planted)
	}
	newer := old.Add(time.Minute)
	os.Chtimes(p, newer, newer)
	second := scanOne(t, s2)
	if second.ID == planted || second.ID != idOf(t, []byte("version two")) {
		t.Fatal("mtime changed but the file was not rehashed")
	}

	// A new size with the same mtime invalidates it too.
	mustWrite(t, p, "version three, longer")
	os.Chtimes(p, newer, newer)
	third := scanOne(t, s2)
	if third.ID == second.ID || third.Size != int64(len("version three, longer")) {
		t.Fatalf("size changed but the file was not rehashed: %+v", third)
	}
	b, err = os.ReadFile(filepath.Join(data, hashCacheFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err = decodeHashCache(b)
	if err != nil || len(c) != 1 || c["f.txt"].Size != third.Size {
		t.Fatalf("saved cache = %+v, %v; want the one current entry", c, err)
	}
}

// A peer's identity is a key created once, private to its user, and
// stable across loads; its ID is derived from the key. A damaged key file,
// or a secret-based identity from an earlier version, is refused with
// what to do.
func TestIdentityIsStableAndPrivate(t *testing.T) {
	dir := t.TempDir()
	a, err := loadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.PeerID != client.PeerIDOf(a.Public()) {
		t.Fatalf("peer ID %s is not derived from the key", a.PeerID)
	}
	b, err := loadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.PeerID != b.PeerID || !a.Key.Equal(b.Key) {
		t.Fatal("identity changed between loads")
	}
	st, err := os.Stat(filepath.Join(dir, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	os.WriteFile(filepath.Join(dir, keyFile), []byte("garbage"), 0o600)
	if _, err := loadIdentity(dir); !errors.Is(err, ErrIdentity) {
		t.Fatalf("corrupt key: err = %v, want ErrIdentity", err)
	}
	old := t.TempDir()
	os.WriteFile(filepath.Join(old, legacyIdentityFile), []byte(`{"peer_id":"alice","secret":"00"}`), 0o600)
	if _, err := loadIdentity(old); !errors.Is(err, ErrIdentity) || !strings.Contains(err.Error(), "Move "+legacyIdentityFile) {
		t.Fatalf("legacy identity.json: err = %v, want ErrIdentity saying to move it", err)
	}
}

func TestDataDirLockKeepsASecondPeerOut(t *testing.T) {
	dir := t.TempDir()
	f, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if g, err := lockDataDir(dir); !errors.Is(err, ErrDataDirLocked) {
		if g != nil {
			g.Close()
		}
		t.Fatalf("second lock: err = %v, want ErrDataDirLocked", err)
	}
}

func newTestStore(t *testing.T, share, data string) *store {
	t.Helper()
	return newTestStoreHidden(t, share, data, false)
}

// newTestStoreHidden opens a store for share whose peer keeps data, with
// a key there as a real peer would have.
func newTestStoreHidden(t *testing.T, share, data string, includeHidden bool) *store {
	t.Helper()
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := loadIdentity(data); err != nil {
		t.Fatal(err)
	}
	s, err := openStore(share, data, includeHidden, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	return s
}

func scanOne(t *testing.T, s *store) *sharedFile {
	t.Helper()
	files, err := s.scan(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 {
		t.Fatalf("scan found %d files, want 1", len(files))
	}
	for _, f := range files {
		return f
	}
	return nil
}

func mustWrite(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The data dir is never shared, whatever the layout: the share folder may
// be the data dir, contain it, reach it through a symlinked path, or hold
// a symlink or a hard link to the key. Dotfiles are shared only on request.
func TestTheDataDirIsNeverShared(t *testing.T) {
	names := func(files map[string]*sharedFile) []string {
		var out []string
		for _, f := range files {
			out = append(out, f.Path)
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		name   string
		layout func(t *testing.T, base string) (share, data string)
		hidden bool
		want   []string
	}{
		{"data dir is the share folder", func(t *testing.T, base string) (string, string) {
			return base, base
		}, false, []string{"pub.txt"}},
		{"data dir inside the share folder", func(t *testing.T, base string) (string, string) {
			return base, filepath.Join(base, "data")
		}, false, []string{"pub.txt"}},
		{"data dir inside, reached through a symlinked path", func(t *testing.T, base string) (string, string) {
			if err := os.Symlink(base, base+"-link"); err != nil {
				t.Fatal(err)
			}
			return base, filepath.Join(base+"-link", "data")
		}, false, []string{"pub.txt"}},
		{"a symlink to the key inside the share folder", func(t *testing.T, base string) (string, string) {
			data := t.TempDir()
			if _, err := loadIdentity(data); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(data, keyFile), filepath.Join(base, "innocent.txt")); err != nil {
				t.Fatal(err)
			}
			return base, data
		}, false, []string{"pub.txt"}},
		{"a hard link to the key inside the share folder", func(t *testing.T, base string) (string, string) {
			data := base + "-data"
			if err := os.MkdirAll(data, 0o700); err != nil {
				t.Fatal(err)
			}
			if _, err := loadIdentity(data); err != nil {
				t.Fatal(err)
			}
			if err := os.Link(filepath.Join(data, keyFile), filepath.Join(base, "innocent.txt")); err != nil {
				t.Fatal(err)
			}
			return base, data
		}, false, []string{"pub.txt"}},
		{"dotfiles are not shared", func(t *testing.T, base string) (string, string) {
			mustWrite(t, filepath.Join(base, ".env"), "TOKEN=x")
			mustWrite(t, filepath.Join(base, ".git", "config"), "[core]")
			return base, t.TempDir()
		}, false, []string{"pub.txt"}},
		{"dotfiles are shared with includeHidden", func(t *testing.T, base string) (string, string) {
			mustWrite(t, filepath.Join(base, ".env"), "TOKEN=x")
			return base, t.TempDir()
		}, true, []string{".env", "pub.txt"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := filepath.Join(t.TempDir(), "share")
			mustWrite(t, filepath.Join(base, "pub.txt"), "public")
			share, data := tc.layout(t, base)
			s := newTestStoreHidden(t, share, data, tc.hidden)
			files, err := s.scan(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if got := names(files); !slices.Equal(got, tc.want) {
				t.Fatalf("shared %q, want %q", got, tc.want)
			}
		})
	}
}
