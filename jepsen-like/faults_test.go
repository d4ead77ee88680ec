package jepsenlike

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The new kinds are drawn from the seed like the others, with parameters
// that say exactly what to do: a corrupt fault names a file and a damage,
// a clock fault a mode and an offset of 30 s to 10 min either way.
func TestDiskCorruptAndClockFaultsAreSeededAndWellFormed(t *testing.T) {
	kinds := []Kind{KindDiskFull, KindCorrupt, KindClock}
	p := Plan{Seed: 9, Nodes: 3, Time: 10 * time.Minute, Interval: 5 * time.Second, Kinds: kinds}
	a := PlanSchedule(p)
	if b := PlanSchedule(p); len(a) == 0 || !slicesEqualJSON(t, a, b) {
		t.Fatal("the same plan gave different schedules")
	}
	seen := map[string]bool{}
	for _, f := range a {
		switch f.Kind {
		case KindCorrupt:
			file, how, _ := strings.Cut(f.Variant, "/")
			if !contains(corruptFiles, file) || (how != "flip" && how != "truncate") {
				t.Fatalf("corrupt variant %q", f.Variant)
			}
			seen[f.Variant] = true
		case KindClock:
			off := time.Duration(f.Offset)
			if (f.Variant != "jump" && f.Variant != "drift") || off.Abs() < 30*time.Second || off.Abs() > 10*time.Minute {
				t.Fatalf("clock fault %q offset %v: want jump or drift by 30s..10m", f.Variant, off)
			}
			seen[f.Variant] = true
			if off < 0 {
				seen["backwards"] = true
			} else {
				seen["forwards"] = true
			}
		case KindDiskFull:
			seen["disk-full"] = true
		default:
			t.Fatalf("kind %s was not asked for", f.Kind)
		}
	}
	for _, want := range []string{"disk-full", "jump", "drift", "backwards", "forwards", "raft.db/flip", "state.bin/truncate", "meta.json/flip"} {
		if !seen[want] {
			t.Errorf("10 minutes of faults never drew %s", want)
		}
	}
	for _, k := range kinds {
		if ks, _ := ParseKinds("all"); !contains(ks, k) {
			t.Errorf("all does not include %s", k)
		}
	}
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func slicesEqualJSON(t *testing.T, a, b []Fault) bool {
	t.Helper()
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Kind != b[i].Kind || a[i].Variant != b[i].Variant || a[i].Offset != b[i].Offset || a[i].Salt != b[i].Salt || a[i].At != b[i].At {
			return false
		}
	}
	return true
}

// makeDataDir lays out a master data dir as hashicorp/raft does: raft.db
// and two snapshots, the newer by term and index.
func makeDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(rel string, size int) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, bytes.Repeat([]byte{0xAB}, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("raft.db", 1<<16)
	for _, snap := range []string{"2-90-1700000000000", "3-120-1700000001000", "3-130-1700000002000.tmp"} {
		write("snapshots/"+snap+"/state.bin", 4096)
		write("snapshots/"+snap+"/meta.json", 200)
	}
	return dir
}

// A corrupt fault changes the file it names, in the newest complete
// snapshot, and nothing else; the same salt does the same damage.
func TestDamageHitsTheNamedFileOfTheNewestSnapshot(t *testing.T) {
	for _, variant := range []string{"raft.db/flip", "raft.db/truncate", "state.bin/flip", "state.bin/truncate", "meta.json/flip", "meta.json/truncate"} {
		t.Run(variant, func(t *testing.T) {
			dir, twin := makeDataDir(t), makeDataDir(t)
			path, what, err := damage(dir, variant, 77)
			if err != nil {
				t.Fatal(err)
			}
			file, how, _ := strings.Cut(variant, "/")
			want := filepath.Join(dir, file)
			if file != "raft.db" {
				want = filepath.Join(dir, "snapshots", "3-120-1700000001000", file)
			}
			if path != want {
				t.Fatalf("damaged %s, want %s", path, want)
			}
			got, _ := os.ReadFile(path)
			orig, _ := os.ReadFile(filepath.Join(twin, strings.TrimPrefix(path, dir)))
			if how == "truncate" && len(got) >= len(orig) {
				t.Fatalf("truncate left %d of %d bytes (%s)", len(got), len(orig), what)
			}
			if how == "flip" && (len(got) != len(orig) || bytes.Equal(got, orig)) {
				t.Fatalf("flip changed nothing (%s)", what)
			}
			// Nothing else changed.
			filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
				if err != nil || e.IsDir() || p == path {
					return err
				}
				a, _ := os.ReadFile(p)
				b, _ := os.ReadFile(filepath.Join(twin, strings.TrimPrefix(p, dir)))
				if !bytes.Equal(a, b) {
					t.Errorf("%s changed too", p)
				}
				return nil
			})
			_, what2, _ := damage(twin, variant, 77)
			if what2 != strings.ReplaceAll(what, dir, twin) {
				t.Fatalf("the same salt did different damage: %q vs %q", what, what2)
			}
		})
	}
}

// Without a snapshot the damage goes to raft.db, and the note says so;
// an empty data dir is an error, not a silent no-op.
func TestDamageWithoutASnapshotFallsBackToTheLog(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "raft.db"), make([]byte, 1000), 0o644)
	path, what, err := damage(dir, "state.bin/flip", 1)
	if err != nil || path != filepath.Join(dir, "raft.db") || !strings.Contains(what, "no snapshot") {
		t.Fatalf("damage = %s, %q, %v; want raft.db and a note", path, what, err)
	}
	if _, _, err := damage(t.TempDir(), "raft.db/truncate", 1); !errors.Is(err, errNothingToDamage) {
		t.Fatalf("empty data dir: %v, want errNothingToDamage", err)
	}
	if _, _, err := damage(dir, "raft.db/shred", 1); err == nil {
		t.Fatal("an unknown damage was accepted")
	}
}

// The clock file holds one signed Go duration that time.ParseDuration
// reads back, and each write is a new mtime (what the masters watch).
func TestClockOffsetFileRoundTrips(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m1")
	for _, d := range []time.Duration{0, 30 * time.Second, -2 * time.Minute, 9*time.Minute + 30*time.Second} {
		if err := writeClockOffset(path, d); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		s := strings.TrimSpace(string(b))
		got, err := time.ParseDuration(s)
		if err != nil || got != d {
			t.Fatalf("wrote %v, file says %q (%v, %v)", d, s, got, err)
		}
		if d > 0 && !strings.HasPrefix(s, "+") {
			t.Fatalf("a positive offset %q has no sign", s)
		}
	}
}

// TestHelperExit is not a test: run with JEPSEN_TEST_EXIT=N it exits
// with status N, giving the tests a real *exec.ExitError.
func TestHelperExit(t *testing.T) {
	if s := os.Getenv("JEPSEN_TEST_EXIT"); s != "" {
		n, _ := strconv.Atoi(s)
		os.Exit(n)
	}
}

func exitErr(t *testing.T, code int) error {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperExit$")
	cmd.Env = append(os.Environ(), "JEPSEN_TEST_EXIT="+strconv.Itoa(code))
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != code {
		t.Fatalf("helper exit: %v, want status %d", err, code)
	}
	return err
}

// A master that refuses to start on the data dir the harness damaged is
// a self-stop with the reason from its log, not a crash; the same refusal
// with no damage done is a crash, since something else broke the data
// dir. A master that exits while its disk is full is a self-stop only if
// its log says the disk is full.
func TestRefusalsAndDiskFullStopsAreNotCrashes(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "m1.log")
	newCl := func(logText string, damaged, full bool) *cluster {
		os.WriteFile(logPath, []byte(logText), 0o644)
		return &cluster{logger: slog.New(slog.DiscardHandler), t0: time.Now(),
			nodes: []*node{{id: "m1", logPath: logPath, damaged: damaged, diskFull: full}}}
	}
	refusal := "level=INFO msg=starting\nlevel=ERROR msg=\"data dir is damaged: raft.db: invalid page\"\n"

	c := newCl(refusal, true, false)
	c.crashed(0, exitErr(t, exitDamaged))
	crashes, _, self := c.crashList()
	if len(crashes) != 0 || len(self) != 1 || !strings.HasPrefix(self[0].Error, reasonDamaged) || !strings.Contains(self[0].Error, "invalid page") {
		t.Fatalf("refusal after damage: crashes %v, self-stops %v", crashes, self)
	}
	if !c.nodes[0].refused {
		t.Fatal("a master that refused is not marked for replacement")
	}

	c = newCl(refusal, false, false)
	c.crashed(0, exitErr(t, exitDamaged))
	if crashes, _, self := c.crashList(); len(crashes) != 1 || len(self) != 0 || !strings.Contains(crashes[0].Error, "had not damaged") {
		t.Fatalf("refusal without damage: crashes %v, self-stops %v", crashes, self)
	}

	c = newCl("level=ERROR msg=\"store log: write raft.db: no space left on device\"\n", false, true)
	c.crashed(0, exitErr(t, 1))
	if crashes, _, self := c.crashList(); len(crashes) != 0 || len(self) != 1 || !strings.HasPrefix(self[0].Error, reasonDiskFull) {
		t.Fatalf("a stated disk-full stop: crashes %v, self-stops %v", crashes, self)
	}

	c = newCl("level=INFO msg=fine\n", false, true)
	c.crashed(0, exitErr(t, 1))
	if crashes, _, self := c.crashList(); len(crashes) != 1 || len(self) != 0 {
		t.Fatalf("an unexplained exit while the disk was full: crashes %v, self-stops %v", crashes, self)
	}

	r := checkLogs([]string{logPath}, nil, nil, []Crash{{Node: "m1", Error: reasonDamaged + ": x"}})
	if r.Verdict != Valid || !strings.Contains(r.Explanation, reasonDamaged) {
		t.Fatalf("a self-stop must be reported and not fail the run: %s %s", r.Verdict, r.Explanation)
	}
}

// Masters that still disagree after a heal make heal-digests invalid; a
// heal that was not compared is not counted.
func TestHealDigestsChecker(t *testing.T) {
	good := &DigestResult{Verdict: Valid}
	bad := &DigestResult{Verdict: Invalid, Explanation: "m2 differs"}
	if r := checkHealDigests([]Window{{HealDigests: good}, {}}); r.Verdict != Valid || !strings.Contains(r.Explanation, "1 heals") {
		t.Fatalf("agreement: %s %s", r.Verdict, r.Explanation)
	}
	if r := checkHealDigests([]Window{{HealDigests: good}, {Fault: Fault{Seq: 2, Kind: KindCorrupt}, HealDigests: bad}}); r.Verdict != Invalid || !strings.Contains(r.Explanation, "fault 2 (corrupt)") {
		t.Fatalf("disagreement: %s %s", r.Verdict, r.Explanation)
	}
}

// While the pacer is held no op starts; release lets the waiters go.
func TestPacerHoldStopsNewOps(t *testing.T) {
	p := newPacer(-1, 1)
	p.hold()
	p.hold() // twice is fine
	started := make(chan bool)
	go func() { started <- p.wait(context.Background(), nil) }()
	select {
	case <-started:
		t.Fatal("an op started while the pacer was held")
	case <-time.After(100 * time.Millisecond):
	}
	p.release()
	p.release()
	if !<-started {
		t.Fatal("wait after release returned false")
	}
}

// Power losses are drawn from the seed like the other kinds, clean and
// torn, each with a salt for its tears, and "all" includes both kinds.
func TestPowerLossFaultsAreSeededAndInAll(t *testing.T) {
	kinds := []Kind{KindPowerLoss, KindPowerLossAll}
	p := Plan{Seed: 5, Nodes: 5, Time: 5 * time.Minute, Interval: 5 * time.Second, Kinds: kinds}
	a := PlanSchedule(p)
	if b := PlanSchedule(p); len(a) == 0 || !slicesEqualJSON(t, a, b) {
		t.Fatal("the same plan gave different schedules")
	}
	seen := map[string]bool{}
	for _, f := range a {
		if !isPowerLoss(f.Kind) || (f.Variant != "clean" && f.Variant != "torn") || f.Salt == 0 || len(f.Order) != 5 {
			t.Fatalf("fault %+v: want a power loss, clean or torn, with a salt and every master in its order", f)
		}
		seen[string(f.Kind)+"/"+f.Variant] = true
	}
	for _, want := range []string{"power-loss/clean", "power-loss/torn", "power-loss-all/clean", "power-loss-all/torn"} {
		if !seen[want] {
			t.Errorf("5 minutes of power losses never drew %s", want)
		}
	}
	all, _ := ParseKinds("all")
	for _, k := range kinds {
		if !contains(all, k) || k.NeedsNetwork() {
			t.Errorf("%s: in all %v, needs the network %v; want in all, no network", k, contains(all, k), k.NeedsNetwork())
		}
	}
}

// UDP faults are drawn with their parameters, are in "all", and need no
// link faults; a duplicate's one effect is judged from the proxies'
// counts and the final reads.
func TestUDPFaultsAreSeededAndJudged(t *testing.T) {
	a := PlanSchedule(Plan{Seed: 2, Nodes: 3, Time: 5 * time.Minute, Interval: 5 * time.Second,
		Kinds: []Kind{KindUDPLoss, KindUDPDup, KindUDPReorder, KindUDPDelay}})
	seen := map[Kind]bool{}
	for _, f := range a {
		seen[f.Kind] = true
		switch f.Kind {
		case KindUDPDelay:
			if f.Delay < Duration(50*time.Millisecond) || f.Delay > Duration(300*time.Millisecond) {
				t.Fatalf("udp-delay of %v", time.Duration(f.Delay))
			}
		default:
			if f.Fraction < 0.1 || f.Fraction > 0.6 {
				t.Fatalf("%s with fraction %v", f.Kind, f.Fraction)
			}
		}
	}
	all, _ := ParseKinds("all")
	for _, k := range []Kind{KindUDPLoss, KindUDPDup, KindUDPReorder, KindUDPDelay} {
		if !seen[k] || !contains(all, k) || k.NeedsNetwork() {
			t.Errorf("%s: drawn %v, in all %v, needs the network %v", k, seen[k], contains(all, k), k.NeedsNetwork())
		}
	}

	dup := []Window{{UDP: &UDPCounts{DupStarted: 3, DupStopped: 2}}}
	valid := TrackerResult{Verdict: Valid}
	if r := checkTrackerOnce(nil, dup, valid); r.Verdict != Valid || !strings.Contains(r.Explanation, "3 started and 2 stopped") {
		t.Fatalf("duplicates with one effect: %s %s", r.Verdict, r.Explanation)
	}
	if r := checkTrackerOnce(nil, nil, valid); r.Verdict != Unknown {
		t.Fatalf("no duplicates must be unknown, got %s", r.Verdict)
	}
	twice := []Op{{Type: OpPeers, Outcome: Info, Master: "m2", Key: 4, Error: "listed 3 of the swarm's 4 other peers"}}
	if r := checkTrackerOnce(twice, dup, valid); r.Verdict != Invalid || !strings.Contains(r.Explanation, "m2 torrent 4") {
		t.Fatalf("a peer counted twice: %s %s", r.Verdict, r.Explanation)
	}
	if r := checkTrackerOnce(nil, dup, TrackerResult{Verdict: Invalid}); r.Verdict != Invalid {
		t.Fatalf("a resurrected stop after duplicates: %s", r.Verdict)
	}
}

// restart-recall compares the peers a swarm had acknowledged when the
// tracker was killed with the count in the first membership change after
// the restart, allowing for the announcing peer itself.
func TestRestartRecall(t *testing.T) {
	s := int64(time.Second)
	before := []Op{
		{Worker: 0, Peer: "a", Type: OpStarted, Key: 0, Outcome: OK, Invoke: 1 * s, Complete: 1*s + 1},
		{Worker: 1, Peer: "b", Type: OpStarted, Key: 0, Outcome: OK, Invoke: 1 * s, Complete: 1*s + 1},
		{Worker: 2, Peer: "c", Type: OpStarted, Key: 0, Outcome: OK, Invoke: 1 * s, Complete: 1*s + 1},
		{Worker: 2, Peer: "c", Type: OpStopped, Key: 0, Outcome: OK, Invoke: 2 * s, Complete: 2*s + 1},
		{Worker: 3, Peer: "d", Type: OpStarted, Key: 0, Outcome: Info, Invoke: 2 * s, Complete: 3 * s},
	}
	win := []Window{{Fault: Fault{Seq: 1, Kind: KindKill}, StartOffset: Duration(4 * s), EndOffset: Duration(6 * s)}}
	after := func(op Op) []Op { return append(slices.Clone(before), op) }
	for _, tc := range []struct {
		name  string
		first Op
		want  Verdict
	}{
		{"a newcomer sees both", Op{Peer: "e", Type: OpStarted, Key: 0, Outcome: OK, Invoke: 7 * s, Complete: 7 * s, Swarm: 3}, Valid},
		{"a newcomer sees an empty swarm", Op{Peer: "e", Type: OpStarted, Key: 0, Outcome: OK, Invoke: 7 * s, Complete: 7 * s, Swarm: 1}, Invalid},
		{"one of them leaves", Op{Peer: "a", Type: OpStopped, Key: 0, Outcome: OK, Invoke: 7 * s, Complete: 7 * s, Swarm: 1}, Valid},
		{"one of them completes alone", Op{Peer: "a", Type: OpCompleted, Key: 0, Outcome: OK, Invoke: 7 * s, Complete: 7 * s, Swarm: 1}, Invalid},
	} {
		if got := checkRestartRecall(after(tc.first), win); got.Verdict != tc.want {
			t.Errorf("%s: %s (%s), want %s", tc.name, got.Verdict, got.Explanation, tc.want)
		}
	}
	if got := checkRestartRecall(before, nil); got.Verdict != Valid {
		t.Errorf("no kill: %s", got.Verdict)
	}
}
