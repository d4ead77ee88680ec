package main

import (
	"fileshare/internal/poll"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The README's first command runs to the end on its own: masters elect a
// leader, peers share, a download survives the leader's death and the copy
// is verified; everything stops.
func TestDemoRunsToTheEnd(t *testing.T) {
	start := time.Now()
	out, stderr, code := fileshare(t, 120*time.Second, "demo")
	if code != 0 {
		t.Fatalf("demo exited %d:\n%s\nstderr:\n%s", code, out, stderr)
	}
	for _, want := range []string{
		"Starting 3 masters",
		"is the leader",
		"carol searches the index",
		"big.bin  64.0 MiB  2",
		"Killing the leader",
		"took over as leader",
		"they match.",
		"lists 3 holders: alice, bob, carol",
		"rejoins as a follower",
		"Demo finished",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	}
	t.Logf("demo took %v (under the test binary, with -race if the tests have it)", time.Since(start).Round(100*time.Millisecond))
}

// The commands demo --keep prints, as they appear in its output.
var (
	statusLineRE = regexp.MustCompile(`(?m)^  fileshare (cluster status .*)$`)
	searchLineRE = regexp.MustCompile(`(?m)^  fileshare (search notes .*)$`)
	getLineRE    = regexp.MustCompile(`(?m)^  fileshare get big.bin (--masters \S+ --trusted-ca-file \S+)`)
)

// demo --keep leaves the network running and prints commands that work
// against it, TLS flags included; SIGTERM stops it cleanly.
func TestDemoKeepPrintsWorkingCommands(t *testing.T) {
	dir := t.TempDir()
	p := startProc(t, filepath.Join(dir, "demo.log"), "demo", "--keep", "--size", "4MiB", "--limit-rate", "4MiB")
	var status, search, get []string
	poll.Until(t, 90*time.Second, "the demo to print its commands", func() bool {
		log, _ := os.ReadFile(p.log)
		st, se, ge := statusLineRE.FindSubmatch(log), searchLineRE.FindSubmatch(log), getLineRE.FindSubmatch(log)
		if st == nil || se == nil || ge == nil {
			return false
		}
		status, search, get = strings.Fields(string(st[1])), strings.Fields(string(se[1])), strings.Fields(string(ge[1]))
		return true
	})
	out, stderr, code := fileshare(t, 20*time.Second, search...)
	if code != 0 || !strings.Contains(out, "notes/recipe.txt") || !strings.Contains(out, "notes/shared-too.txt") {
		t.Fatalf("the printed search command %q (exit %d):\n%s\n%s", search, code, out, stderr)
	}
	out, stderr, code = fileshare(t, 20*time.Second, status...)
	if code != 0 || !strings.Contains(out, "leader") {
		t.Fatalf("the printed cluster status command %q (exit %d):\n%s\n%s", status, code, out, stderr)
	}
	dest := filepath.Join(dir, "recipe.txt")
	if _, stderr, code := fileshare(t, 30*time.Second, append([]string{"get", "recipe.txt", "--out", dest}, get...)...); code != 0 {
		t.Fatalf("get from the demo network exited %d:\n%s", code, stderr)
	}
	if b, _ := os.ReadFile(dest); !strings.HasPrefix(string(b), "Pancakes") {
		t.Fatalf("got %q", b)
	}
	// Without the CA a client refuses to talk to the masters at all.
	if _, stderr, code := fileshare(t, 20*time.Second, "search", "notes", get[0], get[1], "--timeout", "2s"); code == 0 {
		t.Fatalf("search without --trusted-ca-file succeeded against TLS masters: %s", stderr)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		log, _ := os.ReadFile(p.log)
		t.Fatalf("demo --keep exited with %v after SIGTERM:\n%s", err, log)
	}
}
