package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"fileshare/internal/testenv"
	jepsenlike "fileshare/jepsen-like"
)

// runJepsen runs `fileshare jepsen args...` (this test binary doubles as
// fileshare, and so do the masters it starts) with extra environment, and
// returns its output, exit code and results.json. The output directory is
// a temporary one unless args name one with --out.
func runJepsen(t *testing.T, env []string, args ...string) (string, int, *jepsenlike.Results) {
	t.Helper()
	out := t.TempDir()
	for i, a := range args {
		if a == "--out" && i+1 < len(args) {
			out = args[i+1] // the caller wants to read more of the output
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), append([]string{"jepsen", "--out", out, "--log-level", "warn"}, args...)...)
	cmd.Env = append(append(os.Environ(), "FILESHARE_AS_BINARY=1"), env...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run fileshare jepsen: %v", err)
	}
	res, _ := jepsenlike.ReadResults(out) // nil when the run could not start
	return buf.String(), code, res
}

// describe is what a failed assertion prints: enough to see what broke
// without the output directory, which the test removes.
func describe(out string, res *jepsenlike.Results) string {
	var b strings.Builder
	b.WriteString(out)
	if res != nil {
		for name, c := range res.Checkers {
			b.WriteString("\n" + name + ": " + string(c.Verdict) + ": " + c.Explanation)
		}
		b.WriteString("\nproblems: " + strings.Join(res.Problems, "; "))
	}
	return b.String()
}

// rootOrSkip skips a test that needs root and iptables, unless
// FILESHARE_REQUIRE_ROOT_TESTS=1 (CI), which makes it fail instead.
func rootOrSkip(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t, "dropping packets with iptables")
	testenv.NeedTool(t, "iptables", "iptables")
}

func checkValidRun(t *testing.T, out string, code int, res *jepsenlike.Results) {
	t.Helper()
	if code != 0 || res == nil || res.Verdict != jepsenlike.Valid {
		t.Fatalf("exit code %d, want 0 (valid):\n%s", code, describe(out, res))
	}
	if res.Ops.OK < 500 || res.SetFull.Acknowledged == 0 {
		t.Fatalf("only %d ok ops and %d acknowledged holdings: the run tested little:\n%s", res.Ops.OK, res.SetFull.Acknowledged, describe(out, res))
	}
	if len(res.Availability.Recovery) < 3 {
		t.Fatalf("%d faults happened, want at least 3:\n%s", len(res.Availability.Recovery), describe(out, res))
	}
	if !strings.Contains(out, "verdict: valid") {
		t.Fatalf("stdout does not state the verdict:\n%s", out)
	}
}

// A short run under kills, pauses and partitions (through the userspace
// proxies, which need no root) finds nothing wrong with a correct
// cluster: nothing acknowledged is lost and every read is linearizable.
func TestJepsenShortRunWithProxiesIsValid(t *testing.T) {
	out, code, res := runJepsen(t, nil, "--nodes", "3", "--time", "20s", "--interval", "4s",
		"--nemesis", "kill,pause,partition", "--seed", "11", "--net", "proxy", "--rate", "150", "--files", "10")
	checkValidRun(t, out, code, res)
	if !strings.Contains(res.Net, "proxies") {
		t.Fatalf("--net proxy used %q", res.Net)
	}
}

// The same with the kernel dropping packets (iptables in a private
// network namespace), and the partition kinds that need per-link cuts.
func TestJepsenShortRunWithIptablesIsValid(t *testing.T) {
	rootOrSkip(t)
	out, code, res := runJepsen(t, nil, "--nodes", "3", "--time", "20s", "--interval", "4s",
		"--nemesis", "kill,partition,one-way,ring,bridge", "--seed", "12", "--net", "iptables", "--rate", "150", "--files", "10")
	checkValidRun(t, out, code, res)
	if !strings.Contains(res.Net, "iptables") || !strings.Contains(res.Net, "private network namespace") {
		t.Fatalf("--net iptables used %q", res.Net)
	}
}

// The harness must catch a broken system. Masters that answer reads from
// their local index (FILESHARE_UNSAFE_FAULT=stale-reads) serve stale
// lookups while partitioned; the clients pinned to the minority see them
// and porcupine finds no linearization. Faults last 2–4 s and a client
// gives up after 1 s, so several stale reads land in most windows. Whether
// one lands in a window depends on timing, and on a machine loaded by other
// tests a 20 s run can miss them all, so a second seed gets its chance:
// the bug must be caught within two runs.
func TestJepsenCatchesStaleReads(t *testing.T) {
	var report []string
	for _, seed := range []string{"3", "4"} {
		out, code, res := runJepsen(t, []string{"FILESHARE_UNSAFE_FAULT=stale-reads"}, "--nodes", "3", "--time", "20s", "--interval", "5s",
			"--nemesis", "partition,isolate-leader", "--seed", seed, "--op-timeout", "1s", "--concurrency", "20", "--files", "3")
		if res != nil && res.UnsafeFault != "stale-reads" {
			t.Fatalf("results do not record the deliberate fault: %q", res.UnsafeFault)
		}
		if code == 1 && res != nil && res.Linearizable.Verdict == jepsenlike.Invalid {
			return
		}
		report = append(report, fmt.Sprintf("seed %s: exit code %d, want 1 with linearizability invalid:\n%s", seed, code, describe(out, res)))
	}
	t.Fatal(strings.Join(report, "\n"))
}

// A leader that acknowledges writes before they commit
// (FILESHARE_UNSAFE_FAULT=ack-before-commit) loses them when it is
// isolated or killed: the checkers must see lost writes or stale reads.
func TestJepsenCatchesAckBeforeCommit(t *testing.T) {
	out, code, res := runJepsen(t, []string{"FILESHARE_UNSAFE_FAULT=ack-before-commit"}, "--nodes", "3", "--time", "20s", "--interval", "4s",
		"--nemesis", "isolate-leader,kill-leader", "--seed", "3", "--op-timeout", "1s", "--concurrency", "20", "--files", "3")
	if code != 1 || res == nil || res.Verdict != jepsenlike.Invalid {
		t.Fatalf("exit code %d, want 1 (invalid):\n%s", code, describe(out, res))
	}
	if res.Linearizable.Verdict != jepsenlike.Invalid && res.SetFull.Verdict != jepsenlike.Invalid {
		t.Fatalf("neither linearizability nor set-full found the bug:\n%s", describe(out, res))
	}
}

// The tracker workload under kills, pauses and partitions finds nothing
// wrong with a correct cluster: every acknowledged started is in every
// master's final peer list, no acknowledged stop comes back, and every
// master lists the same peers.
func TestJepsenTrackerRunIsValid(t *testing.T) {
	out, code, res := runJepsen(t, nil, "--nodes", "3", "--time", "20s", "--interval", "4s",
		"--nemesis", "kill,pause,partition", "--seed", "1", "--net", "proxy", "--rate", "150", "--workload", "tracker", "--torrents", "6")
	if code != 0 || res == nil || res.Verdict != jepsenlike.Valid || res.Tracker == nil {
		t.Fatalf("exit code %d, want 0 (valid):\n%s", code, describe(out, res))
	}
	if res.Tracker.Acknowledged == 0 || res.Tracker.Removed == 0 || res.OpsByType[jepsenlike.OpStarted].OK < 200 {
		t.Fatalf("%d acknowledged entries, %d acknowledged stops, %d ok starteds: the run tested little:\n%s",
			res.Tracker.Acknowledged, res.Tracker.Removed, res.OpsByType[jepsenlike.OpStarted].OK, describe(out, res))
	}
	if _, ok := res.Checkers["linearizable"]; ok || res.OpsByType[jepsenlike.OpRegister].Total != 0 {
		t.Fatalf("--workload tracker ran the index workload too:\n%s", describe(out, res))
	}
	if len(res.Availability.Recovery) < 3 {
		t.Fatalf("%d faults happened, want at least 3:\n%s", len(res.Availability.Recovery), describe(out, res))
	}
}

// The tracker checkers catch a leader that acknowledges announces before
// they commit (FILESHARE_UNSAFE_FAULT=ack-before-commit: the tracker's
// membership changes go through the same batcher as index writes):
// isolating or killing it loses acknowledged starteds and stops.
func TestJepsenTrackerCatchesAckBeforeCommit(t *testing.T) {
	out, code, res := runJepsen(t, []string{"FILESHARE_UNSAFE_FAULT=ack-before-commit"}, "--nodes", "3", "--time", "20s", "--interval", "4s",
		"--nemesis", "isolate-leader,kill-leader", "--seed", "3", "--concurrency", "20", "--workload", "tracker")
	if code != 1 || res == nil || res.Verdict != jepsenlike.Invalid || res.Tracker == nil {
		t.Fatalf("exit code %d, want 1 (invalid):\n%s", code, describe(out, res))
	}
	if res.Tracker.Verdict != jepsenlike.Invalid || len(res.Tracker.Lost)+len(res.Tracker.Resurrected) == 0 {
		t.Fatalf("tracker-set did not find lost starteds or undone stops:\n%s", describe(out, res))
	}
}

func TestJepsenCLIMistakesExit2WithAClearMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown fault kind", []string{"--nemesis", "kill,meteor"}, `unknown fault kind "meteor"`},
		{"four nodes", []string{"--nodes", "4"}, "use 3 or 5"},
		{"unknown flag", []string{"--bogus"}, "unknown flag: --bogus"},
		{"unknown workload", []string{"--workload", "index,dht"}, `unknown workload "dht"`},
		{"bad net", []string{"--net", "carrier-pigeon", "--nemesis", "partition"}, "use auto, iptables or proxy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code, _ := runJepsen(t, nil, tc.args...)
			if code != 2 || !strings.Contains(out, tc.want) {
				t.Fatalf("exit code %d, want 2 and a message containing %q:\n%s", code, tc.want, out)
			}
		})
	}
}

func TestJepsenHelpNamesTheExitCodes(t *testing.T) {
	stdout, _, code := fileshare(t, 10*time.Second, "jepsen", "--help")
	if code != 0 || !strings.Contains(stdout, "0 valid, 1 invalid") || !strings.Contains(stdout, "--nemesis") {
		t.Fatalf("help (exit %d):\n%s", code, stdout)
	}
}

// readSchedule reads the schedule.json of a run's output directory.
func readSchedule(t *testing.T, out string) jepsenlike.ScheduleDoc {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, jepsenlike.ScheduleFile))
	if err != nil {
		t.Fatal(err)
	}
	var doc jepsenlike.ScheduleDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// Disk-full and corrupt faults are carried out and reported for what
// they were, whatever the masters make of them: a filled filesystem says
// so; every corrupt fault names the damage and how the master took it; a
// master that refused to start on the damage is listed as such, not as a
// crash, and was replaced; one that exited otherwise is a crash; and the
// cluster ends healthy with every master compared.
func TestJepsenDiskAndCorruptFaultsAreReportedForWhatTheyWere(t *testing.T) {
	testenv.NeedRoot(t, "mounting a tmpfs per master in a private mount namespace")
	dir := t.TempDir()
	out, code, res := runJepsen(t, nil, "--out", dir, "--nodes", "3", "--time", "30s", "--interval", "6s",
		"--nemesis", "disk-full,corrupt", "--seed", "2", "--rate", "150", "--files", "10")
	if res == nil || code == 2 {
		t.Fatalf("exit code %d: the run could not be judged:\n%s", code, describe(out, res))
	}
	if !strings.Contains(out, "verdict: "+string(res.Verdict)) || len(res.Skipped) != 0 {
		t.Fatalf("stdout does not state the verdict, or disk-full was skipped as root (%v):\n%s", res.Skipped, out)
	}
	doc := readSchedule(t, dir)
	selfStops := map[string]int{}
	for _, s := range res.Logs.SelfStops {
		selfStops[s.Node]++
	}
	crashed := map[string]int{}
	for _, c := range res.Logs.Crashes {
		crashed[c.Node]++
	}
	var full, corrupt int
	for _, w := range doc.Realised {
		notes := strings.Join(w.Notes, "; ")
		switch w.Kind {
		case jepsenlike.KindDiskFull:
			full++
			if !strings.Contains(notes, "filled the filesystem of "+w.Targets[0]) {
				t.Errorf("disk-full fault %d: %s", w.Seq, notes)
			}
		case jepsenlike.KindCorrupt:
			corrupt++
			if len(w.Targets) != 1 || !strings.Contains(notes, "flipped bytes of") && !strings.Contains(notes, "truncated") {
				t.Errorf("corrupt fault %d does not say what it damaged: %s", w.Seq, notes)
				continue
			}
			target := w.Targets[0]
			switch {
			case strings.Contains(notes, "refused to start: damaged data dir"):
				if selfStops[target] == 0 || !strings.Contains(notes, "replaced "+target) {
					t.Errorf("corrupt fault %d: %s refused, but it is not listed as a self-stop (%v) or was not replaced: %s", w.Seq, target, res.Logs.SelfStops, notes)
				}
			case strings.Contains(notes, "exited after the damage"):
				if crashed[target] == 0 {
					t.Errorf("corrupt fault %d: %s exited without a refusal, but no crash is listed: %s", w.Seq, target, notes)
				}
			case !strings.Contains(notes, "started on its damaged data dir"):
				t.Errorf("corrupt fault %d does not say how %s took the damage: %s", w.Seq, target, notes)
			}
		}
		// The run may end while the last heal's comparison waits for the
		// writes in flight; the final digests check covers that one.
		if w.HealDigests == nil && w.Seq != doc.Realised[len(doc.Realised)-1].Seq {
			t.Errorf("fault %d: the masters were not compared after its heal", w.Seq)
		}
	}
	if full == 0 || corrupt == 0 {
		t.Fatalf("seed 2 drew %d disk-full and %d corrupt faults, want both", full, corrupt)
	}
	for _, p := range res.Problems {
		if strings.Contains(p, "after the final heal") {
			t.Fatalf("the cluster did not end healthy: %s", describe(out, res))
		}
	}
	if res.Digests.Verdict == jepsenlike.Unknown {
		t.Fatalf("not every master was compared at the end: %s", res.Digests.Explanation)
	}
	t.Logf("verdict %s: %s", res.Verdict, res.Summary)
}

// fuseOrSkip skips a test whose masters run on the harness's power-loss
// filesystem (FUSE) unless it runs as root with /dev/fuse, or fails it
// when FILESHARE_REQUIRE_ROOT_TESTS=1 (CI).
func fuseOrSkip(t *testing.T) {
	t.Helper()
	_, err := os.Stat("/dev/fuse")
	if os.Geteuid() == 0 && err == nil && runtime.GOOS == "linux" {
		return
	}
	testenv.Unavailable(t, "needs root on Linux with /dev/fuse (it mounts a FUSE filesystem per master in a private mount namespace)")
}

// The power-loss fault bites: masters that skip fsync
// (FILESHARE_UNSAFE_NO_FSYNC=1) acknowledge writes that only the page
// cache holds, and when every master loses power at once those writes
// vanish. The checkers must report the lost acknowledged writes and the
// run must exit 1; otherwise a valid power-loss run would prove nothing.
func TestJepsenPowerLossCatchesMastersThatSkipFsync(t *testing.T) {
	fuseOrSkip(t)
	dir := t.TempDir()
	out, code, res := runJepsen(t, []string{"FILESHARE_UNSAFE_NO_FSYNC=1"}, "--out", dir, "--nodes", "3", "--time", "25s", "--interval", "8s",
		"--nemesis", "power-loss-all", "--seed", "1", "--rate", "200", "--files", "10")
	if code != 1 || res == nil || res.Verdict != jepsenlike.Invalid || !res.UnsafeNoFsync {
		t.Fatalf("exit code %d, want 1 (invalid) with the no-fsync hook recorded:\n%s", code, describe(out, res))
	}
	if res.SetFull.Verdict != jepsenlike.Invalid && res.Linearizable.Verdict != jepsenlike.Invalid {
		t.Fatalf("neither set-full nor linearizability found the lost writes:\n%s", describe(out, res))
	}
	lost := false
	for _, w := range readSchedule(t, dir).Realised {
		for _, n := range w.Notes {
			lost = lost || (strings.Contains(n, "lost power: discarded") && !strings.Contains(n, "discarded 0 unsynced bytes"))
		}
	}
	if !lost {
		t.Fatalf("no power loss discarded an unsynced byte:\n%s", describe(out, res))
	}
}

// The tracker workload announces over UDP through the harness's UDP
// proxies while they drop, duplicate, reorder and delay datagrams both
// ways; the clients retry as BEP 15 says, and a correct cluster keeps
// every acknowledged swarm entry, brings back no stopped peer, and gives
// every duplicated started or stopped one effect.
func TestJepsenUDPFaultsOnTheTrackerAreValid(t *testing.T) {
	dir := t.TempDir()
	out, code, res := runJepsen(t, nil, "--out", dir, "--nodes", "3", "--time", "25s", "--interval", "4s",
		"--nemesis", "udp-loss,udp-dup,udp-reorder,udp-delay", "--seed", "1", "--rate", "150", "--workload", "tracker", "--torrents", "6")
	if code != 0 || res == nil || res.Verdict != jepsenlike.Valid || res.Checkers["tracker-once"].Verdict != jepsenlike.Valid {
		t.Fatalf("exit code %d, want 0 (valid) with tracker-once valid:\n%s", code, describe(out, res))
	}
	var udp, faults int
	for _, w := range readSchedule(t, dir).Realised {
		faults++
		if w.UDP != nil && w.UDP.Forwarded > 0 {
			udp++
		}
	}
	if udp < 3 || udp != faults {
		t.Fatalf("%d of %d UDP faults saw UDP traffic through the proxies, want all and at least 3:\n%s", udp, faults, describe(out, res))
	}
}

// --tracker-cmd judges another tracker in the same words. Debian's
// opentracker keeps its swarms in memory only, so after it is killed and
// restarted the acknowledged swarm entries are gone (until each peer
// announces again): restart-recall must find them missing and the run
// exit 1. Skipped
// without opentracker; a failure under CI, which installs it.
func TestJepsenTrackerCmdReportsWhatOpentrackerLoses(t *testing.T) {
	ot, err := exec.LookPath("opentracker")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("opentracker is not on PATH; CI installs it (apt-get install opentracker)")
		}
		t.Skip("needs opentracker (apt-get install opentracker)")
	}
	dir := t.TempDir()
	out, code, res := runJepsen(t, nil, "--out", dir, "--workload", "tracker", "--nemesis", "kill", "--time", "20s", "--interval", "5s",
		"--seed", "1", "--rate", "150", "--torrents", "4",
		"--tracker-cmd", ot+" -i {host} -p {port} -P {port} -w {whitelist}")
	if code != 1 || res == nil || res.Verdict != jepsenlike.Invalid || res.Tracker == nil || res.TrackerCmd == "" {
		t.Fatalf("exit code %d, want 1 (invalid) with the tracker under test recorded:\n%s", code, describe(out, res))
	}
	if rr := res.Checkers["restart-recall"]; rr.Verdict != jepsenlike.Invalid || !strings.Contains(rr.Explanation, "acknowledged swarm entries were gone after") {
		t.Fatalf("restart-recall did not find the swarm entries opentracker lost at its kills: %+v\n%s", rr, describe(out, res))
	}
	if !strings.Contains(res.Summary, "the tracker under test broke a promise") {
		t.Fatalf("the summary does not say so in the harness's words: %s", res.Summary)
	}

	// Faults that need masters are refused, with the reason.
	out, code, _ = runJepsen(t, nil, "--workload", "tracker", "--nemesis", "partition", "--time", "5s", "--tracker-cmd", ot+" -p {port}")
	if code != 2 || !strings.Contains(out, "only the kill and pause faults apply") {
		t.Fatalf("partition against a tracker under test: exit %d:\n%s", code, out)
	}
}
