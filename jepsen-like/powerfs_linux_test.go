//go:build linux

package jepsenlike

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fileshare/internal/testenv"
)

// requireFUSE skips a test that mounts a FUSE filesystem unless it runs
// as root with /dev/fuse, or fails it when FILESHARE_REQUIRE_ROOT_TESTS=1
// (CI).
func requireFUSE(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t, "mounting a FUSE filesystem")
	if why := powerSupported(); why != "" {
		testenv.Unavailable(t, why)
	}
}

// inPrivateNamespace re-runs the test named name in a private network and
// mount namespace (so no mount reaches the host) and reports whether the
// caller is already there and should do the work.
func inPrivateNamespace(t *testing.T, name string) bool {
	t.Helper()
	if InPrivateNetns() {
		return true
	}
	requireFUSE(t)
	var out bytes.Buffer
	code, err := RunInPrivateNetns(t.Context(), os.Args[0], []string{"-test.run=^" + name + "$", "-test.v", "-test.count=1"}, &out, &out)
	if err != nil || code != 0 || !strings.Contains(out.String(), "--- PASS: "+name) {
		t.Fatalf("in a private namespace: exit %d, %v:\n%s", code, err, out.String())
	}
	return false
}

// A power loss keeps exactly what was made durable: a file's bytes up
// to its last fsync, directory entries up to the last fsync of their
// directory or of a file one of them created (and every entry before,
// as a metadata journal commits in order), and nothing after.
func TestPowerLossKeepsOnlyWhatWasSynced(t *testing.T) {
	if !inPrivateNamespace(t, "TestPowerLossKeepsOnlyWhatWasSynced") {
		return
	}
	base, mnt := t.TempDir(), filepath.Join(t.TempDir(), "mnt")
	p, err := newPowerFS(base, mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	path := func(rel string) string { return filepath.Join(mnt, rel) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	syncDir := func(rel string) {
		d, err := os.Open(path(rel))
		must(err)
		must(d.Sync())
		d.Close()
	}

	// log: 1 KiB synced, then 2 KiB more and an overwrite of the start, unsynced.
	f, err := os.Create(path("log"))
	must(err)
	_, err = f.Write(bytes.Repeat([]byte{'a'}, 1024))
	must(err)
	must(f.Sync())
	_, err = f.Write(bytes.Repeat([]byte{'b'}, 2048))
	must(err)
	_, err = f.WriteAt([]byte("XX"), 0)
	must(err)
	f.Close()
	// snap/: a directory whose files were synced and which was synced.
	must(os.Mkdir(path("snap.tmp"), 0o755))
	g, err := os.Create(path("snap.tmp/state"))
	must(err)
	_, err = g.Write([]byte("state"))
	must(err)
	must(g.Sync())
	g.Close()
	must(os.Rename(path("snap.tmp"), path("snap")))
	syncDir("")
	// trunc: synced at 3 bytes, then truncated to 1, unsynced.
	must(os.WriteFile(path("trunc"), []byte("abc"), 0o644))
	h, _ := os.OpenFile(path("trunc"), os.O_RDWR, 0)
	must(h.Sync())
	must(h.Truncate(1))
	h.Close()

	// old: removed after the last directory sync, so it comes back.
	o, err := os.Create(path("old"))
	must(err)
	_, err = o.Write([]byte("old"))
	must(err)
	must(o.Sync())
	o.Close()
	syncDir("")
	must(os.Remove(path("old")))
	// gone: created, written, never synced, nor its directory.
	must(os.WriteFile(path("gone"), []byte("lost"), 0o644))

	what, err := p.powerLoss(false, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatalf("power loss: %v", err)
	}
	t.Log(what)
	if b, _ := os.ReadFile(path("log")); !bytes.Equal(b, bytes.Repeat([]byte{'a'}, 1024)) {
		t.Errorf("log after the power loss: %d bytes starting %q, want the 1024 synced bytes of 'a'", len(b), b[:min(len(b), 4)])
	}
	if _, err := os.Stat(path("gone")); !os.IsNotExist(err) {
		t.Errorf("an unsynced new file survived the power loss: %v", err)
	}
	if b, err := os.ReadFile(path("snap/state")); err != nil || string(b) != "state" {
		t.Errorf("a synced file in a synced rename: %q, %v", b, err)
	}
	if _, err := os.Stat(path("snap.tmp")); !os.IsNotExist(err) {
		t.Errorf("the synced rename was undone: %v", err)
	}
	if b, err := os.ReadFile(path("old")); err != nil || string(b) != "old" {
		t.Errorf("an unsynced removal was not undone: %q, %v", b, err)
	}
	if b, _ := os.ReadFile(path("trunc")); string(b) != "abc" {
		t.Errorf("an unsynced truncation was not undone: %q", b)
	}
	if !strings.Contains(what, "directory operations") {
		t.Errorf("the note %q does not say what was discarded", what)
	}

	// A torn write keeps a 512-byte-aligned prefix of the last write.
	f, err = os.OpenFile(path("log"), os.O_RDWR, 0)
	must(err)
	_, err = f.WriteAt(bytes.Repeat([]byte{'c'}, 8192), 1024)
	must(err)
	f.Close()
	if _, err := p.powerLoss(true, rand.New(rand.NewPCG(3, 4))); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path("log"))
	kept := len(b) - 1024
	if kept < 0 || kept%512 != 0 || kept > 8192 || !bytes.Equal(b[1024:], bytes.Repeat([]byte{'c'}, kept)) {
		t.Fatalf("torn write kept %d bytes: want a multiple of 512 of the write", kept)
	}
}
