package bench

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"fileshare/btclient"
)

// AnnounceStats counts the outcomes of announces.
type AnnounceStats struct {
	OK       [numOpKinds]int // answered without a failure reason, by kind
	Lat      Latencies       // of the announces in OK
	Peers    int             // peer entries the answers held
	Timeouts int             // no answer within the timeout
	// Closed counts HTTP announces whose connection the tracker closed
	// or reset without answering, on a fresh connection too (a tracker
	// over its connection cap does that).
	Closed int
	// Failures counts answers with a failure reason, by reason.
	Failures map[string]int
	// Other counts everything else (refused connections, malformed
	// replies, HTTP errors); FirstOther is the first of them.
	Other      int
	FirstOther error
	Connects   int // UDP connect exchanges made (BEP 15) in this phase
}

// Answered is the number of announces answered without a failure reason.
func (s *AnnounceStats) Answered() int { return s.OK[opStart] + s.OK[opRenew] + s.OK[opStop] }

// Errors is the number of announces that timed out, failed or broke.
func (s *AnnounceStats) Errors() int {
	n := s.Timeouts + s.Closed + s.Other
	for _, v := range s.Failures {
		n += v
	}
	return n
}

func (s *AnnounceStats) add(o *AnnounceStats) {
	for k := range s.OK {
		s.OK[k] += o.OK[k]
	}
	s.Lat = append(s.Lat, o.Lat...)
	s.Peers += o.Peers
	s.Timeouts += o.Timeouts
	s.Closed += o.Closed
	for r, n := range o.Failures {
		if s.Failures == nil {
			s.Failures = map[string]int{}
		}
		s.Failures[r] += n
	}
	s.Other += o.Other
	if s.FirstOther == nil {
		s.FirstOther = o.FirstOther
	}
	s.Connects += o.Connects
}

// record counts the outcome of one announce of kind k that took d.
func (s *AnnounceStats) record(k opKind, peers int, d time.Duration, err error) {
	var f *btclient.FailureError
	switch {
	case err == nil:
		s.OK[k]++
		s.Lat = append(s.Lat, d)
		s.Peers += peers
	case isTimeout(err):
		s.Timeouts++
	case errors.Is(err, errClosed):
		s.Closed++
	case errors.As(err, &f):
		if s.Failures == nil {
			s.Failures = map[string]int{}
		}
		s.Failures[f.Reason]++
	default:
		s.Other++
		if s.FirstOther == nil {
			s.FirstOther = err
		}
	}
}

// errorSummary lists the errors by kind, e.g. `timeouts=3 failure("swarm
// full")=2 other=1 (first: ...)`, or "none".
func (s *AnnounceStats) errorSummary() string {
	var parts []string
	if s.Timeouts > 0 {
		parts = append(parts, fmt.Sprintf("timeouts=%d", s.Timeouts))
	}
	if s.Closed > 0 {
		parts = append(parts, fmt.Sprintf("closed_unanswered=%d", s.Closed))
	}
	reasons := make([]string, 0, len(s.Failures))
	for r := range s.Failures {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	for _, r := range reasons {
		parts = append(parts, fmt.Sprintf("failure(%q)=%d", r, s.Failures[r]))
	}
	if s.Other > 0 {
		parts = append(parts, fmt.Sprintf("other=%d (first: %v)", s.Other, s.FirstOther))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// AnnounceResult is one announce benchmark.
type AnnounceResult struct {
	Proto   string // "http" or "udp"
	Clients int
	Swarms  int
	Mix     Mix

	WarmupPeers   int
	WarmupElapsed time.Duration
	Warmup        AnnounceStats

	// ClosedResult is the closed-loop measurement (MeasureClosed); zero
	// without one.
	ClosedResult
	// LeaderChanges is how many times the cluster's leader changed during
	// the measurements, or -1 when no cluster was watched.
	LeaderChanges int
	// Open is the open-loop measurement (MeasureOpen), Max the search
	// (MeasureFindMax) and Flash the flash crowd (MeasureFlashCrowd); nil
	// without one.
	Open  *OpenResult
	Max   *MaxResult
	Flash *ClosedResult
}

// ClosedResult is one closed-loop measurement.
type ClosedResult struct {
	Elapsed time.Duration
	AnnounceStats
	// CPU is what AnnounceConfig.CPUPIDs used over the measurement; nil
	// when no PIDs were given.
	CPU *CPUUse
}

// Rate is answered announces per second during the measurement.
func (r *ClosedResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Answered()) / r.Elapsed.Seconds()
}
