package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// shBlockRE finds the README's shell blocks.
var shBlockRE = regexp.MustCompile("(?s)```sh\n(.*?)```")

// readmeBlocks returns the README's shell blocks in order, except the
// "Two commands" block: its demo has a test of its own
// (TestDemoRunsToTheEnd) and its `go test ./...` is what runs this test.
func readmeBlocks(t *testing.T) (blocks []string, root string) {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range shBlockRE.FindAllStringSubmatch(string(b), -1) {
		if strings.Contains(m[1], "go test ./...") {
			continue
		}
		blocks = append(blocks, m[1])
	}
	return blocks, root
}

// The README's command blocks run pasted into one shell, top to bottom, on
// a machine with Go: each block's commands succeed, and the files they
// promise appear. The blocks use fixed paths under /tmp and ports
// 7001-7004, 8001-8004, 6901-6904 (trackers), 7011-7013 and 8011-8013
// (a restored cluster) and 7101, as a reader's would; the test clears
// those paths first and stops every process the blocks started, by PID.
func TestREADMEBlocksRunAsWritten(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("go is not on PATH; CI must run the README's blocks")
		}
		t.Skip("go is not on PATH: the README's blocks build the binary with it")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not on PATH")
	}
	blocks, root := readmeBlocks(t)
	if len(blocks) < 3 {
		t.Fatalf("found %d shell blocks in README.md, want the cluster, kill and share blocks at least", len(blocks))
	}
	paths := []string{"/tmp/fileshare", "/tmp/alice-share", "/tmp/hello-copy.txt", "/tmp/jepsen"}
	clear := func() {
		for _, p := range paths {
			os.RemoveAll(p)
		}
		os.Remove(filepath.Join(root, "fileshare"))
	}
	clear()
	t.Cleanup(clear)

	var script strings.Builder
	script.WriteString(`set -euo pipefail
cleanup() {
  for f in /tmp/fileshare/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
  for p in $(jobs -p); do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
`)
	for i, b := range blocks {
		script.WriteString("echo '=== README block " + strconv.Itoa(i+1) + "'\n")
		script.WriteString(b)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's blocks failed (%v); output:\n%s", err, out)
	}
	if b, err := os.ReadFile("/tmp/hello-copy.txt"); err != nil || string(b) != "hello\n" {
		t.Fatalf("the README's get did not produce /tmp/hello-copy.txt with \"hello\": %q, %v\noutput:\n%s", b, err, out)
	}
}
