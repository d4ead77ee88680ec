//go:build linux

package jepsenlike

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fileshare/internal/testenv"
)

// requireRootOnly skips a test that needs root, or fails it when
// FILESHARE_REQUIRE_ROOT_TESTS=1 (CI).
func requireRootOnly(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t, "mounting a tmpfs in a private mount namespace")
}

// A disk-full fault really fills the master's own filesystem: a write in
// its data dir then fails with ENOSPC, and after the heal it succeeds.
// The filesystems live in a private mount namespace (this test re-runs
// itself there), so the host never sees them, and close unmounts them.
func TestDiskFullFillsTheMastersOwnFilesystem(t *testing.T) {
	if !InPrivateNetns() {
		requireRootOnly(t)
		var out bytes.Buffer
		code, err := RunInPrivateNetns(t.Context(), os.Args[0], []string{"-test.run=^TestDiskFullFillsTheMastersOwnFilesystem$", "-test.v", "-test.count=1"}, &out, &out)
		if err != nil || code != 0 || !strings.Contains(out.String(), "--- PASS: TestDiskFullFillsTheMastersOwnFilesystem") {
			t.Fatalf("in a private namespace: exit %d, %v:\n%s", code, err, out.String())
		}
		mounts, _ := os.ReadFile("/proc/self/mounts")
		if strings.Contains(string(mounts), "/disks/m1 ") {
			t.Fatalf("a master's filesystem reached the host's mounts:\n%s", mounts)
		}
		return
	}
	if err := PrepareNetns(); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "disks")
	d, err := newDisks(root, []string{"m1", "m2"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.close("") })
	probe := func(i int) error {
		return os.WriteFile(filepath.Join(d.dataDir(i), "probe"), make([]byte, 64<<10), 0o644)
	}
	n, err := d.fill(0)
	if err != nil {
		t.Fatal(err)
	}
	if n < diskSize*9/10 || n > diskSize {
		t.Fatalf("the filler is %d bytes, want about %d", n, diskSize)
	}
	if err := probe(0); !isNoSpace(err) {
		t.Fatalf("a write on the full filesystem: %v, want ENOSPC", err)
	}
	if err := probe(1); err != nil {
		t.Fatalf("the other master's filesystem is full too: %v", err)
	}
	if err := d.free(0); err != nil {
		t.Fatal(err)
	}
	if err := probe(0); err != nil {
		t.Fatalf("after the heal: %v", err)
	}
	keep := filepath.Join(t.TempDir(), "kept")
	if err := d.close(keep); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(keep, "m1", "probe")); err != nil {
		t.Fatalf("--keep-data did not keep the data dir: %v", err)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatalf("close left the mount points behind: %v", err)
	}
}
