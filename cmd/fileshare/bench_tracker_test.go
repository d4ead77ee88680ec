package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"fileshare/internal/freeport"
	"fileshare/internal/testenv"
)

// The tracker benchmarks run once at a tiny size against a started
// cluster, so neither rots. The numbers are not checked.
func TestBenchTrackerCommandsRunAtTinySize(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real clusters; skipped with -short")
	}
	for _, tc := range []struct {
		name    string
		args    []string
		summary string
	}{
		{"announce udp", []string{"bench", "announce", "--proto", "udp", "--clients", "4", "--swarms", "20", "--duration", "300ms"}, "announce udp: "},
		{"announce http", []string{"bench", "announce", "--proto", "http", "--clients", "4", "--swarms", "20", "--duration", "300ms", "--insecure"}, "announce http: "},
		{"announce every measurement", []string{"bench", "announce", "--proto", "udp", "--clients", "4", "--swarms", "20", "--duration", "300ms",
			"--measure", "closed,open,find-max,flash-crowd", "--rate", "300", "--step", "200ms", "--find-max-time", "300ms", "--hot-swarms", "2"}, "announce udp max sustained: "},
		{"tracker-scale", []string{"bench", "tracker-scale", "--peers", "2000", "--swarms", "50"}, "tracker-scale: peers=2000 swarms=50 leader_heap_per_peer="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, code := fileshare(t, 2*time.Minute, tc.args...)
			if code != 0 {
				t.Fatalf("exit code %d; stdout:\n%s\nstderr:\n%s", code, out, stderr)
			}
			if !strings.Contains(out, tc.summary) {
				t.Fatalf("no summary line starting %q in:\n%s", tc.summary, out)
			}
			if strings.HasPrefix(tc.name, "announce") && !strings.Contains(out, "errors=0: none, leader_changes=") {
				t.Fatalf("the cluster answered with errors, or no leader changes were counted:\n%s", out)
			}
			// The masters' CPU is measured without being asked.
			if strings.HasPrefix(tc.name, "announce") && !regexp.MustCompile(`cpu_us/announce=[0-9.]+ \(pids \d+,\d+,\d+: `).MatchString(out) {
				t.Errorf("no CPU per announce of the three masters in:\n%s", out)
			}
			if tc.name == "announce every measurement" {
				for _, want := range []string{"announce udp open loop: offered 300/s", "find-max step 1: offered ", "mix=flash-crowd(hot_swarms=2)"} {
					if !strings.Contains(out, want) {
						t.Errorf("no %q in:\n%s", want, out)
					}
				}
			}
			t.Log(strings.TrimSpace(out))
		})
	}
}

// Mistakes in the announce flags are refused at once, saying what to
// write instead.
func TestBenchAnnounceRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--proto", "tcp"}, "use http or udp"},
		{[]string{"--proto", "udp", "--target", "http://127.0.0.1:1/announce"}, "is not a udp:// URL"},
		{[]string{"--mix", "changes=1,completed=3"}, "unknown kind"},
		{[]string{"--target", "udp://127.0.0.1:1/announce", "--cpu-profile", "x"}, "drop --target"},
		{[]string{"--measure", "closed,fastest"}, "use closed, open, find-max or flash-crowd"},
		{[]string{"--measure", "closed,open"}, "give --rate"},
		{[]string{"--measure", "closed", "--find-max"}, "drop --find-max and --flash-crowd"},
		{[]string{"--find-max", "--flash-crowd"}, "--measure find-max,flash-crowd"},
		{[]string{"--rate", "-5"}, "give announces a second > 0"},
		{[]string{"--cpu-pids", "1"}, "--cpu-pids is for a --target tracker"},
		{[]string{"--flash-crowd", "--swarms", "5", "--hot-swarms", "6"}, "--hot-swarms 6: give 1 to --swarms (5)"},
		{[]string{"--target", "udp://127.0.0.1:1/announce", "--cpu-pids", "999999999"}, "CPU time of process 999999999"},
	} {
		out, stderr, code := fileshare(t, time.Minute, append([]string{"bench", "announce"}, tc.args...)...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("bench announce %v: exit %d, stderr %q; want a failure saying %q (stdout %q)", tc.args, code, stderr, tc.want, out)
		}
	}
}

// --write-swarms writes one hex info-hash a line: an opentracker
// whitelist.
func TestBenchAnnounceWritesTheSwarmList(t *testing.T) {
	path := filepath.Join(t.TempDir(), "whitelist.txt")
	if out, stderr, code := fileshare(t, time.Minute, "bench", "announce", "--swarms", "5", "--write-swarms", path); code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, stderr)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	hex40 := regexp.MustCompile(`^[0-9a-f]{40}$`)
	if len(lines) != 5 {
		t.Fatalf("%d lines, want 5:\n%s", len(lines), b)
	}
	for _, l := range lines {
		if !hex40.MatchString(l) {
			t.Fatalf("line %q is not 40 hex digits", l)
		}
	}
}

// scripts/bench-tracker.sh measures opentracker and the cluster side by
// side and prints, for each protocol, the closed-loop rate, the CPU per
// announce, the open-loop maximum and the flash crowd of both, with
// their ratio, and the one-master rate. It needs Debian's opentracker:
// skipped without it, a failure under FILESHARE_REQUIRE_ROOT_TESTS=1
// (CI).
func TestBenchTrackerScriptComparesWithOpentracker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real clusters and opentracker; skipped with -short")
	}
	if _, err := os.Stat("/usr/bin/opentracker"); err != nil {
		testenv.Unavailable(t, "needs /usr/bin/opentracker (apt-get install opentracker)")
	}
	port, err := freeport.Port("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	out := runBenchTrackerScript(t, "OT_PORT="+port)
	num := `[0-9]+(\.[0-9]+)?`
	for _, proto := range []string{"UDP", "HTTP"} {
		for _, what := range []string{"closed loop, announces/s", "CPU us per announce", "open-loop max, announces/s", "flash crowd, announces/s"} {
			ratio := num
			if strings.HasPrefix(what, "open-loop") {
				ratio = `(` + num + `|-)` // a 300 ms search may hold no rate on a busy machine
			}
			re := regexp.MustCompile(`(?m)^\| ` + proto + " " + regexp.QuoteMeta(what) + ` +\| +` + num + ` \| +` + num + ` \| +` + ratio + ` \|$`)
			if !re.MatchString(out) {
				t.Errorf("no %s %q row with both figures and their ratio in:\n%s", proto, what, out)
			}
		}
		if !strings.Contains(out, "opentracker "+strings.ToLower(proto)+": announce "+strings.ToLower(proto)+": ") {
			t.Errorf("no opentracker %s summary in:\n%s", proto, out)
		}
	}
	if !regexp.MustCompile(`(?m)^\| UDP closed loop, announces/s, 1 master +\| +` + num + ` \| +` + num + ` \| +` + num + ` \|$`).MatchString(out) {
		t.Errorf("no one-master row in:\n%s", out)
	}
	if strings.Contains(out, "not authorized") {
		t.Errorf("opentracker refused the benchmark's swarms: the whitelist was not loaded:\n%s", out)
	}
	// The script stopped the opentracker it started.
	if c, err := exec.Command("bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/"+port).CombinedOutput(); err == nil {
		t.Errorf("something still listens on the script's opentracker port %s after it exited: %s", port, c)
	}
}

// Without opentracker the script says so and measures the cluster alone:
// the opentracker column and the ratios are empty.
func TestBenchTrackerScriptRunsWithoutOpentracker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real clusters; skipped with -short")
	}
	out := runBenchTrackerScript(t, "OPENTRACKER="+filepath.Join(t.TempDir(), "no-opentracker"), "ONE_MASTER=0")
	if !strings.Contains(out, "not found: measuring the cluster alone") {
		t.Errorf("the script did not say that opentracker is missing:\n%s", out)
	}
	re := regexp.MustCompile(`(?m)^\| UDP closed loop, announces/s +\| +- \| +[0-9]+ \| +- \|$`)
	if !re.MatchString(out) || strings.Contains(out, "opentracker udp:") || strings.Contains(out, "1 master udp:") {
		t.Errorf("want the cluster's figures alone, no opentracker and no one-master run:\n%s", out)
	}
}

// runBenchTrackerScript runs scripts/bench-tracker.sh at a tiny size
// with env added and returns what it printed.
func runBenchTrackerScript(t *testing.T, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join("..", "..", "scripts", "bench-tracker.sh"), "--warmup", "100")
	cmd.Env = append(os.Environ(), "FILESHARE_AS_BINARY=1", "FILESHARE="+binary(t),
		"DURATION=300ms", "FLASH_DURATION=200ms", "STEP=200ms", "FIND_MAX_TIME=300ms", "CLIENTS=4", "SWARMS=100")
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench-tracker.sh: %v\n%s", err, out.String())
	}
	return out.String()
}
