package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

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
