package bench

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"fileshare/client"
)

// Mix is the share of each kind of announce in a load, in parts of their
// sum: Changes are started events of new peers (membership changes, which
// a cluster commits through Raft), Renew re-announces of started peers
// (lease renewals), Stopped stopped events of started peers.
type Mix struct {
	Changes, Renew, Stopped int
}

// DefaultMix is what a tracker sees from a settled population: most
// announces are periodic re-announces.
var DefaultMix = Mix{Changes: 10, Renew: 85, Stopped: 5}

// ErrNoPeerStarted means the tracker answered no started announce of the
// warm-up, so there is nothing to measure.
var ErrNoPeerStarted = errors.New("the tracker started none of the warm-up's peers")

// ErrBadMix means a --mix value cannot be parsed.
var ErrBadMix = errors.New("bad announce mix")

// ParseMix parses "changes=10,renew=85,stopped=5"; a kind left out is 0.
// The parts need not sum to 100, but must not all be zero.
func ParseMix(s string) (Mix, error) {
	var m Mix
	for part := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 0 {
			return m, fmt.Errorf("%w: %q is not KIND=N with N ≥ 0 (e.g. changes=10,renew=85,stopped=5)", ErrBadMix, part)
		}
		switch k {
		case "changes":
			m.Changes = n
		case "renew":
			m.Renew = n
		case "stopped":
			m.Stopped = n
		default:
			return m, fmt.Errorf("%w: unknown kind %q; use changes, renew and stopped", ErrBadMix, k)
		}
	}
	if m.Changes+m.Renew+m.Stopped == 0 {
		return m, fmt.Errorf("%w: every part is zero", ErrBadMix)
	}
	return m, nil
}

func (m Mix) String() string {
	return fmt.Sprintf("changes=%d,renew=%d,stopped=%d", m.Changes, m.Renew, m.Stopped)
}

// opKind is one kind of announce a load sends.
type opKind int

const (
	opStart opKind = iota
	opRenew
	opStop
	numOpKinds
)

var opNames = [numOpKinds]string{"started", "renew", "stopped"}

// pick draws a kind by the mix's weights.
func (m Mix) pick(r *rand.Rand) opKind {
	n := r.IntN(m.Changes + m.Renew + m.Stopped)
	switch {
	case n < m.Changes:
		return opStart
	case n < m.Changes+m.Renew:
		return opRenew
	default:
		return opStop
	}
}

// SwarmHash returns the info-hash of the benchmark's swarm i: the SHA-1 of
// "fileshare bench swarm <i>". It is the same in every run, so a tracker
// that serves only listed torrents (Debian's opentracker) can be given
// the list (WriteSwarmList).
func SwarmHash(i int) [20]byte {
	return sha1.Sum([]byte("fileshare bench swarm " + strconv.Itoa(i)))
}

// WriteSwarmList writes the hex info-hashes of swarms 0..n-1, one a line,
// the format of opentracker's access.whitelist file.
func WriteSwarmList(w io.Writer, n int) error {
	bw := bufio.NewWriter(w)
	for i := range n {
		h := SwarmHash(i)
		bw.WriteString(hex.EncodeToString(h[:]))
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// peerModel is the simulated population one worker owns: the peers it
// started and has not stopped. Worker w of W owns the peers with global
// index g ≡ w (mod W); peer g is in swarm g mod swarms and listens on
// port 1024 + (g / swarms) mod 64511, so two peers of one swarm never
// share a port (a tracker keys peers from one IP by port) until a swarm
// holds 64511 peers. Everything follows from the seed: the same seed
// gives the same sequence of announces.
type peerModel struct {
	worker, workers, swarms int
	tag                     uint32 // from the seed: runs with other seeds announce other peer IDs
	mix                     Mix
	rng                     *rand.Rand
	started                 int   // peers this worker has started so far
	active                  []int // global indices of started, not stopped peers
}

func newPeerModel(seed uint64, worker, workers, swarms int, mix Mix) *peerModel {
	return &peerModel{
		worker: worker, workers: workers, swarms: swarms, mix: mix,
		tag: uint32(seed>>32) ^ uint32(seed),
		rng: rand.New(rand.NewPCG(seed, uint64(worker))),
	}
}

// next picks the next announce and fills p with it. A renew or stop with
// no active peer starts one instead. The model counts a started peer as
// active and a stopped one as gone at once, whatever the tracker answers:
// a failed start is renewed later as a peer the tracker does not know,
// which a tracker treats as a join.
func (m *peerModel) next(p *announceParams, kind opKind) opKind {
	if kind != opStart && len(m.active) == 0 {
		kind = opStart
	}
	var g int
	switch kind {
	case opStart:
		g = m.worker + m.workers*m.started
		m.started++
		m.active = append(m.active, g)
		p.Event = evStarted
	case opRenew:
		g = m.active[m.rng.IntN(len(m.active))]
		p.Event = evNone
	case opStop:
		i := m.rng.IntN(len(m.active))
		g = m.active[i]
		m.active[i] = m.active[len(m.active)-1]
		m.active = m.active[:len(m.active)-1]
		p.Event = evStopped
	}
	m.fill(p, g)
	return kind
}

// fill sets p's identity fields for global peer g.
func (m *peerModel) fill(p *announceParams, g int) {
	p.InfoHash = SwarmHash(g % m.swarms)
	copy(p.PeerID[:8], "-FB0001-")
	binary.BigEndian.PutUint32(p.PeerID[8:], m.tag)
	binary.BigEndian.PutUint64(p.PeerID[12:], uint64(g))
	p.Port = uint16(1024 + (g/m.swarms)%64511)
	p.Key = uint32(g) ^ m.tag
	p.Left = 1 << 20
	if g%4 == 0 {
		p.Left = 0 // a quarter of the peers seed
	}
	p.NumWant = 50 // aria2's default; others ask 80-200
	if p.Event == evStopped {
		p.NumWant = 0
	}
}

// AnnounceConfig describes an announce load: Clients workers, each with
// its own connection (HTTP keep-alive or a UDP socket) to one of Targets,
// send one announce, wait for its answer and send the next.
type AnnounceConfig struct {
	// Targets are announce URLs, all http:// or all udp://; worker i uses
	// Targets[i % len(Targets)]. Required.
	Targets []string
	// Clients is the number of workers; zero means 64.
	Clients int
	// Duration is how long to measure after the warm-up; zero means 10 s.
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
	// Timeout bounds one announce; zero means 5 s.
	Timeout time.Duration
	// Seed makes the announce sequence reproducible; zero means 1.
	Seed uint64
	// Cluster, if set, is a status client of the cluster behind Targets:
	// the leader changes during the measurement are counted through it.
	Cluster *client.Client
	// Measuring, if set, is called on a goroutine of its own when the
	// measurement starts, with its duration; the measurement's result
	// waits for it to return (a profile taken over the measurement).
	Measuring func(ctx context.Context, d time.Duration)
}

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
	if c.Warmup == 0 {
		c.Warmup = 3 * c.Swarms
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	return nil
}

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
	var f *failureError
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
		s.Failures[f.reason]++
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

	Elapsed time.Duration
	AnnounceStats
	// LeaderChanges is how many times the cluster's leader changed during
	// the measurement, or -1 when no cluster was watched.
	LeaderChanges int
}

// Rate is answered announces per second during the measurement.
func (r *AnnounceResult) Rate() float64 { return float64(r.Answered()) / r.Elapsed.Seconds() }

// errClosed means the tracker closed or reset an HTTP connection without
// answering the request sent on it.
var errClosed = errors.New("the tracker closed the connection without answering (a connection cap?)")

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// failureError is an announce answered with a failure reason.
type failureError struct{ reason string }

func (e *failureError) Error() string { return "tracker refused: " + e.reason }

// announcer sends announces over one connection. It is used by one
// goroutine at a time.
type announcer interface {
	// announce sends p and waits for the answer; it returns how many
	// peers the answer held, an error for which isTimeout holds on a
	// timeout, and a
	// *failureError for a failure reason.
	announce(p *announceParams) (int, error)
	close()
	connects() int
}

// newAnnouncer returns an announcer for an http:// or udp:// announce URL.
func newAnnouncer(target string, timeout time.Duration, seed uint64) (announcer, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("announce URL %q: %w", target, err)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("announce URL %q has no port; write it as http://HOST:PORT/announce or udp://HOST:PORT/announce", target)
	}
	switch u.Scheme {
	case "http":
		path := u.EscapedPath()
		if path == "" {
			path = "/announce"
		}
		return &httpAnnouncer{addr: u.Host, path: path, timeout: timeout}, nil
	case "udp":
		return &udpAnnouncer{addr: u.Host, timeout: timeout, tid: uint32(seed)}, nil
	}
	return nil, fmt.Errorf("announce URL %q: the scheme must be http or udp", target)
}

// httpAnnouncer sends HTTP/1.1 GETs over one keep-alive connection and
// dials again when the tracker closes it (opentracker closes after every
// answer).
type httpAnnouncer struct {
	addr, path string
	timeout    time.Duration
	conn       net.Conn
	br         *bufio.Reader
	buf        []byte
}

func (h *httpAnnouncer) connects() int { return 0 }

func (h *httpAnnouncer) close() {
	if h.conn != nil {
		h.conn.Close()
		h.conn = nil
	}
}

func (h *httpAnnouncer) announce(p *announceParams) (int, error) {
	deadline := time.Now().Add(h.timeout)
	h.buf = appendHTTPAnnounce(h.buf[:0], h.addr, h.path, p)
	for attempt := 0; ; attempt++ {
		fresh := h.conn == nil
		if fresh {
			conn, err := net.DialTimeout("tcp", h.addr, h.timeout)
			if err != nil {
				return 0, err
			}
			h.conn = conn
			if h.br == nil {
				h.br = bufio.NewReaderSize(conn, 4096)
			} else {
				h.br.Reset(conn)
			}
		}
		h.conn.SetDeadline(deadline)
		n, unanswered, err := h.roundTrip()
		if err == nil || !unanswered || fresh || attempt > 0 || isTimeout(err) {
			return n, err
		}
		// A kept-alive connection the tracker had closed before reading
		// the request: dial again, once.
	}
}

// roundTrip sends h.buf and reads the answer; unanswered says that the
// connection broke before any answer came (and was closed).
func (h *httpAnnouncer) roundTrip() (peers int, unanswered bool, err error) {
	if _, err := h.conn.Write(h.buf); err != nil {
		h.close()
		return 0, true, fmt.Errorf("%w: %w", errClosed, err)
	}
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		h.close()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			return 0, true, fmt.Errorf("%w: %w", errClosed, err)
		}
		return 0, false, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil || resp.Close {
		h.close()
	}
	if err != nil {
		return 0, false, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("HTTP status %s: %.100q", resp.Status, body)
	}
	r, err := parseHTTPReply(body)
	if err != nil {
		return 0, false, err
	}
	if r.Failure != "" {
		return 0, false, &failureError{r.Failure}
	}
	return r.Peers, false, nil
}

// udpConnIDLifetime is how long a client may use a connection ID (BEP 15:
// one minute); the announcer connects again after that.
const udpConnIDLifetime = 60 * time.Second

// udpAnnouncer sends BEP 15 announces from one socket, reusing a
// connection ID for udpConnIDLifetime. It does not retransmit: a lost
// packet is a timeout, which is what the benchmark reports.
type udpAnnouncer struct {
	addr    string
	timeout time.Duration
	conn    *net.UDPConn
	connID  uint64
	connAt  time.Time // when connID was obtained; zero: none
	tid     uint32
	failRun int // error replies in a row
	nconn   int
	buf     []byte
	rbuf    []byte
}

func (u *udpAnnouncer) connects() int { return u.nconn }

func (u *udpAnnouncer) close() {
	if u.conn != nil {
		u.conn.Close()
		u.conn = nil
	}
}

func (u *udpAnnouncer) announce(p *announceParams) (int, error) {
	deadline := time.Now().Add(u.timeout)
	if u.conn == nil {
		raddr, err := net.ResolveUDPAddr("udp", u.addr)
		if err != nil {
			return 0, err
		}
		if u.conn, err = net.DialUDP("udp", nil, raddr); err != nil {
			return 0, err
		}
		u.conn.SetReadBuffer(1 << 20)
		u.rbuf = make([]byte, 2048)
	}
	u.conn.SetDeadline(deadline)
	if u.connAt.IsZero() || time.Since(u.connAt) >= udpConnIDLifetime {
		u.tid++
		u.buf = appendUDPConnect(u.buf[:0], u.tid)
		u.nconn++
		r, err := u.exchange(udpActConnect)
		if err != nil {
			return 0, err
		}
		u.connID, u.connAt = r.ConnID, time.Now()
	}
	u.tid++
	u.buf = appendUDPAnnounce(u.buf[:0], u.connID, u.tid, p)
	r, err := u.exchange(udpActAnnounce)
	var f *failureError
	switch {
	case errors.As(err, &f):
		// BEP 15 gives errors no codes: an expired or unknown connection
		// ID (a restarted tracker) shows as every announce failing, a
		// refused torrent as one. Connect again after two in a row.
		if u.failRun++; u.failRun >= 2 {
			u.connAt, u.failRun = time.Time{}, 0
		}
		return 0, err
	case isTimeout(err):
		u.connAt = time.Time{} // trackers drop packets with an unknown ID
		return 0, err
	case err != nil:
		return 0, err
	}
	u.failRun = 0
	return r.Peers, nil
}

// exchange sends u.buf and reads until the reply with u.tid arrives;
// replies to earlier, timed-out requests are dropped.
func (u *udpAnnouncer) exchange(want uint32) (udpReply, error) {
	if _, err := u.conn.Write(u.buf); err != nil {
		return udpReply{}, err
	}
	for {
		n, err := u.conn.Read(u.rbuf)
		if err != nil {
			return udpReply{}, err
		}
		r, err := parseUDPReply(u.rbuf[:n])
		if err == nil && r.TID != u.tid {
			continue
		}
		switch {
		case err != nil:
			return r, err
		case r.Action == udpActError:
			return r, &failureError{r.Failure}
		case r.Action != want:
			return r, fmt.Errorf("%w: action %d in answer to action %d", errBadReply, r.Action, want)
		}
		return r, nil
	}
}

// announceWorker is one worker's model, connection and counts.
type announceWorker struct {
	model *peerModel
	ann   announcer
	p     announceParams
	stats AnnounceStats
}

// step sends one announce of kind (opStart during the warm-up, else drawn
// from the mix) and records it in st.
func (w *announceWorker) step(kind opKind, st *AnnounceStats) {
	k := w.model.next(&w.p, kind)
	t0 := time.Now()
	n, err := w.ann.announce(&w.p)
	st.record(k, n, time.Since(t0), err)
}

// Announce runs an announce load against cfg.Targets: a warm-up that
// starts cfg.Warmup peers (split over the workers), then cfg.Duration of
// announces drawn from cfg.Mix. It writes a warm-up line and one summary
// line to w. What the trackers answered, errors included, is in the
// result; Announce itself fails only if the load cannot be set up (a bad
// URL), if the warm-up started no peer at all (ErrNoPeerStarted, with
// the result so far), or with ctx's error.
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
		ann, err := newAnnouncer(t, cfg.Timeout, cfg.Seed*1000003+uint64(i))
		if err != nil {
			return nil, err
		}
		defer ann.close()
		workers[i] = &announceWorker{model: newPeerModel(cfg.Seed, i, cfg.Clients, cfg.Swarms, cfg.Mix), ann: ann}
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
				wk.step(opStart, &wk.stats)
			}
		})
	}
	wg.Wait()
	res.WarmupElapsed = time.Since(start)
	warmConnects := 0
	for _, wk := range workers {
		res.Warmup.add(&wk.stats)
		warmConnects += wk.ann.connects()
		wk.stats = AnnounceStats{Lat: make(Latencies, 0, 4096)}
	}
	res.Warmup.Connects = warmConnects
	res.WarmupPeers = res.Warmup.Answered()
	fmt.Fprintf(w, "announce %s warm-up: started %d peers in %s, errors: %s\n",
		proto, res.WarmupPeers, res.WarmupElapsed.Round(time.Millisecond), res.Warmup.errorSummary())
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if cfg.Warmup > 0 && res.WarmupPeers == 0 {
		return res, fmt.Errorf("%w: %s (a tracker that serves only listed torrents needs this benchmark's info-hashes: --write-swarms FILE writes them)", ErrNoPeerStarted, res.Warmup.errorSummary())
	}

	// The measurement.
	var leaders *leaderWatch
	if cfg.Cluster != nil {
		leaders = watchLeaders(ctx, cfg.Cluster)
	}
	var hook sync.WaitGroup
	if cfg.Measuring != nil {
		hook.Go(func() { cfg.Measuring(ctx, cfg.Duration) })
	}
	stop := time.Now().Add(cfg.Duration)
	start = time.Now()
	for _, wk := range workers {
		wg.Go(func() {
			for time.Now().Before(stop) && ctx.Err() == nil {
				wk.step(cfg.Mix.pick(wk.model.rng), &wk.stats)
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	hook.Wait()
	if leaders != nil {
		res.LeaderChanges = leaders.finish()
	}
	for _, wk := range workers {
		res.add(&wk.stats)
		res.Connects += wk.ann.connects()
	}
	res.Connects -= warmConnects
	changes := ""
	if res.LeaderChanges >= 0 {
		changes = fmt.Sprintf(", leader_changes=%d", res.LeaderChanges)
	}
	fmt.Fprintf(w, "announce %s: %.0f announces/s, %s, clients=%d, swarms=%d, mix=%s, answered=%d (started=%d renew=%d stopped=%d), peers/answer=%.1f, errors=%d: %s%s, duration=%s\n",
		proto, res.Rate(), res.Lat.Summary(), cfg.Clients, cfg.Swarms, cfg.Mix, res.Answered(),
		res.OK[opStart], res.OK[opRenew], res.OK[opStop], float64(res.Peers)/float64(max(res.Answered(), 1)),
		res.Errors(), res.errorSummary(), changes, res.Elapsed.Round(time.Millisecond))
	return res, ctx.Err()
}
