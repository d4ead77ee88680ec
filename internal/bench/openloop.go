package bench

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"fileshare/btclient"
	"fileshare/tracker"
)

// The open-loop load: announces are offered at a fixed rate from the
// warmed-up workers' peer models whatever the tracker answers, as a
// population of independent clients does. A few pacer goroutines (one a
// core) each own some workers and hand them the announces that fall due;
// over UDP a pacer writes the packet on the worker's socket and a reader
// goroutine per socket matches replies by transaction ID, over HTTP it
// queues the announce for a pool of keep-alive connections (at least
// httpOpenConns). Latencies run from when an announce was due, not from when it
// went out, so a generator or a tracker that falls behind shows in them.
// An announce with no answer within the timeout is unanswered, whether it
// was sent late, not at all (already overdue when its turn came) or
// never answered.

// paceQuantum is the shortest sleep of a pacer: one that keeps up wakes
// at most every paceQuantum and sends the announces due by then, which
// bounds the wake-ups a second at any rate while adding at most this much
// to a latency.
const paceQuantum = 200 * time.Microsecond

// pace calls send(due) for every event due at rate events a second from
// start until end (event i is due at start + i/rate, and the last one
// before end), in order, from the calling goroutine. It sleeps until the
// next event is due, but at least quantum after its last wake-up, then
// sends every event due by then; a pacer that woke late or whose send was
// slow catches up in a burst instead of dropping events (the caller
// decides what to do with an overdue one). It returns the number of
// events sent, fewer if ctx is done first.
func pace(ctx context.Context, start, end time.Time, rate float64, quantum time.Duration, send func(due time.Time)) int {
	if rate <= 0 {
		return 0
	}
	interval := float64(time.Second) / rate
	lastWake := time.Time{}
	for n := 0; ; n++ {
		due := start.Add(time.Duration(float64(n) * interval))
		if !due.Before(end) {
			return n
		}
		if now := time.Now(); now.Before(due) {
			if ctx.Err() != nil {
				return n
			}
			wake := due
			if w := lastWake.Add(quantum); wake.Before(w) {
				wake = w
			}
			time.Sleep(wake.Sub(now))
			lastWake = time.Now()
		}
		send(due)
	}
}

// pacerCount is how many pacer goroutines drive n workers: one a core,
// at most one a worker.
func pacerCount(n int) int { return max(1, min(runtime.GOMAXPROCS(0), n)) }

// paceShares runs pacers goroutines for the workers [0, n), pacer j owning
// workers j, j+pacers, ...; together they offer rate events a second from
// start until end, each pacer its share, staggered so their events
// interleave; event k of pacer j goes to its owned workers in turn.
// send(j, worker, due) is called from pacer j's goroutine. It returns the
// events sent.
func paceShares(ctx context.Context, n int, start, end time.Time, rate float64, send func(pacer, worker int, due time.Time)) int {
	pacers := pacerCount(n)
	var wg sync.WaitGroup
	var total atomic.Int64
	for j := range pacers {
		owned := (n - j + pacers - 1) / pacers
		share := rate * float64(owned) / float64(n)
		offset := time.Duration(float64(j) * float64(time.Second) / rate)
		wg.Go(func() {
			k := 0
			sent := pace(ctx, start.Add(offset), end, share, paceQuantum, func(due time.Time) {
				send(j, j+pacers*(k%owned), due)
				k++
			})
			total.Add(int64(sent))
		})
	}
	wg.Wait()
	return int(total.Load())
}

// OpenResult is one open-loop measurement: Offered announces a second for
// Duration, each sent when due whatever the tracker had answered.
type OpenResult struct {
	Offered  float64       // announces a second offered
	Duration time.Duration // how long they were offered
	Due      int           // announces offered: Offered × Duration
	// AnnounceStats count the outcome of every announce due: OK and Lat
	// (from each announce's due time) the ones answered within the
	// timeout; Timeouts the ones not answered within it, including
	// Unsent.
	AnnounceStats
	// Unsent is how many announces were not sent because they were
	// already overdue by the timeout when their turn came (the generator
	// fell behind), or their socket had no connection ID.
	Unsent int
	// SocketErrors counts errors reading the UDP sockets (a refused
	// port, reported by ICMP); FirstSocketError is the first.
	SocketErrors     int
	FirstSocketError error
	// CPU is what AnnounceConfig.CPUPIDs used from the start of the
	// measurement until its last answer or timeout; nil without PIDs.
	CPU *CPUUse
}

// AnsweredRate is answered announces per second of the offered window.
func (r *OpenResult) AnsweredRate() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Answered()) / r.Duration.Seconds()
}

// UnansweredFraction is the share of the announces due that were not
// answered successfully within the timeout (timeouts, unsent, refusals
// and broken replies), 0..1.
func (r *OpenResult) UnansweredFraction() float64 {
	if r.Due <= 0 {
		return 0
	}
	return float64(r.Due-r.Answered()) / float64(r.Due)
}

func (r *OpenResult) summary(proto string, cfg AnnounceConfig) string {
	extra := ""
	if r.Unsent > 0 {
		extra += fmt.Sprintf(", unsent=%d (overdue when their turn came: the generator fell behind)", r.Unsent)
	}
	if r.SocketErrors > 0 {
		extra += fmt.Sprintf(", socket_errors=%d (first: %v)", r.SocketErrors, r.FirstSocketError)
	}
	return fmt.Sprintf("announce %s open loop: offered %.0f/s, answered %.0f/s, %s, unanswered=%.3f%% (of %d due; %s)%s, clients=%d, swarms=%d, mix=%s%s, duration=%s",
		proto, r.Offered, r.AnsweredRate(), r.Lat.Summary(), 100*r.UnansweredFraction(), r.Due, r.errorSummary(), extra,
		cfg.Clients, cfg.Swarms, cfg.mixName(false), cpuSummary(r.CPU, r.Answered()), r.Duration)
}

// httpOpenConns is the least number of HTTP connections an open loop
// sends over: independent clients do not queue behind each other, so the
// pool must not be what limits the rate (at the 50 ms p99 a search
// accepts, 256 connections carry at least 5000 announces a second
// however slow each answer).
const httpOpenConns = 256

// openLoad drives the warmed-up workers open loop. It is used by one
// goroutine at a time; each run takes over the workers' connections.
// Close it to close the connections it added.
type openLoad struct {
	proto   string
	workers []*announceWorker
	timeout time.Duration
	cpuPIDs []int
	udp     []*udpOpenSocket // by worker, over UDP
	conns   []announcer      // over HTTP: the workers' and more, to httpOpenConns
	extra   []announcer      // the ones it added
}

func newOpenLoad(proto string, workers []*announceWorker, cfg AnnounceConfig) (*openLoad, error) {
	o := &openLoad{proto: proto, workers: workers, timeout: cfg.Timeout, cpuPIDs: cfg.CPUPIDs}
	if proto == "udp" {
		for _, wk := range workers {
			o.udp = append(o.udp, &udpOpenSocket{u: wk.ann.(*udpAnnouncer), model: wk.model})
		}
		return o, nil
	}
	for _, wk := range workers {
		o.conns = append(o.conns, wk.ann)
	}
	for i := len(o.conns); i < httpOpenConns; i++ {
		a, err := newAnnouncer(cfg.Targets[i%len(cfg.Targets)], uint64(i))
		if err != nil {
			o.close()
			return nil, err
		}
		o.conns = append(o.conns, a)
		o.extra = append(o.extra, a)
	}
	return o, nil
}

// close closes the connections the load added to the workers'.
func (o *openLoad) close() {
	for _, a := range o.extra {
		a.close()
	}
}

// run offers rate announces a second for d and waits for the last answer
// or timeout.
func (o *openLoad) run(ctx context.Context, rate float64, d time.Duration) *OpenResult {
	res := &OpenResult{Offered: rate, Duration: d}
	var cpu *cpuMeter
	if len(o.cpuPIDs) > 0 {
		cpu, _ = startCPU(o.cpuPIDs) // readable at the start of Announce
	}
	if o.proto == "udp" {
		o.runUDP(ctx, rate, d, res)
	} else {
		o.runHTTP(ctx, rate, d, res)
	}
	if cpu != nil {
		res.CPU, _ = cpu.stop()
	}
	return res
}

// openJob is an announce due, queued for the HTTP connection pool.
type openJob struct {
	p    btclient.Announce
	kind opKind
	due  time.Time
}

func (o *openLoad) runHTTP(ctx context.Context, rate float64, d time.Duration, res *OpenResult) {
	queue := min(max(int(rate*o.timeout.Seconds()), 1024), 1<<18)
	jobs := make(chan openJob, queue)
	pool := make([]AnnounceStats, len(o.conns))
	poolUnsent := make([]int, len(o.conns))
	var wg sync.WaitGroup
	for i, conn := range o.conns {
		st := &pool[i]
		wg.Go(func() {
			for job := range jobs {
				if time.Since(job.due) > o.timeout { // queued past its timeout
					st.Timeouts++
					poolUnsent[i]++
					continue
				}
				n, err := conn.announce(&job.p, job.due.Add(o.timeout))
				lat := time.Since(job.due)
				if err == nil && lat > o.timeout {
					st.Timeouts++
					continue
				}
				st.record(job.kind, n, lat, err)
			}
		})
	}
	pacers := make([]AnnounceStats, pacerCount(len(o.workers)))
	unsent := make([]int, len(pacers))
	start := time.Now().Add(time.Millisecond)
	res.Due = paceShares(ctx, len(o.workers), start, start.Add(d), rate, func(j, w int, due time.Time) {
		if time.Since(due) > o.timeout {
			pacers[j].Timeouts++
			unsent[j]++
			return
		}
		job := openJob{due: due}
		job.kind = o.workers[w].model.draw(&job.p)
		select {
		case jobs <- job:
		default: // the pool is a timeout behind already
			pacers[j].Timeouts++
			unsent[j]++
		}
	})
	close(jobs)
	wg.Wait()
	for i := range pool {
		res.add(&pool[i])
		res.Unsent += poolUnsent[i]
	}
	for j := range pacers {
		res.add(&pacers[j])
		res.Unsent += unsent[j]
	}
}

// udpOpenSocket is one worker's UDP socket driven open loop: its pacer
// sends announces and records them in flight, its reader matches the
// replies.
type udpOpenSocket struct {
	u     *udpAnnouncer // the socket and its connection ID between runs
	model *peerModel

	// Owned by the pacer.
	p           btclient.Announce
	buf         []byte
	tid         uint32 // last announce transaction ID, < 1<<31
	refreshes   uint32
	refreshSent time.Time
	down        bool // no connection ID for this run
	unsent      int

	// Set by the reader, read by the pacer.
	connID     atomic.Uint64
	connAt     atomic.Int64  // unix nanoseconds
	refreshTID atomic.Uint32 // the connect in flight (1<<31 set), 0: none

	mu       sync.Mutex
	flights  []openFlight // by tid & (len-1)
	inFlight int
	st       AnnounceStats
	sockErrs int
	firstErr error
}

// openFlight is an announce sent and not yet answered or given up on.
type openFlight struct {
	due  time.Time
	tid  uint32
	kind opKind
	live bool
}

// connectTID marks the transaction IDs of connects sent during a run.
const connectTID = 1 << 31

func (o *openLoad) runUDP(ctx context.Context, rate float64, d time.Duration, res *OpenResult) {
	// A ring holds two timeouts' worth of a socket's announces (at most
	// 1<<16: 4 million a second in flight over 64 sockets).
	perSocket := rate / float64(len(o.udp))
	ring := 1 << min(bits.Len(uint(2*perSocket*o.timeout.Seconds()+64)), 16)
	// Connection IDs first, younger than half their lifetime, so that a
	// run of up to half a minute needs no refresh (longer ones refresh in
	// the background).
	var wg sync.WaitGroup
	for _, s := range o.udp {
		wg.Go(func() { s.prepare(o.timeout, ring) })
	}
	wg.Wait()
	var stopping atomic.Bool
	var readers sync.WaitGroup
	for _, s := range o.udp {
		if s.u.conn != nil {
			readers.Go(func() { s.read(o.timeout, &stopping) })
		}
	}
	start := time.Now().Add(time.Millisecond)
	end := start.Add(d)
	res.Due = paceShares(ctx, len(o.udp), start, end, rate, func(_, w int, due time.Time) {
		o.udp[w].send(due, o.timeout)
	})
	// Wait for the last answers, at most a timeout past the last due.
	for deadline := end.Add(o.timeout); time.Now().Before(deadline) && ctx.Err() == nil; {
		live := 0
		for _, s := range o.udp {
			s.mu.Lock()
			live += s.inFlight
			s.mu.Unlock()
		}
		if live == 0 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	stopping.Store(true)
	for _, s := range o.udp {
		if s.u.conn != nil {
			s.u.conn.SetReadDeadline(time.Now())
		}
	}
	readers.Wait()
	for _, s := range o.udp {
		s.finish()
		res.add(&s.st)
		res.Unsent += s.unsent
		res.SocketErrors += s.sockErrs
		if res.FirstSocketError == nil {
			res.FirstSocketError = s.firstErr
		}
	}
}

// prepare readies the socket for a run: a socket, a connection ID no
// older than half its lifetime, a flight ring of size ring (a power of
// two), empty counts.
func (s *udpOpenSocket) prepare(timeout time.Duration, ring int) {
	s.st = AnnounceStats{Lat: make(Latencies, 0, 1024)}
	s.unsent, s.sockErrs, s.firstErr, s.inFlight = 0, 0, nil, 0
	if len(s.flights) < ring {
		s.flights = make([]openFlight, ring)
	}
	s.down = true
	if err := s.u.dial(); err != nil {
		s.firstErr, s.sockErrs = err, 1
		return
	}
	s.u.conn.SetDeadline(time.Now().Add(timeout))
	err := s.u.connect(udpConnIDLifetime / 2)
	s.u.conn.SetDeadline(time.Time{})
	if err != nil {
		s.firstErr, s.sockErrs = fmt.Errorf("connect: %w", err), 1
		return
	}
	s.down = false
	s.connID.Store(s.u.connID)
	s.connAt.Store(s.u.connAt.UnixNano())
	s.refreshTID.Store(0)
}

// send sends the socket's next announce, due at due; called by its
// pacer.
func (s *udpOpenSocket) send(due time.Time, timeout time.Duration) {
	now := time.Now()
	if s.down || now.Sub(due) > timeout {
		s.mu.Lock()
		s.st.Timeouts++
		s.unsent++
		s.mu.Unlock()
		return
	}
	if now.UnixNano()-s.connAt.Load() > int64(udpConnIDLifetime/2) && now.Sub(s.refreshSent) > timeout {
		s.refreshes++
		tid := connectTID | s.refreshes
		s.refreshTID.Store(tid)
		s.refreshSent = now
		s.u.nconn++
		s.buf = btclient.AppendConnectRequest(s.buf[:0], tid)
		s.u.conn.Write(s.buf) // a lost one is sent again after a timeout
	}
	kind := s.model.draw(&s.p)
	s.tid = (s.tid + 1) &^ connectTID
	tid := s.tid
	s.buf = btclient.AppendAnnounceRequest(s.buf[:0], s.connID.Load(), tid, &s.p)
	s.mu.Lock()
	f := &s.flights[tid&uint32(len(s.flights)-1)]
	if f.live { // sent a ring ago and never answered
		s.st.Timeouts++
		s.inFlight--
	}
	*f = openFlight{due: due, tid: tid, kind: kind, live: true}
	s.inFlight++
	s.mu.Unlock()
	if _, err := s.u.conn.Write(s.buf); err != nil {
		s.mu.Lock()
		if f.live && f.tid == tid {
			f.live = false
			s.inFlight--
			s.st.record(kind, 0, 0, err)
		}
		s.mu.Unlock()
	}
}

// read matches replies to the announces in flight until stopping is set
// and the socket's read deadline passes.
func (s *udpOpenSocket) read(timeout time.Duration, stopping *atomic.Bool) {
	buf := make([]byte, 2048)
	for {
		n, err := s.u.conn.Read(buf)
		now := time.Now()
		if err != nil {
			if stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.mu.Lock()
			s.sockErrs++
			if s.firstErr == nil {
				s.firstErr = err
			}
			s.mu.Unlock()
			continue
		}
		if n < 8 {
			continue // nothing to match it to; its announce times out
		}
		r, perr := btclient.ParseUDPReply(buf[:n])
		if r.TID&connectTID != 0 {
			if perr == nil && r.Action == tracker.UDPActionConnect && r.TID == s.refreshTID.Load() {
				s.connID.Store(r.ConnID)
				s.connAt.Store(now.UnixNano())
				s.refreshTID.Store(0)
			}
			continue
		}
		s.mu.Lock()
		f := &s.flights[r.TID&uint32(len(s.flights)-1)]
		if f.live && f.tid == r.TID {
			f.live = false
			s.inFlight--
			lat := now.Sub(f.due)
			switch {
			case lat > timeout:
				s.st.Timeouts++
			case perr != nil:
				s.st.record(f.kind, 0, lat, perr)
			case r.Action == tracker.UDPActionError:
				s.st.record(f.kind, 0, lat, &btclient.FailureError{Reason: r.Failure})
			case r.Action != tracker.UDPActionAnnounce:
				s.st.record(f.kind, 0, lat, fmt.Errorf("%w: action %d in answer to an announce", btclient.ErrMalformedReply, r.Action))
			default:
				s.st.record(f.kind, r.Peers, lat, nil)
			}
		}
		s.mu.Unlock()
	}
}

// finish counts what is still in flight as unanswered, clears the ring
// and hands the connection ID back to the announcer.
func (s *udpOpenSocket) finish() {
	for i := range s.flights {
		if s.flights[i].live {
			s.st.Timeouts++
			s.flights[i].live = false
		}
	}
	s.inFlight = 0
	if s.u.conn != nil {
		s.u.conn.SetReadDeadline(time.Time{})
	}
	if !s.down {
		s.u.connID = s.connID.Load()
		s.u.connAt = time.Unix(0, s.connAt.Load())
	}
}
