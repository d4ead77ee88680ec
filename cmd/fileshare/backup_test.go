package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/freeport"
	"fileshare/internal/proccluster"
)

// The operator's path, through the binary: `cluster backup` writes a
// verified archive from a TLS cluster (admin certificate), `snapshot
// inspect` prints its metadata and counts in text and JSON and names the
// damage in a damaged copy, and three `master --restore` processes with a
// new --initial-cluster serve every registration of the backup.
func TestBackupInspectAndRestoreThroughTheCLI(t *testing.T) {
	c, mlist, _ := listCluster(t)
	var files []client.FileEntry
	for i := range 40 {
		files = append(files, entry(fmt.Sprintf("%02x", i+16), "b", fmt.Sprintf("backup-%02d.dat", i)))
	}
	joinWith(t, c, "127.0.0.1:9301", files[:25]...)
	joinWith(t, c, "127.0.0.1:9302", files[25:]...)
	digest := c.Converge()
	certs := pki{dir: c.TLSDir()}

	dir := t.TempDir()
	out := filepath.Join(dir, "index.fsbackup")
	if _, stderr, code := fileshare(t, 60*time.Second, append([]string{"cluster", "backup", "--out", out, "--masters", mlist}, certs.ca()...)...); code == 0 || !strings.Contains(stderr, "admin") {
		t.Fatalf("backup without the admin certificate: exit %d, want 1 and an error about the admin; stderr:\n%s", code, stderr)
	}
	stdout, stderr, code := fileshare(t, 60*time.Second, append([]string{"cluster", "backup", "--out", out, "--masters", mlist}, certs.admin()...)...)
	if code != 0 || !strings.Contains(stdout, "wrote "+out) {
		t.Fatalf("cluster backup: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}

	stdout, stderr, code = fileshare(t, 30*time.Second, "snapshot", "inspect", out)
	for _, want := range []string{"checksum:    OK", "not who made it", "signature:   present, NOT CHECKED", "peers:       2", "files:       40", "holdings:    40", "digest:      " + digest} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Fatalf("snapshot inspect: exit %d, want %q in:\n%s\nstderr:\n%s", code, want, stdout, stderr)
		}
	}
	stdout, stderr, code = fileshare(t, 30*time.Second, append([]string{"snapshot", "inspect", out}, certs.ca()...)...)
	if code != 0 || !strings.Contains(stdout, "signature:   OK: signed by master m") {
		t.Fatalf("snapshot inspect --trusted-ca-file: exit %d, want the signature checked:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	stdout, _, code = fileshare(t, 30*time.Second, "snapshot", "inspect", "-o", "json", out)
	var js map[string]any
	decodeJSON(t, "snapshot inspect -o json", stdout, &js)
	if code != 0 || js["files"] != 40.0 || js["peers"] != 2.0 || js["holdings"] != 40.0 || js["digest"] != digest || js["raft_index"] == 0.0 {
		t.Fatalf("snapshot inspect -o json: exit %d, got %v", code, js)
	}

	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(dir, "damaged.fsbackup")
	b2 := append([]byte(nil), b...)
	b2[bytes.Index(b2, []byte("FSHRSNAP"))+100] ^= 0x40 // inside the snapshot
	if err := os.WriteFile(damaged, b2, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := fileshare(t, 30*time.Second, "snapshot", "inspect", damaged); code != 1 || !strings.Contains(stderr, "checksum mismatch") {
		t.Fatalf("inspect of a damaged file: exit %d, want 1 and 'checksum mismatch'; stderr:\n%s", code, stderr)
	}
	// Metadata changed and the checksum recomputed, as anyone can: the
	// checksum passes, the signature does not.
	forged := filepath.Join(dir, "forged.fsbackup")
	b3 := append([]byte(nil), b...)
	if i := bytes.Index(b3, []byte(`"raft_term":`)); i < 0 {
		t.Fatal("no raft_term in the archive's metadata")
	} else {
		b3[i+len(`"raft_term":`)]++ // one more in its first digit
	}
	sum := sha256.Sum256(b3[:len(b3)-32])
	copy(b3[len(b3)-32:], sum[:])
	if err := os.WriteFile(forged, b3, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := fileshare(t, 30*time.Second, append([]string{"snapshot", "inspect", forged}, certs.ca()...)...); code != 1 || !strings.Contains(stderr, "signature does not verify") {
		t.Fatalf("inspect of a forged file with the CA: exit %d, want 1 and a bad signature; stderr:\n%s", code, stderr)
	}
	if _, stderr, code := fileshare(t, 30*time.Second, "snapshot", "inspect", filepath.Join(dir, "index.fsbackup.partial")); code != 1 || !strings.Contains(stderr, "no such file") {
		t.Fatalf("inspect of a missing file: exit %d, stderr:\n%s", code, stderr)
	}

	// Restore into three new master processes (plaintext on loopback).
	var initial []proccluster.Voter
	var addrs []string
	for _, id := range []string{"r1", "r2", "r3"} {
		a := freeport.Loopback(t)
		initial = append(initial, proccluster.Voter{ID: id, Addr: a})
		addrs = append(addrs, a)
	}
	var specs []proccluster.Spec
	for i, v := range initial {
		specs = append(specs, proccluster.Spec{ID: v.ID, DataDir: filepath.Join(dir, v.ID), Listen: addrs[i], HTTP: "127.0.0.1:0",
			InitialCluster: initial, Flags: []string{"--restore", out, "--peer-lease", "5m"}})
	}
	masters(t, dir, specs...)
	rlist := strings.Join(addrs, ",")
	if stdout, stderr, code := fileshare(t, 90*time.Second, "cluster", "wait", "--ready", "--timeout", "60s", "--masters", rlist); code != 0 {
		t.Fatalf("restored cluster did not become ready: exit %d\n%s\n%s", code, stdout, stderr)
	}
	rows, _ := clusterStatus(t, rlist)
	for _, r := range rows {
		if r.Status == nil || r.Status.Digest != digest {
			t.Fatalf("restored master %s: %+v, want digest %s", r.Master, r.Status, digest)
		}
	}
	for _, f := range files {
		stdout, stderr, code := fileshare(t, 30*time.Second, "holders", f.ID, "--masters", rlist)
		if code != 0 || !strings.Contains(stdout, "127.0.0.1:930") {
			t.Fatalf("holders of %s after restore: exit %d\n%s\n%s", f.Name, code, stdout, stderr)
		}
	}
}

// `cluster recover` writes peers.json only into the data dir of a master
// that has run, and checks the member list.
func TestClusterRecoverWritesTheRecoveryFile(t *testing.T) {
	dir := t.TempDir()
	if _, stderr, code := fileshare(t, 20*time.Second, "cluster", "recover", "--data-dir", dir, "--members", "m1=127.0.0.1:7001"); code != 1 || !strings.Contains(stderr, "holds no raft.db") {
		t.Fatalf("recover into an empty dir: exit %d, stderr:\n%s", code, stderr)
	}
	if err := os.WriteFile(filepath.Join(dir, "raft.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := fileshare(t, 20*time.Second, "cluster", "recover", "--data-dir", dir, "--members", "m1=0.0.0.0:7001"); code != 1 || !strings.Contains(stderr, "wildcard") {
		t.Fatalf("recover with a wildcard address: exit %d, stderr:\n%s", code, stderr)
	}
	stdout, stderr, code := fileshare(t, 20*time.Second, "cluster", "recover", "--data-dir", dir, "--members", "m1=127.0.0.1:7001,m2=127.0.0.1:7002")
	if code != 0 || !strings.Contains(stdout, "peers.json") {
		t.Fatalf("recover: exit %d\n%s\n%s", code, stdout, stderr)
	}
	b, err := os.ReadFile(filepath.Join(dir, "peers.json"))
	if err != nil || !strings.Contains(string(b), `"id": "m2"`) || !strings.Contains(string(b), `"address": "127.0.0.1:7002"`) {
		t.Fatalf("peers.json: %v\n%s", err, b)
	}
	override := filepath.Join(dir, "peers.json.force-split-brain-risk")
	if _, err := os.Stat(override); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("without --force-split-brain-risk an override file exists (err %v)", err)
	}
	stdout, _, code = fileshare(t, 20*time.Second, "cluster", "recover", "--data-dir", dir, "--members", "m1=127.0.0.1:7001", "--force-split-brain-risk")
	if _, err := os.Stat(override); code != 0 || err != nil || !strings.Contains(stdout, "WARNING") {
		t.Fatalf("--force-split-brain-risk: exit %d, override file: %v, stdout:\n%s", code, err, stdout)
	}
	if _, _, code = fileshare(t, 20*time.Second, "cluster", "recover", "--data-dir", dir, "--members", "m1=127.0.0.1:7001"); code != 0 {
		t.Fatal("recover again without the override failed")
	}
	if _, err := os.Stat(override); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("writing the file again without --force-split-brain-risk kept the override (err %v)", err)
	}
}

// What inspect prints from a file is escaped: a terminal never receives
// a control character from it.
func TestSafeTextEscapesControlCharacters(t *testing.T) {
	for in, want := range map[string]string{
		"m1":                   "m1",
		"10.0.0.1:7000":        "10.0.0.1:7000",
		"/backups/índex 1.bak": "/backups/índex 1.bak",
		"\x1b]0;pwned\x07":     `"\x1b]0;pwned\a"`,
		"v1\u009b31m":          `"v1\u009b31m"`,
		"bad\xffutf8":          `"bad\xffutf8"`,
	} {
		if got := safeText(in); got != want {
			t.Errorf("safeText(%q) = %s, want %s", in, got, want)
		}
	}
}
