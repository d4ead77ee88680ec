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
	"math"
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

	"fileshare/btclient"
	"fileshare/client"
	"fileshare/tracker"
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
//
// In a flash crowd (hot > 0) every announce of the measurement starts a
// new peer on one of swarms 0..hot-1: hot peer h of the worker has
// global hot index g = worker + workers*h, is in swarm g mod hot, listens
// on port 65535 - (g / hot) mod 64511 (counting down, away from the
// settled peers' ports) and has the top bit of its peer-ID index set.
// Hot peers are never renewed or stopped.
type peerModel struct {
	worker, workers, swarms int
	tag                     uint32 // from the seed: runs with other seeds announce other peer IDs
	mix                     Mix
	hot                     int // flash crowd: hot swarms; 0: draw from mix
	rng                     *rand.Rand
	started                 int   // peers this worker has started so far
	hotStarted              int   // hot peers this worker has started so far
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
func (m *peerModel) next(p *btclient.Announce, kind opKind) opKind {
	if kind != opStart && len(m.active) == 0 {
		kind = opStart
	}
	var g int
	switch kind {
	case opStart:
		g = m.worker + m.workers*m.started
		m.started++
		m.active = append(m.active, g)
		p.Event = tracker.EventStarted
	case opRenew:
		g = m.active[m.rng.IntN(len(m.active))]
		p.Event = tracker.EventNone
	case opStop:
		i := m.rng.IntN(len(m.active))
		g = m.active[i]
		m.active[i] = m.active[len(m.active)-1]
		m.active = m.active[:len(m.active)-1]
		p.Event = tracker.EventStopped
	}
	m.fill(p, g)
	return kind
}

// draw picks the measurement's next announce: in a flash crowd a new hot
// peer, else a kind drawn from the mix.
func (m *peerModel) draw(p *btclient.Announce) opKind {
	if m.hot <= 0 {
		return m.next(p, m.mix.pick(m.rng))
	}
	g := m.worker + m.workers*m.hotStarted
	m.hotStarted++
	p.Event = tracker.EventStarted
	m.fillPeer(p, g%m.hot, uint16(65535-(g/m.hot)%64511), uint64(g)|1<<63)
	p.Left = 1 << 20 // a crowd arrives to download
	return opStart
}

// fill sets p's identity fields for global peer g.
func (m *peerModel) fill(p *btclient.Announce, g int) {
	m.fillPeer(p, g%m.swarms, uint16(1024+(g/m.swarms)%64511), uint64(g))
	p.Left = 1 << 20
	if g%4 == 0 {
		p.Left = 0 // a quarter of the peers seed
	}
}

// fillPeer sets p's identity fields for the peer with index id in swarm
// swarm, listening on port.
func (m *peerModel) fillPeer(p *btclient.Announce, swarm int, port uint16, id uint64) {
	p.InfoHash = SwarmHash(swarm)
	copy(p.PeerID[:8], "-FB0001-")
	binary.BigEndian.PutUint32(p.PeerID[8:], m.tag)
	binary.BigEndian.PutUint64(p.PeerID[12:], id)
	p.Port = port
	p.Key, p.HasKey = uint32(id)^uint32(id>>32)^m.tag, true
	p.NumWant = 50 // aria2's default; others ask 80-200
	if p.Event == tracker.EventStopped {
		p.NumWant = 0
	}
}

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
	if c.Warmup == 0 {
		c.Warmup = 3 * c.Swarms
	}
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
	if c.Seed == 0 {
		c.Seed = 1
	}
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

// errClosed means the tracker closed or reset an HTTP connection without
// answering the request sent on it.
var errClosed = errors.New("the tracker closed the connection without answering (a connection cap?)")

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// announcer sends announces over one connection. It is used by one
// goroutine at a time.
type announcer interface {
	// announce sends p and waits for the answer until deadline; it
	// returns how many peers the answer held, an error for which
	// isTimeout holds on a timeout, and a *btclient.FailureError for a failure
	// reason.
	announce(p *btclient.Announce, deadline time.Time) (int, error)
	close()
	connects() int
}

// newAnnouncer returns an announcer for an http:// or udp:// announce URL.
func newAnnouncer(target string, seed uint64) (announcer, error) {
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
		return &httpAnnouncer{addr: u.Host, path: path}, nil
	case "udp":
		return &udpAnnouncer{addr: u.Host, tid: uint32(seed)}, nil
	}
	return nil, fmt.Errorf("announce URL %q: the scheme must be http or udp", target)
}

// httpAnnouncer sends HTTP/1.1 GETs over one keep-alive connection and
// dials again when the tracker closes it (opentracker closes after every
// answer).
type httpAnnouncer struct {
	addr, path string
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

func (h *httpAnnouncer) announce(p *btclient.Announce, deadline time.Time) (int, error) {
	h.buf = appendHTTPAnnounce(h.buf[:0], h.addr, h.path, p)
	for attempt := 0; ; attempt++ {
		fresh := h.conn == nil
		if fresh {
			conn, err := net.DialTimeout("tcp", h.addr, time.Until(deadline))
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
	r, err := btclient.ParseAnnounceSummary(body)
	if err != nil {
		return 0, false, err
	}
	if r.Failure != "" {
		return 0, false, &btclient.FailureError{Reason: r.Failure}
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

// dial opens the announcer's socket if it has none.
func (u *udpAnnouncer) dial() error {
	if u.conn != nil {
		return nil
	}
	raddr, err := net.ResolveUDPAddr("udp", u.addr)
	if err != nil {
		return err
	}
	if u.conn, err = net.DialUDP("udp", nil, raddr); err != nil {
		return err
	}
	u.conn.SetReadBuffer(1 << 20)
	u.rbuf = make([]byte, 2048)
	return nil
}

// connect obtains a connection ID (BEP 15's connect exchange) if the
// socket has none younger than maxAge. The socket's deadline must be set.
func (u *udpAnnouncer) connect(maxAge time.Duration) error {
	if !u.connAt.IsZero() && time.Since(u.connAt) < maxAge {
		return nil
	}
	u.tid++
	u.buf = btclient.AppendConnectRequest(u.buf[:0], u.tid)
	u.nconn++
	r, err := u.exchange(tracker.UDPActionConnect)
	if err != nil {
		return err
	}
	u.connID, u.connAt = r.ConnID, time.Now()
	return nil
}

func (u *udpAnnouncer) announce(p *btclient.Announce, deadline time.Time) (int, error) {
	if err := u.dial(); err != nil {
		return 0, err
	}
	u.conn.SetDeadline(deadline)
	if err := u.connect(udpConnIDLifetime); err != nil {
		return 0, err
	}
	u.tid++
	u.buf = btclient.AppendAnnounceRequest(u.buf[:0], u.connID, u.tid, p)
	r, err := u.exchange(tracker.UDPActionAnnounce)
	var f *btclient.FailureError
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
func (u *udpAnnouncer) exchange(want uint32) (btclient.UDPReply, error) {
	if _, err := u.conn.Write(u.buf); err != nil {
		return btclient.UDPReply{}, err
	}
	for {
		n, err := u.conn.Read(u.rbuf)
		if err != nil {
			return btclient.UDPReply{}, err
		}
		r, err := btclient.ParseUDPReply(u.rbuf[:n])
		if err == nil && r.TID != u.tid {
			continue
		}
		switch {
		case err != nil:
			return r, err
		case r.Action == tracker.UDPActionError:
			return r, &btclient.FailureError{Reason: r.Failure}
		case r.Action != want:
			return r, fmt.Errorf("%w: action %d in answer to action %d", btclient.ErrMalformedReply, r.Action, want)
		}
		return r, nil
	}
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
		return res, fmt.Errorf("%w: %s (a tracker that serves only listed torrents needs this benchmark's info-hashes: --write-swarms FILE writes them)", ErrNoPeerStarted, res.Warmup.errorSummary())
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
