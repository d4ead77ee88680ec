package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// MaxCallTimeout caps the deadline a caller may ask a server to honour.
const MaxCallTimeout = 5 * time.Minute

// DefaultCallTimeout is used when the caller's context has no deadline.
const DefaultCallTimeout = 30 * time.Second

type request struct {
	ID      uint64
	Method  string
	Timeout int64 // nanoseconds the caller will wait; 0 = DefaultCallTimeout
	Body    []byte
}

type response struct {
	ID   uint64
	Err  *wireError `codec:",omitempty"`
	Body []byte     `codec:",omitempty"`
}

// handler is one registered method: decode turns a body into the request
// (keeping no reference to the body), run answers it.
type handler struct {
	name   string
	decode func(body []byte) (any, error)
	run    func(ctx context.Context, req any) (any, error)
	weight atomic.Int64 // what a reply is expected to weigh, in bytes
	peak   atomic.Int64 // the heaviest reply lately
	peakAt atomic.Int64 // when peak was last set or halved, Unix nanoseconds
}

// Reply weights. A call reserves, before it runs, what its method's
// replies are expected to weigh; the reservation becomes the reply's real
// size once it is made. The expectation starts at initialWeight, rises at
// once to any heavier reply and decays slowly towards lighter ones, and it
// never falls below peakShare of the heaviest reply of the last
// peakHalfLife (which halves after that long without one as heavy): so a
// client cannot make heavy calls look cheap by first making many light
// ones, and a burst of heavy calls admitted at a light expectation is
// bounded by the connection's, the source's and the server's byte caps
// divided by that floor.
const (
	initialWeight = 256 << 10
	minWeight     = 256
	peakShare     = 8
	peakHalfLife  = 5 * time.Minute
)

func (h *handler) expect() int {
	if h == nil {
		return minWeight
	}
	w := h.weight.Load()
	if w <= 0 {
		return initialWeight
	}
	return int(max(w, h.peak.Load()/peakShare))
}

func (h *handler) observe(n int) {
	if h == nil {
		return
	}
	w := int64(initialWeight)
	if cur := h.weight.Load(); cur > 0 {
		w = cur
	}
	h.weight.Store(max(int64(n), w-w/16, minWeight))
	now := time.Now().UnixNano()
	switch p := h.peak.Load(); {
	case int64(n) >= p:
		h.peak.Store(int64(n))
		h.peakAt.Store(now)
	case now-h.peakAt.Load() > int64(peakHalfLife):
		h.peak.Store(max(int64(n), p/2))
		h.peakAt.Store(now)
	}
}

// Server serves RPC connections. Register handlers with Handle before
// calling Serve; Close stops it.
//
// What callers may hold at once is bounded (see Limits): handler slots
// and reply bytes per connection, per source address (hierarchically for
// IPv6, see Source) and in total, with members of the cluster (a Caller
// the Mux's Gate marks Member) in a pool of their own. A connection that
// reaches a bound is not read any further until it is back under it, so
// a client that pipelines requests and does not read the replies stops
// its own requests, not anyone else's; one that does not read for
// Limits.WriteTimeout is closed.
type Server struct {
	logger      *slog.Logger
	lim         Limits
	handlers    map[string]*handler
	calls       quota    // handler slots of callers that are not members
	memberCalls quota    // handler slots of members
	bytes       quota    // reply bytes queued or expected, of callers that are not members
	work        chan job // hands requests to idle workers
	ctx         context.Context
	cancel      context.CancelFunc
	mu          sync.Mutex
	conns       map[net.Conn]struct{}
	listeners   []net.Listener
	wg          sync.WaitGroup
	closeOnce   sync.Once
	closeCalled bool
	observer    observerSlot // see SetObserver
}

// Limits bounds what callers may hold on a Server at once. A zero field
// means its default.
type Limits struct {
	// MaxCalls bounds the handlers running at once for callers that are
	// not members of the cluster. Default MaxConcurrentCalls.
	MaxCalls int
	// MaxMemberCalls bounds the handlers running at once for members (a
	// master relaying writes); kept apart so that strangers never take
	// them. Default MaxConcurrentCalls.
	MaxMemberCalls int
	// MaxCallsPerConn bounds the handlers one connection has running.
	// Default MaxCallsPerConn.
	MaxCallsPerConn int
	// MaxCallsPerIP bounds the handlers running for one source address
	// (twice that per IPv6 /64, four times per /48). Default
	// DefaultMaxCallsPerIP.
	MaxCallsPerIP int
	// MaxReplyBytesPerConn bounds, in bytes, the replies one connection
	// has queued and expected (a running call counts what its method's
	// replies have been weighing). Default DefaultMaxReplyBytesPerConn.
	MaxReplyBytesPerConn int
	// MaxReplyBytesPerIP is the same bound per source address (×2 per
	// /64, ×4 per /48). Default DefaultMaxReplyBytesPerIP.
	MaxReplyBytesPerIP int
	// MaxReplyBytes is the same bound for all callers that are not
	// members together. Default DefaultMaxReplyBytes.
	MaxReplyBytes int
	// WriteTimeout closes a connection whose client has not taken a
	// reply for this long. Default DefaultIOTimeout.
	WriteTimeout time.Duration
}

// MaxConcurrentCalls is the default bound on handlers running at once,
// for strangers and for members (each their own).
const MaxConcurrentCalls = 8192

// MaxCallsPerConn is the default bound on the handlers one connection
// may have running at once; its further requests wait unread.
const MaxCallsPerConn = 512

// Defaults of Limits.
const (
	DefaultMaxCallsPerIP        = 1024
	DefaultMaxReplyBytesPerConn = 4 << 20
	DefaultMaxReplyBytesPerIP   = 32 << 20
	DefaultMaxReplyBytes        = 256 << 20
)

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxCalls, MaxConcurrentCalls)
	def(&l.MaxMemberCalls, MaxConcurrentCalls)
	def(&l.MaxCallsPerConn, MaxCallsPerConn)
	def(&l.MaxCallsPerIP, DefaultMaxCallsPerIP)
	def(&l.MaxReplyBytesPerConn, DefaultMaxReplyBytesPerConn)
	def(&l.MaxReplyBytesPerIP, DefaultMaxReplyBytesPerIP)
	def(&l.MaxReplyBytes, DefaultMaxReplyBytes)
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = DefaultIOTimeout
	}
	return l
}

// IdleTimeout closes a server-side connection that has sent nothing for
// this long. Clients redial on their next call.
const IdleTimeout = 5 * time.Minute

// NewServer returns a Server with no handlers and the default Limits.
// logger may be nil.
func NewServer(logger *slog.Logger) *Server {
	return NewServerLimits(logger, Limits{})
}

// NewServerLimits returns a Server with no handlers and the given
// limits. logger may be nil.
func NewServerLimits(logger *slog.Logger, lim Limits) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	lim = lim.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		logger:      logger,
		lim:         lim,
		handlers:    make(map[string]*handler),
		calls:       quota{max: lim.MaxCalls, perSource: lim.MaxCallsPerIP},
		memberCalls: quota{max: lim.MaxMemberCalls},
		bytes:       quota{max: lim.MaxReplyBytes, perSource: lim.MaxReplyBytesPerIP},
		work:        make(chan job),
		ctx:         ctx,
		cancel:      cancel,
		conns:       make(map[net.Conn]struct{}),
	}
}

// Handle registers fn for method. Call it before Serve. Req and Resp are
// msgpack-encodable structs; fn runs on its own goroutine with a context that
// ends at the caller's deadline or when the server closes. An error from fn
// reaches the caller with its code (see Coded and NotLeaderError). A Req
// or Resp with a hand-written codec (package wire) is coded by it.
func Handle[Req, Resp any](s *Server, method string, fn func(ctx context.Context, req *Req) (*Resp, error)) {
	s.handlers[method] = &handler{
		name: method,
		decode: func(body []byte) (any, error) {
			req := new(Req)
			if err := Unmarshal(body, req); err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrBadRequest, method, err)
			}
			return req, nil
		},
		run: func(ctx context.Context, req any) (any, error) {
			resp, err := fn(ctx, req.(*Req))
			if resp == nil {
				if err != nil {
					return nil, err
				}
				return nilReply{}, nil
			}
			return resp, err
		},
	}
}

// Serve accepts connections on ln until ln is closed or the server is
// closed. It returns nil after Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closeCalled {
		s.mu.Unlock()
		return nil
	}
	s.listeners = append(s.listeners, ln)
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, ErrMuxClosed) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		s.mu.Lock()
		if s.closeCalled {
			s.mu.Unlock()
			conn.Close()
			return nil
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(conn)
	}
}

// Close stops serving: it closes listeners and connections, cancels running
// handlers' contexts and waits for them. Safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closeCalled = true
		s.cancel()
		for _, ln := range s.listeners {
			ln.Close()
		}
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return nil
}

func (s *Server) serveConn(conn net.Conn) {
	defer s.wg.Done()
	caller := CallerOf(conn)
	cs := &connState{
		src:         SourceOf(conn.RemoteAddr()),
		chargeBytes: !caller.Member,
		calls:       quota{max: s.lim.MaxCallsPerConn},
		bytes:       quota{max: s.lim.MaxReplyBytesPerConn},
	}
	fw := newFrameWriter(conn)
	fw.timeout = s.lim.WriteTimeout
	fw.done = func(n int) { s.written(cs, n) }
	cs.dead = fw.dead
	defer func() {
		cs.inflight.Wait()
		fw.stop(ErrShuttingDown)
		conn.Close()
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
	}()
	// The Gate (membership, deny list) may change while the connection is
	// open: look again before the first call after every change.
	var gate Gate
	cc, _ := conn.(*callerConn)
	if cc != nil && cc.mux != nil {
		gate = cc.mux.cfg.Gate
	}
	var version uint64
	if gate != nil {
		version = cc.version // the Gate's when it admitted the connection
	}
	fr := newFrameReader(conn, IdleTimeout)
	ctx := WithCaller(s.ctx, caller) // one per connection (and Gate version), not per call
	for {
		frame, err := fr.next()
		if err != nil {
			if errors.Is(err, ErrFrameTooLarge) {
				s.logger.Warn("closing rpc connection: oversized frame", "remote", conn.RemoteAddr(), "err", err)
			}
			return
		}
		if gate != nil {
			if v := gate.Version(); v != version {
				version = v
				now, err := gate.Vet(cc.base)
				if err == nil && lostRights(cc.caller, now) {
					err = errLostRights
				}
				if err != nil {
					putBuf(frame)
					s.logger.Warn("closing rpc connection: its caller lost its rights", "remote", conn.RemoteAddr(), "caller", cc.base.Role.String(), "name", cc.base.Name, "serial", cc.base.Serial, "err", err)
					return
				}
				caller = now
				ctx = WithCaller(s.ctx, caller)
			}
		}
		req, err := decodeRequest(*frame)
		if err != nil {
			putBuf(frame)
			s.logger.Warn("closing rpc connection: malformed frame", "remote", conn.RemoteAddr(), "err", err)
			return
		}
		// A map lookup by string(bytes) does not allocate.
		h, ok := s.handlers[string(req.Method)]
		j := job{fw: fw, ctx: ctx, cs: cs, frame: frame, id: req.ID, timeout: req.Timeout, body: req.Body, member: caller.Member}
		if ok {
			j.h = h
		} else {
			j.unknown = string(req.Method)
		}
		j.weight = h.expect()
		// Wait, unread, until the connection, its source and the server
		// have room for one more call and its reply: a client that does
		// not read its replies stops here.
		if !s.admit(cs, j.member, j.weight) {
			putBuf(frame)
			return
		}
		cs.inflight.Add(1)
		select {
		case s.work <- j: // an idle worker takes it
		default:
			s.wg.Add(1)
			go s.worker(j)
		}
	}
}

// connState is what a connection's calls share: its handler slots, its
// reply bytes, and the count of calls its close waits for.
type connState struct {
	src         Source
	chargeBytes bool  // replies also count against the source's and the server's byte caps
	calls       quota // handler slots of this connection
	bytes       quota // reply bytes expected, queued or being written
	inflight    sync.WaitGroup
	dead        <-chan struct{} // closed when the connection's writer fails
}

// admit takes a handler slot and weight reply bytes for one call of cs,
// waiting until they fit. It reports false if the connection or the
// server ended first.
func (s *Server) admit(cs *connState, member bool, weight int) bool {
	pool := &s.calls
	if member {
		pool = &s.memberCalls
	}
	qs := [4]*quota{&cs.calls, &cs.bytes, pool, &s.bytes}
	n := 3
	if cs.chargeBytes {
		n = 4
	}
	for {
		if s.tryAdmit(cs, member, weight) {
			return true
		}
		var chans [4]<-chan struct{}
		for i, q := range qs[:n] {
			chans[i] = q.waitCh()
		}
		// Look again once registered, so no release in between is missed.
		ok := s.tryAdmit(cs, member, weight)
		if !ok && !s.waitAny(cs, chans) {
			for _, q := range qs[:n] {
				q.doneWaiting()
			}
			return false
		}
		for _, q := range qs[:n] {
			q.doneWaiting()
		}
		if ok {
			return true
		}
	}
}

// waitAny waits for a release on any of chans; false if the connection or
// the server ended first.
func (s *Server) waitAny(cs *connState, c [4]<-chan struct{}) bool {
	select {
	case <-c[0]:
	case <-c[1]:
	case <-c[2]:
	case <-c[3]:
	case <-cs.dead:
		return false
	case <-s.ctx.Done():
		return false
	}
	return true
}

func (s *Server) tryAdmit(cs *connState, member bool, weight int) bool {
	pool := &s.calls
	if member {
		pool = &s.memberCalls
	}
	if !cs.calls.tryAcquire(Source{}, 1) {
		return false
	}
	if !cs.bytes.tryAcquire(Source{}, weight) {
		cs.calls.release(Source{}, 1)
		return false
	}
	if !pool.tryAcquire(cs.src, 1) {
		cs.calls.release(Source{}, 1)
		cs.bytes.release(Source{}, weight)
		return false
	}
	if cs.chargeBytes && !s.bytes.tryAcquire(cs.src, weight) {
		cs.calls.release(Source{}, 1)
		cs.bytes.release(Source{}, weight)
		pool.release(cs.src, 1)
		return false
	}
	return true
}

// reweigh turns a call's byte reservation from what was expected into
// what its reply weighs.
func (s *Server) reweigh(cs *connState, expected, actual int) {
	switch d := actual - expected; {
	case d > 0:
		cs.bytes.force(Source{}, d)
		if cs.chargeBytes {
			s.bytes.force(cs.src, d)
		}
	case d < 0:
		s.written(cs, -d)
	}
}

// written releases n reply bytes of cs: written to the connection, or
// dropped with it.
func (s *Server) written(cs *connState, n int) {
	cs.bytes.release(Source{}, n)
	if cs.chargeBytes {
		s.bytes.release(cs.src, n)
	}
}

// job is one request waiting for a worker. body aliases frame, a pooled
// buffer the worker returns once the request is decoded.
type job struct {
	fw      *frameWriter
	ctx     context.Context // the server's, with the caller
	cs      *connState
	frame   *[]byte
	h       *handler // nil for an unknown method
	unknown string   // the method asked for, when h is nil
	id      uint64
	timeout int64
	body    []byte
	member  bool // its slot is the members' pool's
	weight  int  // reply bytes reserved for it
}

// worker runs jobs until it has been idle for a while. Reusing goroutines
// keeps the stacks that message decoding grew, instead of growing a fresh
// one for every request.
func (s *Server) worker(j job) {
	defer s.wg.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		s.call(&j)
		if j.member {
			s.memberCalls.release(j.cs.src, 1)
		} else {
			s.calls.release(j.cs.src, 1)
		}
		j.cs.calls.release(Source{}, 1)
		j.cs.inflight.Done()
		idle.Reset(workerIdle)
		select {
		case j = <-s.work:
		case <-idle.C:
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// workerIdle is how long an idle worker waits for more work.
const workerIdle = 5 * time.Second

func (s *Server) call(j *job) {
	timeout := time.Duration(j.timeout)
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	timeout = min(timeout, MaxCallTimeout)
	ctx, cancel := context.WithTimeout(j.ctx, timeout)
	defer cancel()

	start := time.Now()
	method := j.unknown
	var out any
	var err error
	if j.h == nil {
		putBuf(j.frame)
		err = fmt.Errorf("%w %q", ErrUnknownMethod, method)
	} else {
		method = j.h.name
		out, err = s.safeCall(ctx, j)
	}
	j.frame, j.body = nil, nil

	var body *[]byte
	if err == nil && out != nil {
		body = getBuf()
		*body, err = appendMessage((*body)[:0], out)
	}
	var werr *wireError
	if err != nil {
		werr = toWire(err)
	}
	fb := startFrame()
	if werr != nil {
		*fb = appendResponse(*fb, j.id, werr, nil)
	} else {
		*fb = appendResponse(*fb, j.id, nil, *body)
	}
	putBuf(body)
	if len(*fb)-frameHeaderLen > MaxFrameSize {
		n := len(*fb) - frameHeaderLen
		fb = startFrame() // the big one is left to the collector
		werr = toWire(fmt.Errorf("%w: reply to %s is %d bytes; ask for less (e.g. a smaller limit)", ErrFrameTooLarge, method, n))
		*fb = appendResponse(*fb, j.id, werr, nil)
	}
	s.observe(method, j.h != nil, werr, start)
	n := len(*fb)
	j.h.observe(n)
	s.reweigh(j.cs, j.weight, n)
	if err := j.fw.send(fb); err != nil {
		s.written(j.cs, n) // never queued
	}
}

// safeCall decodes and runs a request, turning a panic into an error so
// one bad request cannot take the node down. It returns the request's
// frame to the pool as soon as the request is decoded.
func (s *Server) safeCall(ctx context.Context, j *job) (out any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.logger.Error("rpc handler panicked", "method", j.h.name, "panic", r)
			out, err = nil, fmt.Errorf("%w: handler for %s failed", ErrInternal, j.h.name)
		}
	}()
	req, err := j.h.decode(j.body)
	putBuf(j.frame)
	if err != nil {
		return nil, err
	}
	return j.h.run(ctx, req)
}

// DialFunc opens a connection to addr for the given stream kind.
type DialFunc func(addr string, kind byte, timeout time.Duration) (net.Conn, error)

// ClientConfig configures a Client. The zero value is usable.
type ClientConfig struct {
	// Dial opens connections; nil dials plain TCP from any local address.
	// Masters pass Mux.DialStream so their traffic leaves from their own IP.
	Dial DialFunc
	// DialTimeout bounds one connection attempt. Zero means 2 s.
	DialTimeout time.Duration
}

// Client calls RPC servers. One Client keeps one connection per address and
// is safe for concurrent use.
type Client struct {
	cfg    ClientConfig
	mu     sync.Mutex
	conns  map[string]*clientConn
	closed bool
}

// NewClient returns a Client. Close it to release its connections.
func NewClient(cfg ClientConfig) *Client {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.Dial == nil {
		cfg.Dial = func(addr string, kind byte, timeout time.Duration) (net.Conn, error) {
			return dialStream(&net.Dialer{Timeout: timeout, KeepAlive: 15 * time.Second}, addr, kind, timeout)
		}
	}
	return &Client{cfg: cfg, conns: make(map[string]*clientConn)}
}

// Call invokes method on the server at addr and decodes its reply into resp
// (which may be nil). It blocks until the reply arrives or ctx ends. Errors:
// a *NotLeaderError or *RemoteError from the server; ErrConnection if the
// connection failed (outcome unknown), which also matches ErrNoListener
// if nothing listens at addr (nothing was sent); a *NotFileShareError
// (ErrNotFileShare, not retryable) if addr answered with another protocol
// or disagrees about TLS; ErrTimeout (also matching ctx.Err()) if ctx
// ended first (outcome unknown).
func (c *Client) Call(ctx context.Context, addr, method string, req, resp any) error {
	body := getBuf()
	defer putBuf(body)
	var err error
	if *body, err = appendMessage((*body)[:0], req); err != nil {
		return fmt.Errorf("encode %s request: %w", method, err)
	}
	cc, err := c.conn(ctx, addr)
	if err != nil {
		return err
	}
	timeout := DefaultCallTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return fmt.Errorf("%s: %w (%w)", addr, ErrTimeout, context.DeadlineExceeded)
		}
	}
	pc, err := cc.roundTrip(ctx, method, int64(timeout), *body)
	if err != nil {
		if cc.failed() {
			c.drop(addr, cc)
		}
		var nf *NotFileShareError
		if errors.As(err, &nf) {
			return err // it names the address and what to do
		}
		return fmt.Errorf("%s: %w", addr, err)
	}
	defer pc.release()
	if pc.werr != nil {
		return pc.werr.err()
	}
	if resp != nil {
		if err := Unmarshal(pc.body, resp); err != nil {
			return fmt.Errorf("decode %s reply from %s: %w", method, addr, err)
		}
	}
	return nil
}

// Close closes every connection; calls in flight fail with ErrConnection.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	conns := c.conns
	c.conns = map[string]*clientConn{}
	c.mu.Unlock()
	for _, cc := range conns {
		cc.fail(fmt.Errorf("%w: client closed", ErrConnection))
	}
	return nil
}

func (c *Client) drop(addr string, cc *clientConn) {
	c.mu.Lock()
	if c.conns[addr] == cc {
		delete(c.conns, addr)
	}
	c.mu.Unlock()
}

func (c *Client) conn(ctx context.Context, addr string) (*clientConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: client closed", ErrConnection)
	}
	if cc, ok := c.conns[addr]; ok {
		c.mu.Unlock()
		return cc, nil
	}
	c.mu.Unlock()

	timeout := c.cfg.DialTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
		if timeout <= 0 {
			return nil, fmt.Errorf("%s: %w (%w)", addr, ErrTimeout, context.DeadlineExceeded)
		}
	}
	conn, err := c.cfg.Dial(addr, StreamRPC, timeout)
	if err != nil {
		return nil, dialError(addr, err)
	}
	cc := newClientConn(conn, addr)

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		cc.fail(fmt.Errorf("%w: client closed", ErrConnection))
		return nil, fmt.Errorf("%w: client closed", ErrConnection)
	}
	if old, ok := c.conns[addr]; ok {
		// Another goroutine dialled first; use its connection.
		cc.fail(fmt.Errorf("%w: duplicate connection", ErrConnection))
		return old, nil
	}
	c.conns[addr] = cc
	return cc, nil
}

// dialError turns a failed dial into Call's errors: a *NotFileShareError
// as it is, ErrConnection otherwise, with ErrNoListener when nothing
// listens at addr.
func dialError(addr string, err error) error {
	var nf *NotFileShareError
	switch {
	case errors.As(err, &nf):
		return err
	case nothingListens(err):
		return fmt.Errorf("%s: %w: %w (%v)", addr, ErrConnection, ErrNoListener, err)
	}
	return fmt.Errorf("%s: %w: %w", addr, ErrConnection, err)
}

type clientConn struct {
	conn    net.Conn
	addr    string
	fw      *frameWriter
	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]*pendingCall
	err     error // set once the connection has failed
}

// pendingCall is one call waiting for its reply. They are pooled: the
// reply's frame, decoded in place, reaches the caller without a copy.
type pendingCall struct {
	ch    chan struct{} // receives one value when the reply is in
	frame *[]byte       // the reply's pooled buffer; body aliases it
	body  []byte
	werr  *wireError
}

var pendingPool = sync.Pool{New: func() any { return &pendingCall{ch: make(chan struct{}, 1)} }}

// release returns the reply's buffer and the call to their pools. Only
// the caller that received on ch may call it.
func (pc *pendingCall) release() {
	putBuf(pc.frame)
	*pc = pendingCall{ch: pc.ch}
	pendingPool.Put(pc)
}

// firstRequestID is one less than the ID of a connection's first request.
// That ID is 10, whose msgpack encoding is the byte '\n', a few bytes into
// the connection: an HTTP server reading a request line sees the line end
// there and answers "400 Bad Request" at once, instead of waiting for a
// line that never ends, so a client pointed at an HTTP port learns it
// (NotFileShareError) without a timeout. Request IDs are otherwise opaque.
const firstRequestID = 9

func newClientConn(conn net.Conn, addr string) *clientConn {
	cc := &clientConn{conn: conn, addr: addr, fw: newFrameWriter(conn), nextID: firstRequestID, pending: make(map[uint64]*pendingCall)}
	go cc.readLoop()
	return cc
}

// failed reports whether the connection has failed for good.
func (cc *clientConn) failed() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err != nil
}

// roundTrip sends one request and waits for its reply, which the caller
// must release.
func (cc *clientConn) roundTrip(ctx context.Context, method string, timeout int64, body []byte) (*pendingCall, error) {
	pc := pendingPool.Get().(*pendingCall)
	cc.mu.Lock()
	if cc.err != nil {
		err := cc.err
		cc.mu.Unlock()
		pendingPool.Put(pc)
		return nil, err
	}
	cc.nextID++
	id := cc.nextID
	cc.pending[id] = pc
	cc.mu.Unlock()

	fb := startFrame()
	*fb = appendRequest(*fb, id, method, timeout, body)
	if err := cc.fw.send(fb); err != nil {
		if cc.forget(id) {
			pendingPool.Put(pc)
		}
		return nil, err
	}
	select {
	case <-pc.ch:
		if pc.frame == nil { // the connection failed first
			cc.mu.Lock()
			err := cc.err
			cc.mu.Unlock()
			pendingPool.Put(pc)
			return nil, err
		}
		return pc, nil
	case <-ctx.Done():
		// If the reply is being delivered right now, pc is the read
		// loop's to finish with; it is then left to the collector.
		if cc.forget(id) {
			pendingPool.Put(pc)
		}
		return nil, fmt.Errorf("%w (%w)", ErrTimeout, ctx.Err())
	}
}

// forget removes call id and reports whether it was still pending (so
// nobody else will touch its pendingCall).
func (cc *clientConn) forget(id uint64) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if _, ok := cc.pending[id]; !ok {
		return false
	}
	delete(cc.pending, id)
	return true
}

func (cc *clientConn) readLoop() {
	fr := newFrameReader(cc.conn, 0)
	// A FileShare server's first bytes are a frame header, whose first byte
	// is zero (MaxFrameSize < 1<<24). Anything else is another protocol.
	if hdr, _ := fr.r.Peek(4); len(hdr) > 0 && hdr[0] != 0 {
		_, isTLS := cc.conn.(*tls.Conn)
		cc.fail(&NotFileShareError{Addr: cc.addr, Answer: answerOf(hdr), LocalTLS: isTLS})
		return
	}
	for {
		frame, err := fr.next()
		if err != nil {
			cc.fail(fmt.Errorf("%w: %v", ErrConnection, err))
			return
		}
		resp, err := decodeResponse(*frame)
		if err != nil {
			putBuf(frame)
			cc.fail(fmt.Errorf("%w: malformed reply: %v", ErrConnection, err))
			return
		}
		cc.mu.Lock()
		pc, ok := cc.pending[resp.ID]
		delete(cc.pending, resp.ID)
		cc.mu.Unlock()
		if !ok {
			putBuf(frame) // its caller gave up
			continue
		}
		pc.frame, pc.body, pc.werr = frame, resp.Body, resp.Err
		pc.ch <- struct{}{}
	}
}

// fail closes the connection and fails every pending call with err.
func (cc *clientConn) fail(err error) {
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return
	}
	cc.err = err
	pending := cc.pending
	cc.pending = nil
	cc.mu.Unlock()
	cc.fw.stop(err)
	cc.conn.Close()
	for _, pc := range pending {
		pc.ch <- struct{}{} // frame nil: failed
	}
}

// busy returns the handlers running (or admitted to run) now.
func (s *Server) busy() int {
	_, a := s.calls.usedBy(Source{})
	_, b := s.memberCalls.usedBy(Source{})
	return a + b
}
