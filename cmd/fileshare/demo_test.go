package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"fileshare/internal/poll"
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
		"lists all six tracker URLs in one tier",
		"is told: 1 seeder, 1 leecher, peers seeder (127.0.0.1:6881)",
		"peers leecher (127.0.0.1:6882) and seeder (127.0.0.1:6881)",
		"Every master is killed at once",
		"scrape of m1 over UDP : 2 seeders, 1 leecher, 1 completed download",
		"scrape of m2 over HTTP: 2 seeders, 1 leecher, 1 completed download",
		"scrape of m3 over UDP : 2 seeders, 1 leecher, 1 completed download",
		"Demo finished",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	// With a real BitTorrent client on the machine (CI installs aria2),
	// real bytes move through the trackers; without one the demo says how
	// to see that.
	realClient := "No real BitTorrent client on this machine"
	if _, err := exec.LookPath("aria2c"); err == nil {
		realClient = "its SHA-256 matches the original's"
	} else if os.Getenv("CI") != "" {
		t.Error("aria2c is not on PATH; CI installs it so that the demo moves real bytes through the trackers")
	}
	if !strings.Contains(out, realClient) {
		t.Errorf("demo output lacks %q", realClient)
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	}
	t.Logf("demo took %v (under the test binary, with -race if the tests have it)", time.Since(start).Round(100*time.Millisecond))
}

// The commands demo --keep prints, as they appear in its output, each
// after the program's name: "go run ./cmd/fileshare", "fileshare" or a
// path (the regexps skip it).
var (
	statusLineRE = regexp.MustCompile(`(?m)^  (?:go run \S+|\S+) (cluster status .*)$`)
	searchLineRE = regexp.MustCompile(`(?m)^  (?:go run \S+|\S+) (search notes .*)$`)
	getLineRE    = regexp.MustCompile(`(?m)^  (?:go run \S+|\S+) get big.bin (--masters \S+ --trusted-ca-file \S+)`)
	peerLineRE   = regexp.MustCompile(`(?m)^  mkdir -p (\S+) && (go run \S+|\S+) peer .*--share (\S+) `)
)

// demo --keep leaves the network running and prints commands that work
// against it, TLS flags included; SIGTERM stops it cleanly.
func TestDemoKeepPrintsWorkingCommands(t *testing.T) {
	dir := t.TempDir()
	p := startProc(t, filepath.Join(dir, "demo.log"), "demo", "--keep", "--size", "4MiB", "--limit-rate", "4MiB")
	var status, search, get []string
	var peerLine [][]byte
	poll.Until(t, 90*time.Second, "the demo to print its commands", func() bool {
		log, _ := os.ReadFile(p.log)
		st, se, ge := statusLineRE.FindSubmatch(log), searchLineRE.FindSubmatch(log), getLineRE.FindSubmatch(log)
		if st == nil || se == nil || ge == nil {
			return false
		}
		status, search, get = strings.Fields(string(st[1])), strings.Fields(string(se[1])), strings.Fields(string(ge[1]))
		peerLine = peerLineRE.FindSubmatch(log)
		return true
	})
	// The peer command creates the folder it shares, and every command
	// names the program that is running, as the user can type it.
	if peerLine == nil || string(peerLine[1]) != string(peerLine[3]) {
		log, _ := os.ReadFile(p.log)
		t.Fatalf("the printed peer command does not create its --share folder first:\n%s", log)
	}
	if prog := string(peerLine[2]); builtByGoRun(binary(t)) && prog != "go run ./cmd/fileshare" {
		t.Errorf("the demo runs from Go's build folders, but its commands start with %q, not go run ./cmd/fileshare", prog)
	} else if !builtByGoRun(binary(t)) && prog != binary(t) && prog != filepath.Base(binary(t)) {
		t.Errorf("the demo's commands start with %q, not the running program %s", prog, binary(t))
	}
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
	// The printed dashboard URLs answer, and so does each master's /metrics.
	var urls [][]byte
	poll.Until(t, 10*time.Second, "the demo to print the dashboard URLs", func() bool {
		log, _ := os.ReadFile(p.log)
		urls = dashboardLineRE.FindSubmatch(log)
		return urls != nil
	})
	for _, u := range strings.Fields(string(urls[1])) {
		for _, page := range []string{u, strings.TrimSuffix(u, "ui/") + "metrics"} {
			resp, err := http.Get(page)
			if err != nil {
				t.Fatalf("GET %s: %v", page, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s: %s", page, resp.Status)
			}
		}
	}
	p.terminate(t, "demo --keep")
}

// dashboardLineRE finds the dashboard URLs demo --keep prints.
var dashboardLineRE = regexp.MustCompile(`Watch the cluster live in a browser: (.*)`)

// The program name the demo prints is one a user can run: go run for an
// executable in Go's temporary build folders or build cache (where go run
// leaves it), the executable itself otherwise.
func TestBuiltByGoRun(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("GOCACHE", cache)
	for path, want := range map[string]bool{
		filepath.Join(os.TempDir(), "go-build1234", "b001", "exe", "fileshare"): true,
		filepath.Join(cache, "7f", "7f3a-d", "fileshare"):                       true,
		"/usr/local/bin/fileshare":                                              false,
		filepath.Join(os.TempDir(), "fileshare"):                                false,
	} {
		if got := builtByGoRun(path); got != want {
			t.Errorf("builtByGoRun(%s) = %v, want %v", path, got, want)
		}
	}
	for in, want := range map[string]string{"/usr/bin/fileshare": "/usr/bin/fileshare", "/my dir/fileshare": "'/my dir/fileshare'", "it's": `'it'\''s'`} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
