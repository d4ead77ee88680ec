package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"time"
)

// MaxSearch is how AnnounceConfig.FindMax looks for the highest open-loop
// rate a tracker holds: it offers Start announces a second for Step,
// doubles the rate while it is held and halves it while it is not, then
// bisects (geometrically) between the highest rate held and the lowest
// not held until they are within Precision of each other or Budget is
// spent. A rate is held when the answers' p99 latency is at most MaxP99
// and less than MaxUnanswered of the announces went unanswered.
type MaxSearch struct {
	// Start is the first rate tried, in announces a second; zero means
	// 10000. The closed-loop rate of the same tracker is a good start.
	Start float64
	// Step is how long each rate is offered; zero means 2 s.
	Step time.Duration
	// Budget bounds the search: no step starts that would end more than
	// Budget after the search began (the first always runs). Each step
	// also waits up to the announce timeout for its last answers. Zero
	// means 30 s.
	Budget time.Duration
	// Precision is the ratio of the lowest rate not held to the highest
	// held at which the search stops; zero means 1.1.
	Precision float64
	// MaxP99 is the highest p99 latency of a held rate; zero means 50 ms.
	MaxP99 time.Duration
	// MaxUnanswered is the share (0..1) of unanswered announces a held
	// rate stays below; zero means 0.001 (0.1 %).
	MaxUnanswered float64
}

// minSearchRate is the lowest rate the search tries.
const minSearchRate = 1

// DefaultMaxSearch returns the value every zero field of a MaxSearch
// stands for.
func DefaultMaxSearch() MaxSearch {
	return MaxSearch{
		Start: 10000, Step: 2 * time.Second, Budget: 30 * time.Second,
		Precision: 1.1, MaxP99: 50 * time.Millisecond, MaxUnanswered: 0.001,
	}
}

func (s *MaxSearch) defaults() error {
	d := DefaultMaxSearch()
	s.Start = cmp.Or(s.Start, d.Start)
	s.Step = cmp.Or(s.Step, d.Step)
	s.Budget = cmp.Or(s.Budget, d.Budget)
	s.Precision = cmp.Or(s.Precision, d.Precision)
	s.MaxP99 = cmp.Or(s.MaxP99, d.MaxP99)
	s.MaxUnanswered = cmp.Or(s.MaxUnanswered, d.MaxUnanswered)
	switch {
	case !(s.Start >= minSearchRate) || math.IsInf(s.Start, 0):
		return fmt.Errorf("MaxSearch.Start %v: give a rate of at least %d announce a second", s.Start, minSearchRate)
	case s.Step < 0 || s.Budget < 0 || s.MaxP99 < 0:
		return fmt.Errorf("MaxSearch: Step %s, Budget %s and MaxP99 %s must not be negative", s.Step, s.Budget, s.MaxP99)
	case !(s.Precision > 1):
		return fmt.Errorf("MaxSearch.Precision %v: give a ratio above 1 (1.1 stops within 10 %%)", s.Precision)
	case !(s.MaxUnanswered > 0 && s.MaxUnanswered < 1):
		return fmt.Errorf("MaxSearch.MaxUnanswered %v: give a share between 0 and 1 (0.001 is 0.1 %%)", s.MaxUnanswered)
	}
	return nil
}

// holds reports whether an open-loop result meets the search's bar.
func (s *MaxSearch) holds(r *OpenResult) bool {
	return r.Answered() > 0 && r.Lat.Percentile(99) <= s.MaxP99 && r.UnansweredFraction() < s.MaxUnanswered
}

// searchMax runs the search with try, which offers a rate for s.Step and
// says whether it was held. It returns the highest rate held (0: none)
// and the lowest not held (+Inf: every rate tried was held). s must have
// its defaults.
func searchMax(ctx context.Context, s MaxSearch, try func(rate float64) bool) (held, failed float64) {
	begin := time.Now()
	held, failed = 0, math.Inf(1)
	for rate, steps := math.Round(s.Start), 0; ctx.Err() == nil; steps++ {
		if steps > 0 && time.Since(begin)+s.Step > s.Budget {
			break
		}
		if try(rate) {
			held = rate
		} else {
			failed = rate
		}
		next := 0.0
		switch {
		case math.IsInf(failed, 1):
			next = 2 * held
		case held == 0:
			next = math.Round(failed / 2)
			if next < minSearchRate {
				return held, failed
			}
		default:
			if failed/held <= s.Precision {
				return held, failed
			}
			next = math.Round(math.Sqrt(held * failed))
		}
		if next <= held || next >= failed { // rounding left nothing between
			return held, failed
		}
		rate = next
	}
	return held, failed
}

// MaxStep is one rate the search offered.
type MaxStep struct {
	Held bool
	*OpenResult
}

// MaxResult is the outcome of a search for the highest rate held.
type MaxResult struct {
	Search MaxSearch // with its defaults
	// Rate is the highest rate held, in announces a second; 0 if none was.
	Rate float64
	// Failed is the lowest rate not held; +Inf if every rate tried was.
	Failed  float64
	Steps   []MaxStep
	Elapsed time.Duration
}

func (m *MaxResult) summary(proto string) string {
	failed := "every rate tried was held"
	if !math.IsInf(m.Failed, 1) {
		failed = fmt.Sprintf("lowest not held %.0f/s", m.Failed)
	}
	return fmt.Sprintf("announce %s max sustained: %.0f announces/s (the highest offered rate held with p99 ≤ %s and < %.2f%% unanswered; %s; %d steps of %s in %s)",
		proto, m.Rate, ms(m.Search.MaxP99), 100*m.Search.MaxUnanswered, failed, len(m.Steps), m.Search.Step, m.Elapsed.Round(100*time.Millisecond))
}

// findMax runs the search s (with its defaults) against the load,
// writing a line for each step to w.
func (o *openLoad) findMax(ctx context.Context, s MaxSearch, w io.Writer) *MaxResult {
	m := &MaxResult{Search: s}
	start := time.Now()
	m.Rate, m.Failed = searchMax(ctx, s, func(rate float64) bool {
		r := o.run(ctx, rate, s.Step)
		held := s.holds(r)
		m.Steps = append(m.Steps, MaxStep{Held: held, OpenResult: r})
		verdict := "not held"
		if held {
			verdict = "held"
		}
		fmt.Fprintf(w, "announce %s find-max step %d: offered %.0f/s %s: answered %.0f/s, p50=%s p99=%s, unanswered=%.3f%% (%s)%s\n",
			o.proto, len(m.Steps), rate, verdict, r.AnsweredRate(), ms(r.Lat.Percentile(50)), ms(r.Lat.Percentile(99)),
			100*r.UnansweredFraction(), r.errorSummary(), cpuSummary(r.CPU, r.Answered()))
		return held
	})
	m.Elapsed = time.Since(start)
	return m
}
