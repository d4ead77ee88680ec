package jepsenlike

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// h builds hand-made histories: times in milliseconds.
type h struct{ ops []Op }

func (x *h) add(proc int, peer string, typ OpType, key int, out Outcome, from, to int, holders ...string) *h {
	op := Op{Index: len(x.ops), Process: proc, Worker: proc, Peer: peer, Type: typ, Key: key, Outcome: out,
		Invoke: int64(from) * int64(time.Millisecond), Complete: int64(to) * int64(time.Millisecond)}
	if typ == OpLookup && out == OK {
		op.Holders = slices.Sorted(slices.Values(holders))
	}
	x.ops = append(x.ops, op)
	return x
}

func (x *h) final(key int, at int, holders ...string) *h {
	x.add(0, "", OpLookup, key, OK, at, at+1, holders...)
	x.ops[len(x.ops)-1].Final = true
	return x
}

func TestLinearizabilityModel(t *testing.T) {
	for _, tc := range []struct {
		name string
		hist *h
		want Verdict
	}{
		{"register then read sees it",
			(&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).add(2, "", OpLookup, 0, OK, 20, 30, "a"), Valid},
		{"a read after an acknowledged register misses it (stale read)",
			(&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).add(2, "", OpLookup, 0, OK, 20, 30), Invalid},
		{"a concurrent read may miss it",
			(&h{}).add(1, "a", OpRegister, 0, OK, 0, 30).add(2, "", OpLookup, 0, OK, 10, 20), Valid},
		{"an unregister removes only its own peer",
			(&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).add(2, "b", OpRegister, 0, OK, 0, 10).
				add(1, "a", OpUnregister, 0, OK, 20, 30).add(3, "", OpLookup, 0, OK, 40, 50, "b"), Valid},
		{"a removed holder must not come back",
			(&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).add(1, "a", OpUnregister, 0, OK, 20, 30).
				add(3, "", OpLookup, 0, OK, 40, 50, "a"), Invalid},
		{"an info register may apply late",
			(&h{}).add(1, "a", OpRegister, 0, Info, 0, 10).add(2, "", OpLookup, 0, OK, 20, 30).
				add(2, "", OpLookup, 0, OK, 40, 50, "a"), Valid},
		{"an info register may never apply",
			(&h{}).add(1, "a", OpRegister, 0, Info, 0, 10).add(2, "", OpLookup, 0, OK, 40, 50), Valid},
		{"an info register cannot apply before it was invoked",
			(&h{}).add(2, "", OpLookup, 0, OK, 0, 10, "a").add(1, "a", OpRegister, 0, Info, 20, 30), Invalid},
		{"reads cannot go back in time",
			(&h{}).add(1, "a", OpRegister, 0, Info, 0, 10).add(2, "", OpLookup, 0, OK, 20, 30, "a").
				add(3, "", OpLookup, 0, OK, 40, 50), Invalid},
		{"a failed register never applies",
			(&h{}).add(1, "a", OpRegister, 0, Fail, 0, 10).add(2, "", OpLookup, 0, OK, 20, 30, "a"), Invalid},
		{"search counts the holders",
			(&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).add(2, "b", OpRegister, 0, OK, 0, 10).
				add(3, "", OpSearch, 0, OK, 20, 30).with(func(o *Op) { o.Count = 2 }), Valid},
		{"search with a wrong count",
			(&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).add(3, "", OpSearch, 0, OK, 20, 30).with(func(o *Op) { o.Count = 2 }), Invalid},
		{"files are independent",
			(&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).add(2, "", OpLookup, 1, OK, 20, 30).
				add(2, "", OpLookup, 0, OK, 40, 50, "a"), Valid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := CheckLinearizable(tc.hist.ops, 10*time.Second, "", nil)
			if res.Verdict != tc.want {
				t.Fatalf("verdict %s, want %s: %s", res.Verdict, tc.want, res.Explanation)
			}
			if tc.want == Invalid && len(res.IllegalFiles) == 0 {
				t.Fatalf("invalid, but no illegal file named: %+v", res)
			}
		})
	}
}

// anchor adds one holding that certainly survives on another file, so a
// history whose own elements are all ambiguous still has something to
// check (else set-full rightly says unknown).
func (x *h) anchor() *h {
	return x.add(9, "z", OpRegister, 9, OK, 0, 1).final(9, 100, "z")
}

func (x *h) with(f func(*Op)) *h {
	f(&x.ops[len(x.ops)-1])
	return x
}

func TestLinearizabilityNamesTheBadFileAndWritesTheVisualization(t *testing.T) {
	hist := (&h{}).add(1, "a", OpRegister, 3, OK, 0, 10).add(2, "", OpLookup, 3, OK, 20, 30).
		add(1, "b", OpRegister, 5, OK, 0, 10).add(2, "", OpLookup, 5, OK, 20, 30, "b")
	path := filepath.Join(t.TempDir(), "viz.html")
	res := CheckLinearizable(hist.ops, 10*time.Second, path, []porcupine.Annotation{{Tag: "nemesis", Start: 5e6, End: 25e6, Description: "kill m1"}})
	if res.Verdict != Invalid || !slices.Equal(res.IllegalFiles, []int{3}) {
		t.Fatalf("got %s with illegal files %v, want invalid with [3]", res.Verdict, res.IllegalFiles)
	}
	if res.Visualization != path {
		t.Fatalf("no visualization written: %s", res.Explanation)
	}
}

func TestSetFull(t *testing.T) {
	for _, tc := range []struct {
		name        string
		hist        *h
		want        Verdict
		lost, never int
		resurrected int
	}{
		{"acknowledged registration survives",
			(&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).add(2, "", OpLookup, 0, OK, 20, 30, "a").final(0, 100, "a"),
			Valid, 0, 0, 0},
		{"acknowledged registration lost after it was seen",
			(&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).add(2, "", OpLookup, 0, OK, 20, 30, "a").final(0, 100),
			Invalid, 1, 0, 0},
		{"acknowledged registration never visible",
			(&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).add(2, "", OpLookup, 0, OK, 20, 30).final(0, 100),
			Invalid, 1, 1, 0},
		{"acknowledged unregistration comes back",
			(&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).add(1, "a", OpUnregister, 0, OK, 20, 30).final(0, 100, "a"),
			Invalid, 0, 0, 1},
		{"an unregistration that may have followed excuses the absence",
			(&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).add(1, "a", OpUnregister, 0, Info, 20, 30).anchor().final(0, 100),
			Valid, 0, 0, 0},
		{"a concurrent unregistration excuses the absence",
			(&h{}).add(1, "a", OpRegister, 0, OK, 0, 30).add(2, "a", OpUnregister, 0, OK, 10, 20).anchor().final(0, 100),
			Valid, 0, 0, 0},
		{"an info re-registration excuses the return",
			(&h{}).add(1, "a", OpUnregister, 0, OK, 0, 10).add(1, "a", OpRegister, 0, Info, 20, 30).anchor().final(0, 100, "a"),
			Valid, 0, 0, 0},
		{"an earlier unregistration does not excuse a loss",
			(&h{}).add(1, "a", OpUnregister, 0, OK, 0, 10).add(1, "a", OpRegister, 0, OK, 20, 30).final(0, 100),
			Invalid, 1, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := CheckSetFull(tc.hist.ops)
			if res.Verdict != tc.want || len(res.Lost) != tc.lost || len(res.NeverSeen) != tc.never || len(res.Resurrected) != tc.resurrected {
				t.Fatalf("got %s lost=%d never_seen=%d resurrected=%d; want %s %d %d %d (%s)",
					res.Verdict, len(res.Lost), len(res.NeverSeen), len(res.Resurrected), tc.want, tc.lost, tc.never, tc.resurrected, res.Explanation)
			}
		})
	}
}

func TestSetFullPhantomsAndMissingFinalReads(t *testing.T) {
	res := CheckSetFull((&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).final(0, 100, "a", "ghost").ops)
	if res.Verdict != Invalid || len(res.Phantoms) != 1 || res.Phantoms[0].Peer != "ghost" {
		t.Fatalf("a holder nobody registered: got %s, phantoms %v", res.Verdict, res.Phantoms)
	}
	res = CheckSetFull((&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).ops)
	if res.Verdict != Unknown || !slices.Equal(res.UnreadFiles, []int{0}) {
		t.Fatalf("no final read: got %s, unread %v; want unknown, [0]", res.Verdict, res.UnreadFiles)
	}
}

func TestSetFullVisibilityAndStaleReads(t *testing.T) {
	hist := (&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).
		add(2, "", OpLookup, 0, OK, 20, 25).      // stale: began after the ack
		add(2, "", OpLookup, 0, OK, 40, 45, "a"). // visible from here on
		add(2, "", OpLookup, 0, OK, 60, 65, "a").final(0, 100, "a")
	res := CheckSetFull(hist.ops)
	if res.StaleReads != 1 {
		t.Fatalf("stale reads = %d, want 1", res.StaleReads)
	}
	if res.VisibleAfter.N != 1 || res.VisibleAfter.Max != 30 {
		t.Fatalf("visible after = %+v, want one sample of 30 ms", res.VisibleAfter)
	}
}

func TestAvailabilityAndRecovery(t *testing.T) {
	hist := (&h{}).add(1, "a", OpRegister, 0, OK, 0, 10).
		add(1, "a", OpRegister, 0, Info, 100, 1100). // inside the fault
		add(2, "b", OpRegister, 0, OK, 1200, 1300).  // after the heal at 1150
		ops
	ms := func(n int) Duration { return Duration(time.Duration(n) * time.Millisecond) }
	res := checkAvailability(hist, []Window{{Fault: Fault{Seq: 1, Kind: KindKill}, StartOffset: ms(50), EndOffset: ms(1150)}})
	if res.InFaults.Ops != 1 || res.InFaults.OK != 0 || res.OutsideFaults.OK != 2 {
		t.Fatalf("in %+v out %+v", res.InFaults, res.OutsideFaults)
	}
	if len(res.Recovery) != 1 || res.Recovery[0].AfterHealMillis != 150 || res.Recovery[0].AfterStartMillis != 1250 {
		t.Fatalf("recovery %+v, want 150 ms after the heal and 1250 ms after the start", res.Recovery)
	}
}

func TestDigests(t *testing.T) {
	ids := []string{"m1", "m2", "m3"}
	if r := checkDigests(ids, map[string]string{"m1": "x", "m2": "x", "m3": "x"}, nil, nil); r.Verdict != Valid {
		t.Fatalf("equal digests: %s", r.Verdict)
	}
	if r := checkDigests(ids, map[string]string{"m1": "x", "m2": "y", "m3": "x"}, nil, nil); r.Verdict != Invalid || !strings.Contains(r.Explanation, "m2") {
		t.Fatalf("differing digests: %s %s", r.Verdict, r.Explanation)
	}
	if r := checkDigests(ids, map[string]string{"m1": "x", "m2": "x"}, nil, map[string]string{"m3": "refused"}); r.Verdict != Unknown {
		t.Fatalf("a silent master: %s", r.Verdict)
	}
}

func TestWorstVerdict(t *testing.T) {
	if worst(Valid, Unknown, Valid) != Unknown || worst(Unknown, Invalid) != Invalid || worst(Valid) != Valid {
		t.Fatal("worst does not rank invalid > unknown > valid")
	}
}

func TestLogsCatchPanicsRacesAndCrashes(t *testing.T) {
	dir := t.TempDir()
	clean := filepath.Join(dir, "m1.log")
	bad := filepath.Join(dir, "m2.log")
	os.WriteFile(clean, []byte("level=INFO msg=\"master running\"\n"), 0o644)
	os.WriteFile(bad, []byte("ok\nWARNING: DATA RACE\nRead at 0x00c000\n"), 0o644)
	if r := checkLogs([]string{clean}, nil, nil, nil); r.Verdict != Valid {
		t.Fatalf("a clean log: %s %s", r.Verdict, r.Explanation)
	}
	r := checkLogs([]string{clean, bad}, nil, nil, nil)
	if r.Verdict != Invalid || len(r.Findings) != 1 || r.Findings[0].File != "m2.log" || r.Findings[0].Line != 2 {
		t.Fatalf("a data race: %s %+v", r.Verdict, r.Findings)
	}
	if r := checkLogs([]string{clean}, []Crash{{Node: "m1", Error: "exit status 2"}}, nil, nil); r.Verdict != Invalid {
		t.Fatalf("a master that exited on its own: %s", r.Verdict)
	}
	if r := checkLogs([]string{clean}, nil, []Crash{{Node: "m2"}}, nil); r.Verdict != Valid || !strings.Contains(r.Explanation, "ignored SIGTERM") {
		t.Fatalf("a slow stop is informational: %s %s", r.Verdict, r.Explanation)
	}
}
