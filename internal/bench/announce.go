package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"fileshare/btclient"
	"fileshare/client"
	"fileshare/internal/defaults"
)

// ErrNoPeerStarted means the tracker answered no started announce of the
// warm-up, so there is nothing to measure. A tracker that serves only
// listed torrents needs the benchmark's info-hashes: WriteSwarmList
// writes them.
var ErrNoPeerStarted = errors.New("the tracker started none of the warm-up's peers")

// AnnounceConfig describes an announce load: Clients workers, each with
// its own connection (HTTP keep-alive or a UDP socket) to one of Targets
// and its own share of a simulated peer population, start Warmup peers,
// then run the measurements Measure.
type AnnounceConfig struct {
	// Targets are announce URLs, all http:// or all udp://; worker i uses
	// Targets[i % len(Targets)]. Required.
	Targets []string
	// Clients is the number of workers; zero means 64.
	Clients int
	// Duration is how long a closed or open measurement lasts; zero
	// means 10 s.
	Duration time.Duration
	// Swarms is how many info-hashes the peers are spread over; zero
	// means 10000.
	Swarms int
	// Mix is the share of each announce kind; zero means DefaultMix.
	Mix Mix
	// Warmup is how many peers are started before measuring, so that
	// re-announces and stops have peers to act on and answers hold
	// peers; zero means 3 × Swarms (three peers in every swarm, so an
	// answer lists the other two), negative none.
	Warmup int
	// Timeout bounds one announce; zero means 5 s, or 1 s when Measure
	// has an open-loop measurement (open, find-max), where every step
	// waits up to a timeout for its last answers.
	Timeout time.Duration
	// Seed makes the announce sequence reproducible; zero means 1.
	Seed uint64
	// Cluster, if set, is a status client of the cluster behind Targets:
	// the leader changes during the measurements are counted through it.
	Cluster *client.Client
	// Measuring, if set, is called on a goroutine of its own when the
	// first measurement of a fixed length (closed, open, flash-crowd)
	// starts, with its duration; that measurement's result waits for it
	// to return (a profile taken over the measurement).
	Measuring func(ctx context.Context, d time.Duration)

	// Measure lists the measurements to run, in order, after the one
	// warm-up; nil means just MeasureClosed.
	Measure []Measurement
	// Rate is the open loop's rate (MeasureOpen), in announces a second.
	Rate float64
	// FindMax is the search of MeasureFindMax; its zero fields mean
	// DefaultMaxSearch's, except a zero Start, which means the rate of a
	// closed loop measured before it, if any.
	FindMax MaxSearch
	// HotSwarms is how many swarms a flash crowd (MeasureFlashCrowd)
	// falls on; zero means DefaultHotSwarms. A swarm holds distinct ports
	// for 64511 new peers; past that a new peer reuses a port.
	HotSwarms int
	// FlashDuration is how long a flash crowd is measured; zero means
	// Duration.
	FlashDuration time.Duration
	// CPUPIDs are processes whose user+system CPU time over each
	// measurement is reported per answered announce (Linux /proc): the
	// tracker's, or every master's.
	CPUPIDs []int
}

// Measurement is one measurement of an announce run.
type Measurement string

// The measurements.
const (
	// MeasureClosed: Clients workers, each waiting for its answer before
	// its next announce, draw from Mix for Duration.
	MeasureClosed Measurement = "closed"
	// MeasureOpen: Rate announces a second drawn from Mix are offered
	// for Duration whatever the tracker answers (paced over the Clients
	// sockets or connections, the latency taken from when each announce
	// was due); one without an answer within Timeout is unanswered.
	MeasureOpen Measurement = "open"
	// MeasureFindMax: the search FindMax for the highest open-loop rate
	// the tracker holds.
	MeasureFindMax Measurement = "find-max"
	// MeasureFlashCrowd: a closed loop for FlashDuration in which every
	// announce is a started event of a new peer on one of the first
	// HotSwarms swarms (the warm-up spread its peers over all Swarms).
	MeasureFlashCrowd Measurement = "flash-crowd"
)

// ErrBadMeasurement means a measurement list names an unknown one.
var ErrBadMeasurement = errors.New("unknown measurement")

// ParseMeasurements parses a comma-separated list such as
// "closed,find-max,flash-crowd".
func ParseMeasurements(s string) ([]Measurement, error) {
	var out []Measurement
	for part := range strings.SplitSeq(s, ",") {
		m := Measurement(strings.TrimSpace(part))
		switch m {
		case MeasureClosed, MeasureOpen, MeasureFindMax, MeasureFlashCrowd:
			out = append(out, m)
		default:
			return nil, fmt.Errorf("%w %q: use closed, open, find-max or flash-crowd, separated by commas", ErrBadMeasurement, part)
		}
	}
	return out, nil
}

// DefaultHotSwarms is how many swarms a flash crowd falls on when the
// caller names none.
const DefaultHotSwarms = 16

func (c *AnnounceConfig) defaults() error {
	if len(c.Targets) == 0 {
		return errors.New("no announce URL to measure")
	}
	if c.Clients <= 0 {
		c.Clients = 64
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Swarms <= 0 {
		c.Swarms = 10000
	}
	if c.Mix == (Mix{}) {
		c.Mix = DefaultMix
	}
	if c.Mix.Changes < 0 || c.Mix.Renew < 0 || c.Mix.Stopped < 0 {
		return fmt.Errorf("%w: negative part in %s", ErrBadMix, c.Mix)
	}
	defaults.Fill(&c.Warmup, 3*c.Swarms)
	if len(c.Measure) == 0 {
		c.Measure = []Measurement{MeasureClosed}
	}
	open := slices.Contains(c.Measure, MeasureOpen) || slices.Contains(c.Measure, MeasureFindMax)
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
		if open {
			c.Timeout = time.Second
		}
	}
	defaults.Fill(&c.Seed, 1)
	if c.HotSwarms <= 0 {
		c.HotSwarms = min(DefaultHotSwarms, c.Swarms)
	}
	if c.HotSwarms > c.Swarms {
		return fmt.Errorf("a flash crowd on %d hot swarms (HotSwarms) needs at least as many swarms (Swarms is %d)", c.HotSwarms, c.Swarms)
	}
	if c.FlashDuration <= 0 {
		c.FlashDuration = c.Duration
	}
	if slices.Contains(c.Measure, MeasureOpen) && !(c.Rate > 0 && c.Rate < math.Inf(1)) {
		return fmt.Errorf("an open-loop measurement needs a Rate in announces a second > 0, not %v", c.Rate)
	}
	check := c.FindMax
	if check.Start == 0 {
		check.Start = DefaultMaxSearch().Start
	}
	return check.defaults()
}

// mixName names a measurement's load for summary lines.
func (c *AnnounceConfig) mixName(flash bool) string {
	if flash {
		return fmt.Sprintf("flash-crowd(hot_swarms=%d)", c.HotSwarms)
	}
	return c.Mix.String()
}

// errClosed means the tracker closed or reset an HTTP connection without
// answering the request sent on it.
var errClosed = errors.New("the tracker closed the connection without answering (a connection cap?)")

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// announceWorker is one worker's model, connection and counts.
type announceWorker struct {
	model *peerModel
	ann   announcer
	p     btclient.Announce
	stats AnnounceStats
}

// step sends one announce and records it in st: a started one during the
// warm-up (warm), else the measurement's next (peerModel.draw).
func (w *announceWorker) step(warm bool, timeout time.Duration, st *AnnounceStats) {
	var k opKind
	if warm {
		k = w.model.next(&w.p, opStart)
	} else {
		k = w.model.draw(&w.p)
	}
	t0 := time.Now()
	n, err := w.ann.announce(&w.p, t0.Add(timeout))
	st.record(k, n, time.Since(t0), err)
}

// Announce runs an announce load against cfg.Targets: a warm-up that
// starts cfg.Warmup peers (split over the workers), then the
// measurement: cfg.Duration of announces drawn from cfg.Mix (or a flash
// crowd, cfg.HotSwarms), in a closed loop, or open loop at cfg.Rate, or
// the search cfg.FindMax. It writes a warm-up line and summary lines to
// w. What the trackers answered, errors included, is in the result;
// Announce itself fails only if the load cannot be set up (a bad URL, a
// CPUPIDs process it cannot read), if the warm-up started no peer at all
// (ErrNoPeerStarted, with the result so far), or with ctx's error.
func Announce(ctx context.Context, cfg AnnounceConfig, w io.Writer) (*AnnounceResult, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	proto := ""
	workers := make([]*announceWorker, cfg.Clients)
	for i := range workers {
		t := cfg.Targets[i%len(cfg.Targets)]
		scheme, _, _ := strings.Cut(t, "://")
		if proto != "" && scheme != proto {
			return nil, fmt.Errorf("announce URLs mix %s and %s; measure one protocol at a time", proto, scheme)
		}
		proto = scheme
		ann, err := newAnnouncer(t, cfg.Seed*1000003+uint64(i))
		if err != nil {
			return nil, err
		}
		defer ann.close()
		workers[i] = &announceWorker{model: newPeerModel(cfg.Seed, i, cfg.Clients, cfg.Swarms, cfg.Mix), ann: ann}
	}
	if len(cfg.CPUPIDs) > 0 {
		// Fail before the warm-up if a process cannot be read.
		if _, err := startCPU(cfg.CPUPIDs); err != nil {
			return nil, err
		}
	}
	res := &AnnounceResult{Proto: proto, Clients: cfg.Clients, Swarms: cfg.Swarms, Mix: cfg.Mix, LeaderChanges: -1}

	// Warm-up: every worker starts its share of the population.
	start := time.Now()
	var wg sync.WaitGroup
	for i, wk := range workers {
		share := max(cfg.Warmup, 0) / cfg.Clients
		if i < max(cfg.Warmup, 0)%cfg.Clients {
			share++
		}
		wg.Go(func() {
			for range share {
				if ctx.Err() != nil {
					return
				}
				wk.step(true, cfg.Timeout, &wk.stats)
			}
		})
	}
	wg.Wait()
	res.WarmupElapsed = time.Since(start)
	warmConnects := 0
	for _, wk := range workers {
		res.Warmup.add(&wk.stats)
		warmConnects += wk.ann.connects()
	}
	res.Warmup.Connects = warmConnects
	res.WarmupPeers = res.Warmup.Answered()
	fmt.Fprintf(w, "announce %s warm-up: started %d peers in %s, errors: %s\n",
		proto, res.WarmupPeers, res.WarmupElapsed.Round(time.Millisecond), res.Warmup.errorSummary())
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if cfg.Warmup > 0 && res.WarmupPeers == 0 {
		return res, fmt.Errorf("%w: %s (a tracker that serves only listed torrents must list this benchmark's info-hashes first)", ErrNoPeerStarted, res.Warmup.errorSummary())
	}

	// The measurements.
	var leaders *leaderWatch
	if cfg.Cluster != nil {
		leaders = watchLeaders(ctx, cfg.Cluster)
		defer func() { res.LeaderChanges = leaders.finish() }()
	}
	seen := 0
	changes := func() string { // leader changes since the last summary
		if leaders == nil {
			return ""
		}
		n := leaders.count()
		defer func() { seen = n }()
		return fmt.Sprintf(", leader_changes=%d", n-seen)
	}
	hook := cfg.Measuring
	measuring := func(d time.Duration) func() {
		if hook == nil {
			return func() {}
		}
		var wg sync.WaitGroup
		h := hook
		hook = nil
		wg.Go(func() { h(ctx, d) })
		return wg.Wait
	}
	var ol *openLoad
	closedRate := 0.0
	for _, m := range cfg.Measure {
		if ctx.Err() != nil {
			break
		}
		switch m {
		case MeasureClosed, MeasureFlashCrowd:
			flash := m == MeasureFlashCrowd
			d := cfg.Duration
			if flash {
				d = cfg.FlashDuration
			}
			for _, wk := range workers {
				wk.model.hot = 0
				if flash {
					wk.model.hot = cfg.HotSwarms
				}
			}
			wait := measuring(d)
			r, err := closedLoop(ctx, workers, d, cfg)
			wait()
			if err != nil {
				return res, err
			}
			warn := ""
			if flash {
				res.Flash = r
				warn = portsRepeated(workers, cfg.HotSwarms)
			} else {
				res.ClosedResult = *r
				closedRate = r.Rate()
			}
			fmt.Fprintf(w, "announce %s: %.0f announces/s, %s, clients=%d, swarms=%d, mix=%s, answered=%d (started=%d renew=%d stopped=%d), peers/answer=%.1f, errors=%d: %s%s%s%s, duration=%s\n",
				proto, r.Rate(), r.Lat.Summary(), cfg.Clients, cfg.Swarms, cfg.mixName(flash), r.Answered(),
				r.OK[opStart], r.OK[opRenew], r.OK[opStop], float64(r.Peers)/float64(max(r.Answered(), 1)),
				r.Errors(), r.errorSummary(), changes(), cpuSummary(r.CPU, r.Answered()), warn, r.Elapsed.Round(time.Millisecond))
		case MeasureOpen, MeasureFindMax:
			for _, wk := range workers {
				wk.model.hot = 0
			}
			if ol == nil {
				var err error
				if ol, err = newOpenLoad(proto, workers, cfg); err != nil {
					return res, err
				}
				defer ol.close()
			}
			if m == MeasureOpen {
				wait := measuring(cfg.Duration)
				res.Open = ol.run(ctx, cfg.Rate, cfg.Duration)
				wait()
				fmt.Fprintf(w, "%s%s\n", res.Open.summary(proto, cfg), changes())
				continue
			}
			s := cfg.FindMax
			if s.Start == 0 && closedRate >= minSearchRate {
				s.Start = math.Round(closedRate)
			}
			if err := s.defaults(); err != nil {
				return res, err
			}
			res.Max = ol.findMax(ctx, s, w)
			fmt.Fprintf(w, "%s%s\n", res.Max.summary(proto), changes())
		}
	}
	for _, wk := range workers {
		res.Connects += wk.ann.connects()
	}
	res.Connects -= warmConnects
	return res, ctx.Err()
}

// closedLoop runs the workers' next announces (peerModel.draw) for d,
// each worker waiting for its answer before the next.
func closedLoop(ctx context.Context, workers []*announceWorker, d time.Duration, cfg AnnounceConfig) (*ClosedResult, error) {
	var cpu *cpuMeter
	if len(cfg.CPUPIDs) > 0 {
		var err error
		if cpu, err = startCPU(cfg.CPUPIDs); err != nil {
			return nil, err
		}
	}
	for _, wk := range workers {
		wk.stats = AnnounceStats{Lat: make(Latencies, 0, 4096)}
	}
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for _, wk := range workers {
		wg.Go(func() {
			for time.Now().Before(stop) && ctx.Err() == nil {
				wk.step(false, cfg.Timeout, &wk.stats)
			}
		})
	}
	wg.Wait()
	r := &ClosedResult{Elapsed: time.Since(start)}
	if cpu != nil {
		var err error
		if r.CPU, err = cpu.stop(); err != nil {
			return nil, err
		}
	}
	for _, wk := range workers {
		r.add(&wk.stats)
	}
	return r, nil
}

// portsRepeated warns, for a summary line, when a flash crowd started
// more peers on a hot swarm than it has ports for, so that later ones
// reused the port (and to a tracker that keys peers by address, the
// identity) of earlier ones.
func portsRepeated(workers []*announceWorker, hot int) string {
	if hot <= 0 {
		return ""
	}
	n := 0
	for _, wk := range workers {
		n += wk.model.hotStarted
	}
	if n <= hot*64511 {
		return ""
	}
	return fmt.Sprintf(", WARNING: %d crowd peers on %d hot swarms: past 64511 a swarm, new peers reused ports (give more hot swarms or a shorter duration)", n, hot)
}
