package master

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"fileshare/client"
	"fileshare/internal/httplimit"
)

// The dashboard: /ui/ serves a static page (ui/, embedded, no build step)
// that opens /ui/events, a server-sent event stream on which this master
// pushes a JSON snapshot of the cluster every dashboardInterval.
//
// One poller goroutine per master gathers the snapshot, and only while at
// least one browser is subscribed: it asks every other member for its
// Status over the cluster's RPC (as 'fileshare cluster status' does), with
// memberProbeTimeout per round, so a dead member slows nothing down. The
// stream faces strangers, so it is bounded: at most
// Config.HTTPLimits.MaxStreams streams at once and
// MaxStreamsPerSource from one client (so one client cannot lock
// operators out), every write has a deadline of its own (the server's
// WriteTimeout would cut a stream off), and a subscriber that cannot keep
// up skips snapshots rather than queueing them.

//go:embed ui
var uiFiles embed.FS

const (
	// dashboardInterval is the time between two snapshots.
	dashboardInterval = 400 * time.Millisecond
	// dashboardWriteTimeout bounds one snapshot write to a browser; a
	// browser slower than that loses its stream (and reconnects).
	dashboardWriteTimeout = 2 * time.Second
	// versionRetry is how long a member whose version could not be read
	// waits before the poller asks again.
	versionRetry = 5 * time.Second
)

var (
	// ErrTooManyDashboards is the 503 answer to an event stream beyond
	// Config.HTTPLimits.MaxStreams.
	ErrTooManyDashboards = errors.New("too many dashboards are open on this master; close one, or open another master's /ui/")
	// ErrTooManyDashboardsFromClient is the 429 answer to an event stream
	// beyond Config.HTTPLimits.MaxStreamsPerSource from one client.
	ErrTooManyDashboardsFromClient = errors.New("this client already has its share of dashboards open on this master; close one of its tabs")
)

// dashboard owns the event streams' subscriptions and their poller.
type dashboard struct {
	m         dashboardSource
	mx        *metrics // the counters and event log it shows
	logger    *slog.Logger
	heartbeat time.Duration    // Config.HeartbeatTimeout, shown to the page
	election  time.Duration    // Config.ElectionTimeout, shown to the page
	share     *httplimit.Share // the event streams, in all and per client
	http      *http.Client     // reads other members' versions
	ctx       context.Context  // ends at close
	cancel    context.CancelFunc

	mu      sync.Mutex
	subs    map[chan []byte]struct{}
	closed  bool
	polling bool           // the poller runs (or is about to)
	wg      sync.WaitGroup // the poller; Add only under mu while !closed

	// Owned by the poller goroutine.
	prev     *snapshotRates
	versions map[string]versionEntry // by HTTP address
	maxTerm  uint64                  // highest term any member reported
}

type versionEntry struct {
	v    string
	next time.Time // when to ask again, if v == ""
}

// newDashboard makes the dashboard of the master m, showing mx's counters
// and events; cfg gives its HTTP limits and raft timeouts.
func newDashboard(m dashboardSource, mx *metrics, logger *slog.Logger, cfg Config) *dashboard {
	d := &dashboard{m: m, mx: mx, logger: logger, heartbeat: cfg.HeartbeatTimeout, election: cfg.ElectionTimeout,
		share: httplimit.NewShare(cfg.HTTPLimits), http: &http.Client{Timeout: memberProbeTimeout}, subs: map[chan []byte]struct{}{}, versions: map[string]versionEntry{}}
	d.ctx, d.cancel = context.WithCancel(m.lifetime())
	return d
}

// mount adds the dashboard's routes to mux.
func (d *dashboard) mount(mux *http.ServeMux) {
	static, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic(err) // the embedded folder is part of the binary
	}
	files := http.StripPrefix("/ui/", http.FileServerFS(static))
	mux.Handle("GET /ui/", securityHeaders(files))
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /ui/events", d.serveEvents)
	mux.HandleFunc("GET /ui/version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, Version())
	})
}

// securityHeaders forbids the page anything but its own origin: no
// inline script, no third-party resource, no framing.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

// close ends every event stream and waits for the poller. Safe to call
// more than once and from several goroutines.
func (d *dashboard) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}

// subscribe registers a stream and starts the poller if it is the first.
func (d *dashboard) subscribe() (chan []byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrShuttingDownHTTP
	}
	ch := make(chan []byte, 1)
	d.subs[ch] = struct{}{}
	if !d.polling {
		d.polling = true
		d.wg.Add(1)
		// Owned by the dashboard (d.wg, waited in close); it ends when
		// the last subscriber leaves or close cancels d.ctx.
		go d.poll()
	}
	return ch, nil
}

// ErrShuttingDownHTTP is the 503 answer of a master that is stopping.
var ErrShuttingDownHTTP = errors.New("this master is shutting down")

func (d *dashboard) unsubscribe(ch chan []byte) {
	d.mu.Lock()
	delete(d.subs, ch)
	d.mu.Unlock()
}

// serveEvents streams snapshots to one browser until it leaves, a write
// misses its deadline, or the master closes.
func (d *dashboard) serveEvents(w http.ResponseWriter, r *http.Request) {
	release, err := d.share.Acquire(r.RemoteAddr)
	switch {
	case errors.Is(err, httplimit.ErrSourceShare):
		http.Error(w, ErrTooManyDashboardsFromClient.Error(), http.StatusTooManyRequests)
		return
	case err != nil:
		http.Error(w, ErrTooManyDashboards.Error(), http.StatusServiceUnavailable)
		return
	}
	defer release()
	ch, err := d.subscribe()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer d.unsubscribe(ch)
	rc := http.NewResponseController(w)
	// A stream outlives the server's read and write timeouts: lift the
	// read deadline (the request has no body; the server's background
	// read only watches for the browser leaving) and set a write deadline
	// before each write.
	if err := rc.SetReadDeadline(time.Time{}); err != nil {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(s string) bool {
		if err := rc.SetWriteDeadline(time.Now().Add(dashboardWriteTimeout)); err != nil {
			return false
		}
		if _, err := io.WriteString(w, s); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write("retry: 1000\n\n") {
		return
	}
	for {
		select {
		case b := <-ch:
			if !write("data: " + string(b) + "\n\n") {
				return
			}
		case <-r.Context().Done():
			return
		case <-d.ctx.Done():
			return
		}
	}
}

// poll builds and publishes a snapshot every dashboardInterval while
// anyone is subscribed.
func (d *dashboard) poll() {
	defer d.wg.Done()
	t := time.NewTicker(dashboardInterval)
	defer t.Stop()
	for {
		snap := d.snapshot(d.ctx, time.Now())
		b, err := json.Marshal(snap)
		if err != nil {
			d.logger.Error("encode dashboard snapshot", "err", err)
		}
		d.mu.Lock()
		if len(d.subs) == 0 || d.closed {
			d.polling = false
			d.mu.Unlock()
			return
		}
		for ch := range d.subs {
			// Latest wins: replace a snapshot the browser has not taken.
			select {
			case <-ch:
			default:
			}
			ch <- b
		}
		d.mu.Unlock()
		select {
		case <-t.C:
		case <-d.ctx.Done():
			d.mu.Lock()
			d.polling = false
			d.mu.Unlock()
			return
		}
	}
}

// Snapshot is one dashboard frame: this master's view of the cluster.
type Snapshot struct {
	Now        int64         `json:"now"` // Unix milliseconds
	Self       string        `json:"self"`
	LeaderID   string        `json:"leader_id"`
	Term       uint64        `json:"term"`
	Members    []MemberView  `json:"members"`
	Voters     int           `json:"voters"`
	Quorum     int           `json:"quorum"`
	Healthy    int           `json:"healthy"`   // voters that answered and know the leader
	CanLose    int           `json:"can_lose"`  // masters the cluster can lose now and still commit
	Tolerance  string        `json:"tolerance"` // the same, in words
	Index      IndexView     `json:"index"`
	Swarms     SwarmsView    `json:"swarms"`
	Rates      RatesView     `json:"rates"`
	Events     []Event       `json:"events"`
	Config     DashboardConf `json:"config"`
	Generation uint64        `json:"generation"` // changes whenever Events does
}

// DashboardConf is the timing a student needs to read the timeline.
type DashboardConf struct {
	HeartbeatMillis int64 `json:"heartbeat_ms"`
	ElectionMillis  int64 `json:"election_ms"`
	IntervalMillis  int64 `json:"interval_ms"`
}

// MemberView is one member's row.
type MemberView struct {
	ID                string `json:"id"`
	Addr              string `json:"addr"`
	HTTPAddr          string `json:"http_addr"`
	Suffrage          string `json:"suffrage"`
	Reachable         bool   `json:"reachable"`
	State             string `json:"state"`
	Term              uint64 `json:"term"`
	LastIndex         uint64 `json:"last_index"`
	CommitIndex       uint64 `json:"commit_index"`
	AppliedIndex      uint64 `json:"applied_index"`
	Lag               int64  `json:"lag"`             // the leader's commit index minus this member's applied index; -1 unknown
	LastContactMillis int64  `json:"last_contact_ms"` // since it heard from the leader; 0 on the leader, -1 unknown
	Digest            string `json:"digest"`
	DigestMatch       string `json:"digest_match"` // "leader", "same", "behind", "diverged" or "unknown"
	Version           string `json:"version"`
	LeaderID          string `json:"leader_id"` // whom it follows
	Error             string `json:"error,omitempty"`
}

// IndexView is this master's copy of the index.
type IndexView struct {
	Files    int `json:"files"`
	Holdings int `json:"holdings"`
	Peers    int `json:"peers"`
}

// SwarmsView is this master's copy of the BitTorrent swarms.
type SwarmsView struct {
	Swarms int `json:"swarms"`
	Peers  int `json:"peers"`
}

// RatesView is per second, over the last snapshot interval. Entries is
// the cluster's commit rate (the leader's commit index); the others count
// the calls this master answered.
type RatesView struct {
	Entries    float64 `json:"entries"`
	Writes     float64 `json:"writes"`
	Reads      float64 `json:"reads"`
	Heartbeats float64 `json:"heartbeats"`
	Announces  float64 `json:"announces"` // BitTorrent announces (HTTP and UDP)
}

type snapshotRates struct {
	at                       time.Time
	commit                   uint64
	writes, reads, heartbeat uint64
	announces                uint64
}

// snapshot gathers one frame. It runs on the poller goroutine.
func (d *dashboard) snapshot(ctx context.Context, now time.Time) Snapshot {
	m := d.m
	self := m.Status(ctx, false)
	self.Members = slices.Clone(self.Members)
	statuses := map[string]*client.Status{m.ID(): &self}
	errs := map[string]string{}
	var mu sync.Mutex
	pctx, cancel := context.WithTimeout(ctx, memberProbeTimeout)
	var wg sync.WaitGroup
	for _, mem := range self.Members {
		if mem.ID == m.ID() {
			continue
		}
		// Owned by snapshot, which waits for it; pctx bounds it.
		wg.Go(func() {
			var st client.Status
			err := m.callStatus(pctx, mem.Addr, &st)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[mem.ID] = err.Error()
				return
			}
			statuses[mem.ID] = &st
			d.mx.contacts.record(&st, now)
		})
	}
	wg.Wait()
	cancel()
	ownContact := m.lastLeaderContact()

	snap := Snapshot{
		Now: now.UnixMilli(), Self: m.ID(), LeaderID: self.LeaderID, Term: self.Term,
		Index:  IndexView{Files: self.Files, Holdings: self.Holdings, Peers: self.Peers},
		Config: DashboardConf{HeartbeatMillis: d.heartbeat.Milliseconds(), ElectionMillis: d.election.Milliseconds(), IntervalMillis: dashboardInterval.Milliseconds()},
	}
	snap.Swarms.Swarms, snap.Swarms.Peers = m.swarmStats()
	leader := statuses[self.LeaderID]
	for _, mem := range self.Members {
		v := MemberView{ID: mem.ID, Addr: mem.Addr, Suffrage: string(mem.Suffrage), Lag: -1, LastContactMillis: -1, DigestMatch: "unknown", State: "unreachable"}
		st := statuses[mem.ID]
		if st == nil {
			v.Error = errs[mem.ID]
		} else {
			v.Reachable = true
			v.HTTPAddr, v.State, v.Term = st.HTTPAddr, string(st.State), st.Term
			v.LastIndex, v.CommitIndex, v.AppliedIndex = st.LastIndex, st.CommitIndex, st.AppliedIndex
			v.Digest, v.LeaderID = st.Digest, st.LeaderID
			if mem.ID == m.ID() {
				v.LastContactMillis, v.Version = ownContact, Version()
			} else {
				for _, sm := range st.Members {
					if sm.ID == st.ID {
						v.LastContactMillis = sm.LastContactMillis
					}
				}
				v.Version = d.version(ctx, st.HTTPAddr, now)
			}
			if leader != nil {
				v.Lag = int64(leader.CommitIndex) - int64(st.AppliedIndex)
				switch {
				case mem.ID == self.LeaderID:
					v.DigestMatch = "leader"
				case st.Digest == leader.Digest:
					v.DigestMatch = "same"
				case st.AppliedIndex != leader.AppliedIndex:
					v.DigestMatch = "behind" // not comparable yet: it has applied a different prefix
				default:
					v.DigestMatch = "diverged"
				}
			}
			if st.Term > d.maxTerm {
				if d.maxTerm != 0 {
					d.mx.events.add(Event{Time: now, Kind: "term", Member: mem.ID, Term: st.Term,
						Text: fmt.Sprintf("term %d begins (first seen on %s)", st.Term, mem.ID)})
				}
				d.maxTerm = st.Term
			}
		}
		if mem.Suffrage == client.Voter {
			snap.Voters++
			if v.Reachable && v.LeaderID != "" && self.LeaderID != "" {
				snap.Healthy++
			}
		}
		snap.Members = append(snap.Members, v)
	}
	snap.Quorum = snap.Voters/2 + 1
	snap.CanLose = snap.Healthy - snap.Quorum
	switch {
	case self.LeaderID == "":
		snap.CanLose = -1
		snap.Tolerance = "no leader: the cluster cannot commit writes until an election succeeds"
	case snap.CanLose < 0:
		snap.CanLose = -1
		snap.Tolerance = fmt.Sprintf("only %d of %d voters answer: fewer than a quorum of %d", snap.Healthy, snap.Voters, snap.Quorum)
	case snap.CanLose == 1:
		snap.Tolerance = "can lose 1 master"
	default:
		snap.Tolerance = fmt.Sprintf("can lose %d masters", snap.CanLose)
	}
	if snap.Voters > 0 && snap.CanLose >= 0 && snap.Healthy < snap.Voters {
		snap.Tolerance += fmt.Sprintf(" (%d of %d voters down; with all up it could lose %d)", snap.Voters-snap.Healthy, snap.Voters, snap.Voters-snap.Quorum)
	}

	cur := &snapshotRates{at: now, writes: d.mx.writes.Load(), reads: d.mx.reads.Load(), heartbeat: d.mx.heartbeats.Load(), announces: m.announces()}
	if leader != nil {
		cur.commit = leader.CommitIndex
	}
	if p := d.prev; p != nil {
		if dt := now.Sub(p.at).Seconds(); dt > 0 {
			rate := func(a, b uint64) float64 {
				if a < b {
					return 0 // a new leader, or a restarted counter
				}
				return float64(a-b) / dt
			}
			if cur.commit != 0 && p.commit != 0 {
				snap.Rates.Entries = rate(cur.commit, p.commit)
			}
			snap.Rates.Writes = rate(cur.writes, p.writes)
			snap.Rates.Reads = rate(cur.reads, p.reads)
			snap.Rates.Heartbeats = rate(cur.heartbeat, p.heartbeat)
			snap.Rates.Announces = rate(cur.announces, p.announces)
		}
	}
	d.prev = cur
	snap.Events, snap.Generation = d.mx.events.recent()
	return snap
}

// version reads another master's build from its HTTP port, once per
// address (retrying a failure after versionRetry). It runs on the poller.
func (d *dashboard) version(ctx context.Context, httpAddr string, now time.Time) string {
	if httpAddr == "" {
		return ""
	}
	if e, ok := d.versions[httpAddr]; ok && (e.v != "" || now.Before(e.next)) {
		return e.v
	}
	ctx, cancel := context.WithTimeout(ctx, memberProbeTimeout)
	defer cancel()
	v := ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/ui/version", nil)
	if err == nil {
		if resp, err := d.http.Do(req); err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 128))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				v = strings.TrimSpace(string(b))
			}
		}
	}
	d.versions[httpAddr] = versionEntry{v: v, next: now.Add(versionRetry)}
	return v
}
