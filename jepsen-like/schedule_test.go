package jepsenlike

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func testPlan(seed int64) Plan {
	return Plan{Seed: seed, Nodes: 5, Time: 5 * time.Minute, Interval: 10 * time.Second, Kinds: Kinds()}
}

// The same seed replays the same schedule: a failing run can be rerun.
func TestScheduleIsDeterministicPerSeed(t *testing.T) {
	a, b := PlanSchedule(testPlan(42)), PlanSchedule(testPlan(42))
	if len(a) == 0 {
		t.Fatal("no faults planned for a 5-minute run")
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("seed 42 gave two different schedules:\n%v\n%v", a, b)
	}
	if c := PlanSchedule(testPlan(43)); reflect.DeepEqual(a, c) {
		t.Fatal("seeds 42 and 43 gave the same schedule")
	}
}

func TestScheduleStaysInsideTheRunAndUsesOnlyChosenKinds(t *testing.T) {
	for seed := range int64(50) {
		p := Plan{Seed: seed, Nodes: 3, Time: 20 * time.Second, Interval: 4 * time.Second, Kinds: []Kind{KindKill, KindPause, KindPartition}}
		faults := PlanSchedule(p)
		if len(faults) < 3 {
			t.Fatalf("seed %d: %d faults in 20s at 4s intervals, want at least 3", seed, len(faults))
		}
		var prevEnd time.Duration
		for _, f := range faults {
			start, end := time.Duration(f.At), time.Duration(f.At+f.For)
			if !slices.Contains(p.Kinds, f.Kind) {
				t.Fatalf("seed %d: fault kind %s was not asked for", seed, f.Kind)
			}
			if start < prevEnd || end > p.Time-time.Second {
				t.Fatalf("seed %d: fault %d [%v, %v] overlaps the previous one (ended %v) or the run's end", seed, f.Seq, start, end, prevEnd)
			}
			if f.For < Duration(p.Interval*2/5) || f.For > Duration(p.Interval*3/4) {
				t.Fatalf("seed %d: fault lasts %v, outside 40–75%% of the interval", seed, time.Duration(f.For))
			}
			if len(f.Order) != p.Nodes {
				t.Fatalf("seed %d: order %v is not a permutation of %d nodes", seed, f.Order, p.Nodes)
			}
			if (f.Kind == KindKill || f.Kind == KindPause) && (f.Count < 1 || f.Count > (p.Nodes-1)/2) {
				t.Fatalf("seed %d: %s of %d nodes is not a minority of %d", seed, f.Kind, f.Count, p.Nodes)
			}
			prevEnd = end
		}
	}
}

func TestParseKinds(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []Kind
		bad  bool
	}{
		{in: "kill,pause,partition", want: []Kind{KindKill, KindPause, KindPartition}},
		{in: " Kill , kill ", want: []Kind{KindKill}},
		{in: "leader", want: []Kind{KindIsolateLeader, KindKillLeader}},
		{in: "none", want: nil},
		{in: "", want: nil},
		{in: "all", want: Kinds()},
		{in: "kill,frobnicate", bad: true},
	} {
		got, err := ParseKinds(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseKinds(%q) accepted an unknown kind", tc.in)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseKinds(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// hears returns, for each node, the set of nodes whose packets reach it.
func hears(n int, cuts []Link) []map[int]bool {
	out := make([]map[int]bool, n)
	for to := range n {
		out[to] = map[int]bool{}
		for from := range n {
			if !slices.Contains(cuts, Link{from, to}) {
				out[to][from] = true
			}
		}
	}
	return out
}

// In a majorities ring every master still hears a majority, and no two
// hear the same one, so every master can win an election it cannot keep.
func TestRingGivesEveryNodeADifferentMajority(t *testing.T) {
	for _, n := range []int{3, 5} {
		order := []int{2, 0, 4, 1, 3}[:0]
		for i := range n {
			order = append(order, (i*2)%n)
		}
		h := hears(n, ringCuts(order))
		seen := map[string]bool{}
		for node, set := range h {
			if len(set) != n/2+1 {
				t.Fatalf("n=%d: node %d hears %d nodes, want a bare majority of %d", n, node, len(set), n/2+1)
			}
			if !set[node] {
				t.Fatalf("n=%d: node %d does not hear itself", n, node)
			}
			key := ""
			for i := range n {
				if set[i] {
					key += string(rune('0' + i))
				}
			}
			if seen[key] {
				t.Fatalf("n=%d: two nodes hear the same majority %s", n, key)
			}
			seen[key] = true
		}
	}
}

func TestBridgeAndHalves(t *testing.T) {
	order := []int{3, 1, 4, 0, 2}
	h := hears(5, bridgeCuts(order))
	bridge := order[2]
	for node := range 5 {
		if node == bridge {
			if len(h[node]) != 5 {
				t.Fatalf("the bridge %d hears %d nodes, want all 5", node, len(h[node]))
			}
			continue
		}
		if len(h[node]) != 3 || !h[node][bridge] {
			t.Fatalf("node %d hears %v, want its side and the bridge", node, h[node])
		}
	}
	a, b := halves(order)
	if len(a) != 2 || len(b) != 3 {
		t.Fatalf("halves of 5 = %v, %v; want 2 and 3", a, b)
	}
	h = hears(3, oneWay(1, 3, "in"))
	if len(h[1]) != 1 || len(h[0]) != 3 {
		t.Fatalf("one-way in to node 1: hears %v", h)
	}
	h = hears(3, isolate(0, 3))
	if len(h[0]) != 1 || h[1][0] || h[2][0] {
		t.Fatalf("isolate node 0: hears %v", h)
	}
}
