package bench

import (
	"context"
	"math"
	"testing"
	"testing/synctest"
	"time"
)

// Against a fake target that holds every rate up to its capacity, the
// search ends with the highest rate held at most the capacity and the
// lowest not held above it, within the precision, from a start below or
// above the capacity, and each step takes its time from the budget.
func TestSearchMaxBracketsTheCapacity(t *testing.T) {
	for _, tc := range []struct {
		name            string
		capacity, start float64
	}{
		{"start below", 37000, 5000},
		{"start above", 37000, 200000},
		{"start at it", 37000, 37000},
		{"tiny capacity", 3, 10000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := MaxSearch{Start: tc.start, Budget: time.Hour}
				if err := s.defaults(); err != nil {
					t.Fatal(err)
				}
				var tried []float64
				begin := time.Now()
				held, failed := searchMax(t.Context(), s, func(rate float64) bool {
					tried = append(tried, rate)
					time.Sleep(s.Step)
					return rate <= tc.capacity
				})
				if held > tc.capacity || failed <= tc.capacity || failed/held > s.Precision && failed-held > 1 {
					t.Fatalf("held %v, failed %v for capacity %v (tried %v); want held ≤ capacity < failed within ×%v", held, failed, tc.capacity, tried, s.Precision)
				}
				// Doublings or halvings to cross the capacity, then at
				// most 5 geometric bisections from ×2 to within ×1.1.
				if bound := int(math.Abs(math.Log2(tc.start/tc.capacity))) + 2 + 5; len(tried) > bound {
					t.Errorf("%d steps (%v); want at most %d", len(tried), tried, bound)
				}
				if got, want := time.Since(begin), time.Duration(len(tried))*s.Step; got != want {
					t.Errorf("took %s for %d steps of %s", got, len(tried), s.Step)
				}
			})
		})
	}
}

// A target that holds nothing ends the search at the lowest rate, with
// nothing held; one that holds everything doubles until the budget ends.
func TestSearchMaxStopsAtTheEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := MaxSearch{Start: 1000, Budget: time.Hour}
		s.defaults()
		n := 0
		held, failed := searchMax(t.Context(), s, func(float64) bool { n++; return false })
		if held != 0 || failed != 1 || n != 11 {
			t.Errorf("nothing held: held %v failed %v after %d steps; want 0, 1 after 11 (1000 halved to 1)", held, failed, n)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		s := MaxSearch{Start: 1000, Step: time.Second, Budget: 10 * time.Second}
		s.defaults()
		begin := time.Now()
		var tried []float64
		held, failed := searchMax(t.Context(), s, func(r float64) bool {
			tried = append(tried, r)
			time.Sleep(s.Step + 300*time.Millisecond) // a step overruns by its drain
			return true
		})
		if !math.IsInf(failed, 1) || held != tried[len(tried)-1] || held != 1000*math.Pow(2, float64(len(tried)-1)) {
			t.Errorf("everything held: held %v failed %v, tried %v; want doubling from 1000 and failed +Inf", held, failed, tried)
		}
		// Steps of 1.3 s: the 8th would start at 9.1 s and end past 10 s.
		if took := time.Since(begin); took > s.Budget || len(tried) != 7 {
			t.Errorf("took %s in %d steps with a budget of %s; want no step started that would end past it (7 steps)", took, len(tried), s.Budget)
		}
	})
}

// The first step runs even when the budget is shorter than a step, and a
// cancelled context ends the search.
func TestSearchMaxRunsOneStepAndObeysCtx(t *testing.T) {
	s := MaxSearch{Step: time.Minute, Budget: time.Second}
	s.defaults()
	n := 0
	searchMax(t.Context(), s, func(float64) bool { n++; return true })
	if n != 1 {
		t.Errorf("%d steps within a budget shorter than one step, want 1", n)
	}
	ctx, cancel := context.WithCancel(t.Context())
	n = 0
	searchMax(ctx, MaxSearch{Start: 10, Step: 1, Budget: time.Hour, Precision: 1.1}, func(float64) bool { n++; cancel(); return true })
	if n != 1 {
		t.Errorf("%d steps after the context was cancelled in the first, want 1", n)
	}
}

// A rate is held when p99 ≤ MaxP99 and less than MaxUnanswered of the
// announces due went unanswered (refusals count as unanswered).
func TestMaxSearchHolds(t *testing.T) {
	s := DefaultMaxSearch()
	lat := func(n int, d time.Duration) Latencies {
		l := make(Latencies, n)
		for i := range l {
			l[i] = d
		}
		return l
	}
	ok := func(n int, d time.Duration) AnnounceStats {
		return AnnounceStats{OK: [numOpKinds]int{n}, Lat: lat(n, d)}
	}
	withSlow := ok(10000, time.Millisecond)
	copy(withSlow.Lat, lat(101, time.Second)) // 1.01 % slow: p99 is slow
	refused := ok(9990, time.Millisecond)
	refused.Failures = map[string]int{"no": 10}
	for _, tc := range []struct {
		name string
		r    OpenResult
		want bool
	}{
		{"all answered fast", OpenResult{Due: 10000, AnnounceStats: ok(10000, time.Millisecond)}, true},
		{"p99 at the bar", OpenResult{Due: 10000, AnnounceStats: ok(10000, 50*time.Millisecond)}, true},
		{"p99 over the bar", OpenResult{Due: 10000, AnnounceStats: withSlow}, false},
		{"0.09 % unanswered", OpenResult{Due: 10000, AnnounceStats: ok(9991, time.Millisecond)}, true},
		{"0.1 % unanswered", OpenResult{Due: 10000, AnnounceStats: ok(9990, time.Millisecond)}, false},
		{"0.1 % refused", OpenResult{Due: 10000, AnnounceStats: refused}, false},
		{"nothing answered", OpenResult{Due: 0}, false},
	} {
		if got := s.holds(&tc.r); got != tc.want {
			t.Errorf("%s: holds = %v, want %v (p99 %s, unanswered %.4f)", tc.name, got, tc.want, tc.r.Lat.Percentile(99), tc.r.UnansweredFraction())
		}
	}
}

func TestMaxSearchRefusesImpossibleSettings(t *testing.T) {
	for _, s := range []MaxSearch{
		{Start: 0.5}, {Start: math.Inf(1)}, {Start: math.NaN()}, {Precision: 1}, {Precision: 0.5},
		{MaxUnanswered: 1}, {MaxUnanswered: -0.1}, {Step: -time.Second}, {Budget: -1},
	} {
		if err := s.defaults(); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
}
