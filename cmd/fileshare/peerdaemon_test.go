package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"fileshare/internal/freeport"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/master/mastertest"
)

// registeredRE finds the peer daemon's "every file is registered" line and
// its file count.
var registeredRE = regexp.MustCompile(`msg="sharing: every file is registered".* files=(\d+)`)

// `fileshare peer` logs one line once its files are registered, with their
// count, so a person or a README step can wait for it.
func TestPeerDaemonLogsWhenEveryFileIsRegistered(t *testing.T) {
	masters, ca := startMasters(t)
	dir := t.TempDir()
	share := filepath.Join(dir, "share")
	randomFile(t, filepath.Join(share, "a.bin"), 1, 1000)
	randomFile(t, filepath.Join(share, "sub", "b.bin"), 2, 1000)
	daemon := startProc(t, filepath.Join(dir, "peer.log"), "peer", "--masters", masters, "--trusted-ca-file", ca,
		"--data-dir", filepath.Join(dir, "data"), "--share", share, "--listen", "127.0.0.1:0")
	var m []string
	poll.Until(t, 30*time.Second, "the daemon to log that every file is registered", func() bool {
		log, _ := os.ReadFile(daemon.log)
		m = registeredRE.FindStringSubmatch(string(log))
		return m != nil
	})
	if m[1] != "2" {
		t.Fatalf("the daemon says files=%s are registered, want 2", m[1])
	}
	daemon.terminate(t, "peer")
}

// `fileshare peer` pointed at masters that are not running warns within a
// few seconds, naming them, and keeps running (it retries) instead of
// falling silent after "sharing".
func TestPeerDaemonWarnsWhenNoMasterAnswers(t *testing.T) {
	dir := t.TempDir()
	nowhere := freeport.Loopback(t)
	daemon := startProc(t, filepath.Join(dir, "peer.log"), "peer", "--masters", nowhere,
		"--data-dir", filepath.Join(dir, "data"), "--share", t.TempDir(), "--listen", "127.0.0.1:0")
	var log []byte
	poll.Until(t, 20*time.Second, "the daemon to warn that no master answers", func() bool {
		log, _ = os.ReadFile(daemon.log)
		return strings.Contains(string(log), `level=WARN msg="cannot reach any master; retrying" `) && strings.Contains(string(log), "masters="+nowhere)
	})
	if strings.Contains(string(log), "fileshare: ") || strings.Contains(string(log), "level=ERROR") {
		t.Fatalf("the daemon gave up; an unreachable cluster must not stop it:\n%s", log)
	}
}

// `fileshare peer` whose registrations the masters refuse for good (over
// --max-files-per-peer) exits with status 1 and says what was refused and
// what to do, instead of retrying forever.
func TestPeerDaemonExitsOnAPermanentRefusal(t *testing.T) {
	c := mastertest.New(t, 3, mastertest.Options{TLS: true, Config: func(cfg *master.Config) { cfg.MaxFilesPerPeer = 1 }})
	masters, ca := strings.Join(c.Addrs(), ","), filepath.Join(c.TLSDir(), "ca.pem")
	dir := t.TempDir()
	share := filepath.Join(dir, "share")
	randomFile(t, filepath.Join(share, "a.bin"), 1, 1000)
	randomFile(t, filepath.Join(share, "b.bin"), 2, 1000)
	_, stderr, code := fileshare(t, 60*time.Second, "peer", "--masters", masters, "--trusted-ca-file", ca,
		"--data-dir", filepath.Join(dir, "data"), "--share", share, "--listen", "127.0.0.1:0")
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, stderr)
	}
	for _, want := range []string{"fileshare: the index refused this peer for good", "register 2 files", "files per peer", "share fewer files"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}
