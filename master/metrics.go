package master

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	armon "github.com/armon/go-metrics"
	armonprom "github.com/armon/go-metrics/prometheus"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"fileshare/client"
	"fileshare/internal/buildinfo"
	"fileshare/tracker"
)

// Metrics levels (Config.Metrics).
const (
	// MetricsBasic serves this package's own metrics on /metrics: Raft
	// state, group commit, the index, RPCs, the build and the process.
	MetricsBasic = "basic"
	// MetricsExtensive adds hashicorp/raft's and raft-boltdb's own
	// go-metrics (about a hundred series: commit and FSM timings,
	// replication per follower, bolt transactions), named fileshare_raft_…
	// and fileshare_boltdb_… as the libraries name them. See
	// sharedRaftSink for what that means for several masters in one
	// process.
	MetricsExtensive = "extensive"
)

// metrics is one master's Prometheus registry and the instruments the
// master feeds. Gauges that raft or the FSM already know are read at
// scrape time (stateCollector), not copied on every change.
//
// Every method is safe for concurrent use.
type metrics struct {
	m   metricsSource
	reg *prometheus.Registry

	leaderChanges prometheus.Counter
	applyDuration prometheus.Histogram
	applyErrors   prometheus.Counter
	batchCommands prometheus.Histogram
	batchBytes    prometheus.Histogram
	rpcRequests   *prometheus.CounterVec
	rpcDuration   *prometheus.HistogramVec

	// writes and reads count the peer calls this master answered, by
	// kind, for the dashboard's rates (the CounterVec is awkward to sum).
	writes, reads, heartbeats atomic.Uint64

	// contacts remembers when each member last heard from the leader.
	contacts contactTracker
	// events is the recent history of leadership (the dashboard's
	// timeline), fed by the raft observer.
	events eventLog
	// failing holds the peers whose heartbeats fail, so the timeline
	// records each outage once.
	failing idSet
}

// idSet is a set of member IDs, safe for concurrent use.
type idSet struct {
	mu  sync.Mutex
	ids map[string]bool
}

// add reports whether id was not yet in the set.
func (s *idSet) add(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids[id] {
		return false
	}
	if s.ids == nil {
		s.ids = map[string]bool{}
	}
	s.ids[id] = true
	return true
}

func (s *idSet) clear() {
	s.mu.Lock()
	clear(s.ids)
	s.mu.Unlock()
}

func (s *idSet) remove(id string) {
	s.mu.Lock()
	delete(s.ids, id)
	s.mu.Unlock()
}

// newMetrics builds m's registry. It registers nothing on any global
// registry; with MetricsExtensive it binds the process-wide raft sink.
func newMetrics(m metricsSource, level string) (*metrics, error) {
	mx := &metrics{m: m, reg: prometheus.NewRegistry()}
	f := func(name, help string) prometheus.Opts { return prometheus.Opts{Name: name, Help: help} }
	mx.leaderChanges = prometheus.NewCounter(prometheus.CounterOpts(f("fileshare_server_leader_changes_seen_total",
		"Leader changes this master has seen (each time it learns of a new leader).")))
	mx.applyDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "fileshare_raft_apply_duration_seconds",
		Help:    "Time from handing a group-commit batch to raft.Apply until raft answered it (committed on a majority and applied here), on the leader.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms … 4 s
	})
	mx.applyErrors = prometheus.NewCounter(prometheus.CounterOpts(f("fileshare_raft_apply_failures_total",
		"Group-commit batches raft refused or lost (not leader, leadership lost, shutdown, timeout).")))
	mx.batchCommands = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "fileshare_groupcommit_batch_commands",
		Help:    "Commands per log entry formed by the leader's group commit.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 … 1024
	})
	mx.batchBytes = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "fileshare_groupcommit_batch_bytes",
		Help:    "Bytes per log entry formed by the leader's group commit.",
		Buckets: prometheus.ExponentialBuckets(64, 4, 8), // 64 B … 1 MiB
	})
	mx.rpcRequests = prometheus.NewCounterVec(prometheus.CounterOpts(f("fileshare_rpc_requests_total",
		"RPC calls this master answered, by method and result code (ok, or the error's wire code).")), []string{"method", "code"})
	mx.rpcDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "fileshare_rpc_request_duration_seconds",
		Help:    "Time this master took to answer an RPC call, by method.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), // 100 µs … 26 s
	}, []string{"method"})
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts(f("fileshare_build_info",
		"Always 1; the labels name the build of this master.")), []string{"version", "go_version"})
	info.WithLabelValues(Version(), runtime.Version()).Set(1)

	mx.reg.MustRegister(mx.leaderChanges, mx.applyDuration, mx.applyErrors, mx.batchCommands, mx.batchBytes,
		mx.rpcRequests, mx.rpcDuration, info, &stateCollector{mx: mx}, &trackerCollector{m: m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if level == MetricsExtensive {
		sink, err := sharedRaftSink()
		if err != nil {
			return nil, fmt.Errorf("bridge raft's metrics: %w", err)
		}
		if err := mx.reg.Register(sink); err != nil {
			return nil, fmt.Errorf("bridge raft's metrics: %w", err)
		}
	}
	return mx, nil
}

// Register adds collectors to this master's /metrics: the place for
// other parts of the master to publish their own series (the tracker's
// are in trackerCollector). It fails if a collector's metrics clash with
// ones already registered.
func (mx *metrics) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := mx.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// handler serves the registry in the Prometheus text (or, if asked for,
// protobuf) format. A collector that fails costs only its own series.
func (mx *metrics) handler() http.Handler {
	return promhttp.HandlerFor(mx.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// ObserveCall implements transport.CallObserver.
func (mx *metrics) ObserveCall(method, code string, d time.Duration) {
	mx.rpcRequests.WithLabelValues(method, code).Inc()
	mx.rpcDuration.WithLabelValues(method).Observe(d.Seconds())
	switch method {
	case client.MethodPeerJoin, client.MethodPeerLeave, client.MethodRegister, client.MethodUnregister:
		mx.writes.Add(1)
	case client.MethodLookup, client.MethodSearch, client.MethodPeers, client.MethodFind:
		mx.reads.Add(1)
	case client.MethodHeartbeat:
		mx.heartbeats.Add(1)
	}
}

func (mx *metrics) batchProposed(commands, bytes int) {
	mx.batchCommands.Observe(float64(commands))
	mx.batchBytes.Observe(float64(bytes))
}

func (mx *metrics) batchApplied(d time.Duration, err error) {
	if err != nil {
		mx.applyErrors.Inc()
		return
	}
	mx.applyDuration.Observe(d.Seconds())
}

// stateCollector reports, at scrape time, what raft and the FSM know.
type stateCollector struct{ mx *metrics }

var (
	descHasLeader   = prometheus.NewDesc("fileshare_server_has_leader", "1 if this master knows a leader, else 0.", nil, nil)
	descIsLeader    = prometheus.NewDesc("fileshare_server_is_leader", "1 if this master is the leader, else 0.", nil, nil)
	descTerm        = prometheus.NewDesc("fileshare_raft_term", "This master's current Raft term.", nil, nil)
	descCommit      = prometheus.NewDesc("fileshare_raft_commit_index", "The highest log index this master knows to be committed.", nil, nil)
	descApplied     = prometheus.NewDesc("fileshare_raft_applied_index", "The highest log index applied to this master's index.", nil, nil)
	descLastLog     = prometheus.NewDesc("fileshare_raft_last_log_index", "The last index in this master's log (committed or not).", nil, nil)
	descLastContact = prometheus.NewDesc("fileshare_raft_member_last_contact_seconds",
		"On the leader: seconds since each other member last heard from the leader (as the member reports it; growing while it does not answer).", []string{"member"}, nil)
	descFiles    = prometheus.NewDesc("fileshare_index_files", "Files in this master's copy of the index.", nil, nil)
	descHoldings = prometheus.NewDesc("fileshare_index_holdings", "(file, peer) holdings in this master's copy of the index.", nil, nil)
	descPeers    = prometheus.NewDesc("fileshare_index_peers", "Peers in this master's copy of the index.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHasLeader, descIsLeader, descTerm, descCommit, descApplied, descLastLog, descLastContact, descFiles, descHoldings, descPeers} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.mx.m
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	leaderID, _ := m.Leader()
	gauge(descHasLeader, b2f(leaderID != ""))
	isLeader := m.IsLeader()
	gauge(descIsLeader, b2f(isLeader))
	r := m.raftNode()
	gauge(descTerm, float64(r.CurrentTerm()))
	gauge(descCommit, float64(r.CommitIndex()))
	gauge(descApplied, float64(r.AppliedIndex()))
	gauge(descLastLog, float64(r.LastIndex()))
	counts := m.indexCounts()
	gauge(descFiles, float64(counts.Files))
	gauge(descHoldings, float64(counts.Holdings))
	gauge(descPeers, float64(counts.Peers))
	if isLeader {
		ctx, cancel := context.WithTimeout(m.lifetime(), memberProbeTimeout)
		defer cancel()
		for id, d := range c.mx.probeContacts(ctx) {
			gauge(descLastContact, d.Seconds(), id)
		}
	}
}

var (
	descTrackerAnnounces = prometheus.NewDesc("fileshare_tracker_announces_total",
		"BitTorrent tracker requests this master answered, by protocol (http, udp) and result: ok (an announce answered with peers), failed (any request answered with a failure reason), dropped (not answered: full queue, bad connection ID, connection cap).",
		[]string{"proto", "result"}, nil)
	descTrackerScrapes = prometheus.NewDesc("fileshare_tracker_scrapes_total", "BitTorrent scrapes this master answered, by protocol.", []string{"proto"}, nil)
	descTrackerSwarms  = prometheus.NewDesc("fileshare_tracker_swarms", "BitTorrent swarms (info hashes with at least one peer) in this master's copy of the index.", nil, nil)
	descTrackerPeers   = prometheus.NewDesc("fileshare_tracker_peers", "BitTorrent peer records across all swarms in this master's copy of the index.", nil, nil)
)

// trackerCollector reports the tracker front-ends' counters (tracker.Stats,
// read at scrape time; a front-end that is off has no series) and the
// replicated swarms' size.
type trackerCollector struct{ m metricsSource }

func (c *trackerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descTrackerAnnounces
	ch <- descTrackerScrapes
	ch <- descTrackerSwarms
	ch <- descTrackerPeers
}

func (c *trackerCollector) Collect(ch chan<- prometheus.Metric) {
	httpStats, udpStats := c.m.TrackerStats()
	for _, p := range []struct {
		proto string
		st    *tracker.Stats
	}{{"http", httpStats}, {"udp", udpStats}} {
		if p.st == nil {
			continue
		}
		counter := func(d *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
		}
		counter(descTrackerAnnounces, p.st.Announces.Load(), p.proto, "ok")
		counter(descTrackerAnnounces, p.st.Failures.Load(), p.proto, "failed")
		counter(descTrackerAnnounces, p.st.Dropped.Load(), p.proto, "dropped")
		counter(descTrackerScrapes, p.st.Scrapes.Load(), p.proto)
	}
	swarms, peers := c.m.swarmStats()
	ch <- prometheus.MustNewConstMetric(descTrackerSwarms, prometheus.GaugeValue, float64(swarms))
	ch <- prometheus.MustNewConstMetric(descTrackerPeers, prometheus.GaugeValue, float64(peers))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// memberProbeTimeout bounds one round of Status calls to the other
// members (a scrape on the leader, a dashboard refresh).
const memberProbeTimeout = 300 * time.Millisecond

// probeContacts asks every other voter, in parallel and within ctx, how
// long ago it heard from the leader, records the answers, and returns the
// last contact of every member it has heard about in this term. A member
// that stops answering keeps its last answer, aged by the time since, so
// its last contact grows as a dead follower's should.
func (mx *metrics) probeContacts(ctx context.Context) map[string]time.Duration {
	m := mx.m
	servers, err := m.configuration()
	if err != nil {
		return nil
	}
	var wg sync.WaitGroup
	for _, s := range servers {
		if string(s.ID) == m.ID() || s.Suffrage != raft.Voter {
			continue
		}
		// Owned by this call, which waits for it; ctx bounds it.
		wg.Go(func() {
			var st client.Status
			if err := m.callStatus(ctx, string(s.Address), &st); err == nil {
				mx.contacts.record(&st, time.Now())
			}
		})
	}
	wg.Wait()
	return mx.contacts.ages(m.raftNode().CurrentTerm(), servers, time.Now())
}

// contactTracker remembers, per member, when it last heard from its
// leader (on this master's clock) and in which term.
type contactTracker struct {
	mu    sync.Mutex
	heard map[string]heardFrom
}

type heardFrom struct {
	at   time.Time
	term uint64
}

// record notes what a member's own Status says about its last contact.
func (ct *contactTracker) record(st *client.Status, now time.Time) {
	for _, mem := range st.Members {
		if mem.ID != st.ID || mem.LastContactMillis < 0 {
			continue
		}
		ct.mu.Lock()
		if ct.heard == nil {
			ct.heard = map[string]heardFrom{}
		}
		ct.heard[st.ID] = heardFrom{at: now.Add(-time.Duration(mem.LastContactMillis) * time.Millisecond), term: st.Term}
		ct.mu.Unlock()
	}
}

// ages returns each current member's time since its last contact, for
// members heard from in term (an answer from an older term is about
// another leader). Members no longer in servers are forgotten.
func (ct *contactTracker) ages(term uint64, servers []raft.Server, now time.Time) map[string]time.Duration {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	in := map[string]bool{}
	for _, s := range servers {
		in[string(s.ID)] = true
	}
	out := map[string]time.Duration{}
	for id, h := range ct.heard {
		if !in[id] {
			delete(ct.heard, id)
			continue
		}
		if h.term == term {
			out[id] = max(now.Sub(h.at), 0)
		}
	}
	return out
}

// observeRaft feeds the leader-change counter and the event log from
// raft's observations until ctx ends. It runs on one goroutine owned by
// the master (m.wg). The observer does not block raft: if this loop falls
// behind, raft drops observations, which costs the timeline an event,
// never the cluster its progress.
func (mx *metrics) observeRaft(ctx context.Context) {
	ch := make(chan raft.Observation, 64)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState, raft.RequestVoteRequest, raft.PeerObservation,
			raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	})
	r := mx.m.raftNode()
	r.RegisterObserver(obs)
	defer r.DeregisterObserver(obs)
	for {
		select {
		case o := <-ch:
			mx.observe(o.Data, r.CurrentTerm(), time.Now())
		case <-ctx.Done():
			return
		}
	}
}

func (mx *metrics) observe(data any, term uint64, now time.Time) {
	e := Event{Time: now, Term: term}
	switch d := data.(type) {
	case raft.LeaderObservation:
		if d.LeaderID == "" {
			e.Kind, e.Text = "leader-lost", "lost contact with the leader"
		} else {
			mx.leaderChanges.Inc()
			e.Kind, e.Member, e.Text = "leader", string(d.LeaderID), fmt.Sprintf("%s is the leader", d.LeaderID)
		}
	case raft.RaftState:
		mx.failing.clear() // a new term of leading starts with no failures
		e.Kind, e.Member, e.Text = "state", mx.m.ID(), fmt.Sprintf("%s became %s", mx.m.ID(), d)
	case raft.RequestVoteRequest:
		c := string(d.ID)
		if c == "" {
			c = string(d.Addr)
		}
		e.Kind, e.Member, e.Term = "election", c, d.Term
		e.Text = fmt.Sprintf("%s asks for votes in term %d", c, d.Term)
	case raft.PeerObservation:
		e.Kind, e.Member = "membership", string(d.Peer.ID)
		if d.Removed {
			e.Text = fmt.Sprintf("%s left the configuration", d.Peer.ID)
		} else {
			e.Text = fmt.Sprintf("%s is in the configuration (%s)", d.Peer.ID, d.Peer.Suffrage)
		}
	case raft.FailedHeartbeatObservation:
		// Raft reports every failed retry; the timeline shows the first.
		if !mx.failing.add(string(d.PeerID)) {
			return
		}
		e.Kind, e.Member = "heartbeat-failed", string(d.PeerID)
		e.Text = fmt.Sprintf("heartbeats to %s fail (last contact %s ago)", d.PeerID, now.Sub(d.LastContact).Round(time.Millisecond))
	case raft.ResumedHeartbeatObservation:
		mx.failing.remove(string(d.PeerID))
		e.Kind, e.Member, e.Text = "heartbeat-resumed", string(d.PeerID), fmt.Sprintf("heartbeats to %s resumed", d.PeerID)
	default:
		return
	}
	mx.events.add(e)
}

// Event is one entry of the leadership timeline: a leader change, an
// election (a vote request this master received or sent), a change of
// this master's own state, a membership or heartbeat change.
type Event struct {
	Time   time.Time `json:"-"`
	Millis int64     `json:"t"` // Unix milliseconds
	Kind   string    `json:"kind"`
	Member string    `json:"member,omitempty"`
	Term   uint64    `json:"term"`
	Text   string    `json:"text"`
}

// maxEvents bounds the timeline kept in memory.
const maxEvents = 200

// eventLog is a bounded, ordered log of Events.
type eventLog struct {
	mu  sync.Mutex
	buf []Event
	seq uint64 // events ever added; changes whenever the log does
}

func (l *eventLog) add(e Event) {
	e.Millis = e.Time.UnixMilli()
	l.mu.Lock()
	defer l.mu.Unlock()
	// A candidate's vote request reaches us once per term; drop exact
	// repeats (raft retries) so the timeline stays readable.
	if n := len(l.buf); n > 0 && l.buf[n-1].Kind == e.Kind && l.buf[n-1].Member == e.Member && l.buf[n-1].Term == e.Term && l.buf[n-1].Text == e.Text {
		return
	}
	l.buf = append(l.buf, e)
	if len(l.buf) > maxEvents {
		l.buf = append(l.buf[:0], l.buf[len(l.buf)-maxEvents:]...)
	}
	l.seq++
}

// recent returns a copy of the log, oldest first, and its sequence number.
func (l *eventLog) recent() ([]Event, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.buf...), l.seq
}

// Version names this build (see buildinfo.Version).
func Version() string { return buildinfo.Version() }

// raftSink is hashicorp/raft's go-metrics output as Prometheus metrics.
var raftSink struct {
	once sync.Once
	sink *armonprom.PrometheusSink
	err  error
}

// sharedRaftSink returns the one Prometheus sink that receives raft's and
// raft-boltdb's go-metrics, installing it on first use.
//
// raft v1.7.3 and raft-boltdb emit through hashicorp/go-metrics/compat,
// which (without the hashicorpmetrics build tag) forwards to the global
// of github.com/armon/go-metrics: one sink per process, not per raft. So
// the sink is process-wide too, and each master with MetricsExtensive
// registers that same sink on its own registry. With several masters in
// one process (tests, mastertest) their raft series therefore add up:
// every extensive master shows the samples of all of them. A production
// master is one process, where the series are exactly its own. Once
// installed the sink stays for the life of the process; a master with
// MetricsBasic simply does not register it, so its /metrics has none of
// these series. Samples expire after five minutes without an update.
func sharedRaftSink() (*armonprom.PrometheusSink, error) {
	raftSink.once.Do(func() {
		// NewPrometheusSinkFrom registers the sink somewhere; give it a
		// throwaway registry so the global default stays untouched.
		sink, err := armonprom.NewPrometheusSinkFrom(armonprom.PrometheusOpts{
			Expiration: 5 * time.Minute,
			Registerer: prometheus.NewRegistry(),
			Name:       "fileshare_raft_bridge",
		})
		if err != nil {
			raftSink.err = err
			return
		}
		cfg := armon.DefaultConfig("fileshare")
		cfg.EnableHostname = false
		cfg.EnableHostnameLabel = false
		cfg.EnableRuntimeMetrics = false // the Go collector already reports the runtime
		if _, err := armon.NewGlobal(cfg, sink); err != nil {
			raftSink.err = err
			return
		}
		raftSink.sink = sink
	})
	return raftSink.sink, raftSink.err
}
