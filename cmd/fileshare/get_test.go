package main

import (
	"bytes"
	"crypto/sha256"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fileshare/master/mastertest"
	"fileshare/peer"
)

// getCluster runs 3 masters with TLS in this process, like startMasters,
// and also returns the cluster, so a test can stop members, and one peer
// sharing name (size random bytes) already registered. It returns the
// cluster, its --masters value, its CA's path and the file's content.
func getCluster(t *testing.T, name string, size int) (c *mastertest.T, masters, ca string, data []byte) {
	t.Helper()
	c = mastertest.New(t, 3, mastertest.Options{TLS: true})
	dir := t.TempDir()
	data = randomFile(t, filepath.Join(dir, "share", name), 7, size)
	holder, err := peer.New(peer.Config{Masters: c.Addrs(), CA: c.CA(), DataDir: filepath.Join(dir, "data"), ShareDir: filepath.Join(dir, "share"), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Close() })
	if err := holder.Rescan(t.Context()); err != nil {
		t.Fatal(err)
	}
	return c, strings.Join(c.Addrs(), ","), filepath.Join(c.TLSDir(), "ca.pem"), data
}

// get --out - writes exactly the file's bytes to stdout and nothing
// else: the narration, progress and summary all go to stderr, so
// `get --out - > file` and `get … | tool` see only data.
func TestGetToStdoutWritesOnlyTheFile(t *testing.T) {
	_, masters, ca, data := getCluster(t, "docs/notes.bin", 3<<20+12345)
	dir := t.TempDir()
	stdout, stderr, code := fileshare(t, 60*time.Second, "get", "notes.bin", "--out", "-", "--masters", masters, "--trusted-ca-file", ca, "--data-dir", dir, "--limit-rate", "1MiB")
	if code != 0 {
		t.Fatalf("get --out - exited %d; stderr:\n%s", code, stderr)
	}
	if !bytes.Equal([]byte(stdout), data) {
		t.Fatalf("stdout holds %d bytes, want exactly the file's %d (stderr:\n%s)", len(stdout), len(data), stderr)
	}
	for _, want := range []string{"getting docs/notes.bin", "13 pieces", "progress: ", "wrote to stdout"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	t.Logf("get --out - told stderr:\n%s", stderr)
	if m, _ := filepath.Glob(filepath.Join(dir, "stdout-*")); len(m) != 0 {
		t.Errorf("the copy behind stdout was left in the data dir: %v", m)
	}

	// A file written with --out PATH: stdout stays empty too.
	dest := filepath.Join(dir, "copy.bin")
	stdout, stderr, code = fileshare(t, 60*time.Second, "get", "notes.bin", "--out", dest, "--masters", masters, "--trusted-ca-file", ca, "-o", "text")
	if code != 0 || stdout != "" || !strings.Contains(stderr, "saved "+dest) {
		t.Fatalf("get --out PATH -o text: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	if sha256File(t, dest) != sha256.Sum256(data) {
		t.Fatal("the file saved with --out PATH differs from the original")
	}

	_, stderr, code = fileshare(t, 20*time.Second, "get", "notes.bin", "--out", "-", "-o", "json", "--masters", masters, "--trusted-ca-file", ca)
	if code != 1 || !strings.Contains(stderr, "both write to stdout") {
		t.Fatalf("get --out - -o json: exit %d, stderr:\n%s", code, stderr)
	}
}

// With a majority of the masters down but the holders up, a file is still
// downloadable with --read stale (one master's copy of the index is
// enough), and the default, linearizable get fails with an error that
// says to use --read stale.
func TestGetReadStaleWithoutAMajority(t *testing.T) {
	c, masters, ca, data := getCluster(t, "report.pdf", 1<<20)
	c.Converge() // every master's index lists the holder
	survivor := c.Follower(c.Leader())
	for i := range c.Len() {
		if i != survivor {
			c.Stop(i)
		}
	}

	_, stderr, code := fileshare(t, 60*time.Second, "get", "report.pdf", "--masters", masters, "--trusted-ca-file", ca, "--stall-timeout", "3s", "--out", filepath.Join(t.TempDir(), "x"))
	if code != 1 || !strings.Contains(stderr, "--read stale") {
		t.Fatalf("linearizable get with no majority: exit %d, want 1 and a hint of --read stale; stderr:\n%s", code, stderr)
	}
	t.Logf("without a majority, get says: %s", stderr)

	dest := filepath.Join(t.TempDir(), "report.pdf")
	_, stderr, code = fileshare(t, 60*time.Second, "get", "report.pdf", "--read", "stale", "--masters", masters, "--trusted-ca-file", ca, "--stall-timeout", "10s", "--out", dest)
	if code != 0 {
		t.Fatalf("get --read stale with one master of three: exit %d; stderr:\n%s", code, stderr)
	}
	if sha256File(t, dest) != sha256.Sum256(data) {
		t.Fatal("the file downloaded with --read stale differs from the original")
	}

	_, stderr, code = fileshare(t, 20*time.Second, "get", "report.pdf", "--read", "fresh")
	if code != 1 || !strings.Contains(stderr, "--read") || !strings.Contains(stderr, "stale, leader or linearizable") {
		t.Fatalf("get --read fresh: exit %d, stderr:\n%s", code, stderr)
	}
}
