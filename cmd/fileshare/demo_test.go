package main

import (
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

var mastersFlagRE = regexp.MustCompile(`fileshare search notes --masters (\S+)`)

// demo --keep leaves the network running and prints commands that work
// against it; SIGTERM stops it cleanly.
func TestDemoKeepPrintsWorkingCommands(t *testing.T) {
	dir := t.TempDir()
	p := startProc(t, filepath.Join(dir, "demo.log"), "demo", "--keep", "--size", "4MiB", "--limit-rate", "4MiB")
	var masters string
	waitUntil(t, 90*time.Second, "the demo to print its commands", func() bool {
		log, _ := os.ReadFile(p.log)
		if m := mastersFlagRE.FindSubmatch(log); m != nil {
			masters = string(m[1])
			return true
		}
		return false
	})
	out, stderr, code := fileshare(t, 20*time.Second, "search", "notes", "--masters", masters)
	if code != 0 || !strings.Contains(out, "notes/recipe.txt") || !strings.Contains(out, "notes/shared-too.txt") {
		t.Fatalf("the printed search command (exit %d):\n%s\n%s", code, out, stderr)
	}
	out, stderr, code = fileshare(t, 20*time.Second, "cluster", "status", "--masters", masters)
	if code != 0 || !strings.Contains(out, "leader") {
		t.Fatalf("the printed cluster status command (exit %d):\n%s\n%s", code, out, stderr)
	}
	dest := filepath.Join(dir, "recipe.txt")
	if _, stderr, code := fileshare(t, 30*time.Second, "get", "recipe.txt", "--masters", masters, "--out", dest); code != 0 {
		t.Fatalf("get from the demo network exited %d:\n%s", code, stderr)
	}
	if b, _ := os.ReadFile(dest); !strings.HasPrefix(string(b), "Pancakes") {
		t.Fatalf("got %q", b)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		log, _ := os.ReadFile(p.log)
		t.Fatalf("demo --keep exited with %v after SIGTERM:\n%s", err, log)
	}
}
