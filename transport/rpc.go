package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
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
