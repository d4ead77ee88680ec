package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"fileshare/internal/testenv"
)

// shBlockRE finds the README's shell blocks.
var shBlockRE = regexp.MustCompile("(?s)```sh\n(.*?)```")

// twoCommandsRE finds the "Two commands" block by its test command.
var twoCommandsRE = regexp.MustCompile(`(?m)^go test [^\n]*\./\.\.\.`)

// readmeBlocks returns the README's shell blocks in order, except the
// "Two commands" block: its demo has a test of its own
// (TestDemoRunsToTheEnd) and its `go test … ./...` is what runs this test.
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
		if twoCommandsRE.MatchString(m[1]) {
			continue
		}
		blocks = append(blocks, m[1])
	}
	return blocks, root
}

// readmePorts are the fixed loopback ports the README's blocks listen on:
// masters 7001-7004, their HTTP 8001-8004, trackers 6901-6904 (TCP and
// UDP), a restored cluster 7011-7013 and 8011-8013, a peer 7101.
func readmePorts() []int {
	var ports []int
	for _, base := range []int{7000, 8000, 6900} {
		for i := 1; i <= 4; i++ {
			ports = append(ports, base+i)
		}
	}
	for i := 1; i <= 3; i++ {
		ports = append(ports, 7010+i, 8010+i)
	}
	return append(ports, 7101)
}

// takenReadmePort returns a one-line description of the first README port
// that something on this machine already holds ("" when all are free), so a
// reader who left the README's cluster running learns why the test skips.
func takenReadmePort() string {
	for _, port := range readmePorts() {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			continue
		}
		owner := "another process"
		if out, err := exec.Command("ss", "-Hltnp", "sport = :"+strconv.Itoa(port)).Output(); err == nil {
			if m := regexp.MustCompile(`users:\(\("([^"]+)",pid=(\d+)`).FindSubmatch(out); m != nil {
				owner = fmt.Sprintf("%s (pid %s)", m[1], m[2])
			}
		}
		return fmt.Sprintf("port %d, which the README's cluster uses, is taken by %s", port, owner)
	}
	return ""
}

// The README's command blocks run pasted into one shell, top to bottom, on
// a machine with Go: each block's commands succeed, and the files they
// promise appear. The blocks use fixed paths under /tmp and the fixed
// ports of readmePorts, as a reader's would. As root (CI) the blocks run in
// a network and mount namespace of their own, with a private /tmp, so a
// README cluster a reader left running beside the test cannot meet them;
// elsewhere the test first checks that the ports are free and skips,
// naming the port and its holder, when they are not. Either way it stops
// every process the blocks started, by PID.
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
	// tmp is where the blocks' /tmp is: a private directory mounted over
	// /tmp inside the namespaces, or the machine's own /tmp.
	tmp := "/tmp"
	isolated := os.Geteuid() == 0 && haveTools("unshare", "mount", "ip")
	if isolated {
		tmp = t.TempDir()
		os.Chmod(tmp, 0o1777)
	} else {
		if testenv.Required() {
			t.Fatal("the README's blocks must run isolated (root with unshare, mount and ip) because " + testenv.RequireVar + "=1")
		}
		if taken := takenReadmePort(); taken != "" {
			t.Skip(taken + "; stop it (or run the tests as root, where the blocks get a network namespace of their own)")
		}
	}
	paths := []string{"fileshare", "alice-share", "hello-copy.txt", "jepsen"}
	clear := func() {
		if !isolated {
			for _, p := range paths {
				os.RemoveAll(filepath.Join(tmp, p))
			}
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
	if isolated {
		// A new network namespace has only a loopback that is down; a
		// private mount namespace lets the bind mount over /tmp stay
		// invisible to the rest of the machine.
		// When the repository itself lies under /tmp (a CI clone may), it is
		// bound into the private /tmp at the same path first.
		inner := ""
		if rel, ok := strings.CutPrefix(root, "/tmp/"); ok {
			inner = "/" + rel
		}
		cmd = exec.CommandContext(ctx, "unshare", "--net", "--mount", "--propagation", "private",
			"bash", "-c", `set -e; ip link set lo up
if [ -n "$3" ]; then mkdir -p "$1$3"; mount --bind "/tmp$3" "$1$3"; fi
mount --rbind "$1" /tmp
cd "$4"; exec bash -c "$2"`, "readme", tmp, script.String(), inner, root)
	}
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's blocks failed (%v); output:\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(tmp, "hello-copy.txt")); err != nil || string(b) != "hello\n" {
		t.Fatalf("the README's get did not produce /tmp/hello-copy.txt with \"hello\": %q, %v\noutput:\n%s", b, err, out)
	}
}

// haveTools reports whether every named command is on PATH.
func haveTools(names ...string) bool {
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			return false
		}
	}
	return true
}
