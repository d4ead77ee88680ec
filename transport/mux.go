package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Stream kinds: the first byte of every connection.
const (
	StreamRaft  byte = 0x01
	StreamRPC   byte = 0x02
	StreamPiece byte = 0x03
	// StreamReverse is a piece stream dialled by the holder to the
	// downloader that asked for it (connection reversal, package peer).
	StreamReverse byte = 0x04
	// StreamRelay is a circuit-relay stream (package relay).
	StreamRelay byte = 0x05
)

// DefaultHandshakeTimeout bounds how long a new connection may take to send
// its stream-kind byte before the Mux closes it.
const DefaultHandshakeTimeout = 5 * time.Second

// ErrMuxClosed is returned by Accept on a stream listener after Close.
var ErrMuxClosed = errors.New("transport: listener closed")

// Mux is one TCP listener demultiplexed by the first byte of each
// connection. Create it with Listen or ListenMux, take the per-kind
// listeners with Listener, and Close it once.
//
// With TLS configured, every accepted connection completes a TLS 1.3
// handshake (bounded by the handshake timeout) before its stream byte is
// read inside TLS, and the certificate it presented decides who it is
// (CallerOf); Authorize may then refuse it for that stream kind before any
// listener sees it.
type Mux struct {
	ln      net.Listener
	cfg     MuxConfig
	logger  *slog.Logger
	localIP net.IP // dial from this IP so each node owns its address; nil = any

	fw        firewall
	strangers quota // connections not known to be members', by source
	members   quota // connections of members, and from members' addresses until they authenticate

	mu      sync.Mutex
	streams map[byte]*streamListener
	routed  map[*callerConn]struct{} // handed to a listener and still open
	closed  chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

// MuxConfig configures a Mux. A zero field means its default.
type MuxConfig struct {
	// Addr is host:port to listen on; port 0 picks one. Required.
	Addr string
	// Logger receives the Mux's warnings; nil discards them.
	Logger *slog.Logger
	// TLS, if set, makes every connection TLS, accepted and dialled
	// (DialStream verifies that it reached a master). Nil is plaintext.
	TLS *TLS
	// Authorize, if set, is asked about every accepted connection once its
	// stream kind is known; a non-nil error closes it. A master uses it to
	// admit Raft streams only from masters in its configuration.
	Authorize func(kind byte, c Caller) error
	// HandshakeTimeout bounds the TLS handshake plus the stream byte.
	// Zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxConns caps accepted connections open at once; further ones are
	// closed at once. Zero means DefaultMaxConns.
	MaxConns int
	// MaxConnsPerIP caps accepted connections open at once from one remote
	// IP (an IPv6 /64 may hold twice as many, a /48 four times; see
	// Source). Zero means DefaultMaxConnsPerIP.
	MaxConnsPerIP int
	// Gate, if set, is asked about every caller at the handshake and again
	// whenever it changes (see Gate); a master uses it for membership and
	// the deny list. Nil trusts what certificates prove.
	Gate Gate
	// MaxMemberConns is the capacity kept for members, outside MaxConns:
	// connections from a member's address (Gate.Reserved) are counted
	// here until they authenticate, and connections of members (a Caller
	// the Gate marks Member) for as long as they last, so strangers who
	// hold MaxConns never keep the cluster from talking to itself. Zero
	// means DefaultMaxMemberConns.
	MaxMemberConns int
}

// Connection caps: enough for thousands of peers behind distinct
// addresses, few enough that one host cannot exhaust a node's descriptors.
const (
	DefaultMaxConns       = 8192
	DefaultMaxConnsPerIP  = 512
	DefaultMaxMemberConns = 1024
)

// Listen opens a plaintext Mux on addr; see ListenMux.
func Listen(addr string, logger *slog.Logger) (*Mux, error) {
	return ListenMux(MuxConfig{Addr: addr, Logger: logger})
}

// ListenMux opens a TCP listener on cfg.Addr and starts accepting. If the
// host is a specific IP, outgoing connections made through this Mux's
// dialers are bound to that IP too, so that a fault injector can cut one
// node's links by address.
func ListenMux(cfg MuxConfig) (*Mux, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerIP <= 0 {
		cfg.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if cfg.MaxMemberConns <= 0 {
		cfg.MaxMemberConns = DefaultMaxMemberConns
	}
	if cfg.TLS != nil && !cfg.TLS.HasCertificate() {
		return nil, fmt.Errorf("%w: a TLS listener needs a certificate", ErrTLSConfig)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	m := &Mux{
		ln:        ln,
		cfg:       cfg,
		logger:    cfg.Logger,
		strangers: quota{max: cfg.MaxConns, perSource: cfg.MaxConnsPerIP},
		members:   quota{max: cfg.MaxMemberConns},
		streams:   make(map[byte]*streamListener),
		routed:    make(map[*callerConn]struct{}),
		closed:    make(chan struct{}),
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsUnspecified() {
		m.localIP = tcp.IP
	}
	m.wg.Add(2)
	go m.acceptLoop()  // owned by m; Close waits for it
	go m.recheckLoop() // likewise
	return m, nil
}

// TLS returns the Mux's credentials, or nil if it is plaintext.
func (m *Mux) TLS() *TLS { return m.cfg.TLS }

// Addr returns the address the Mux listens on.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Listener returns the listener for one stream kind, creating it on first
// use. Connections of a kind nobody asked for are closed.
func (m *Mux) Listener(kind byte) net.Listener {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.streams[kind]; ok {
		return s
	}
	s := &streamListener{mux: m, kind: kind, conns: make(chan net.Conn), closed: make(chan struct{})}
	m.streams[kind] = s
	return s
}

// Dialer returns a net.Dialer bound to the Mux's local IP (if any).
func (m *Mux) Dialer(timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 15 * time.Second}
	if m.localIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: m.localIP}
	}
	return d
}

// DialStream dials addr and writes the stream-kind byte. A TLS Mux
// dials with TLS and requires the remote node to prove it is a master of
// this cluster (TLS.MasterClientConfig); use DialStreamTLS for anything
// else.
func (m *Mux) DialStream(addr string, kind byte, timeout time.Duration) (net.Conn, error) {
	var cfg *tls.Config
	if m.cfg.TLS != nil {
		cfg = m.cfg.TLS.MasterClientConfig()
	}
	return m.DialStreamTLS(addr, kind, timeout, cfg)
}

// DialStreamTLS dials addr, completes a TLS handshake with cfg (nil:
// plaintext), and writes the stream-kind byte inside TLS.
func (m *Mux) DialStreamTLS(addr string, kind byte, timeout time.Duration, cfg *tls.Config) (net.Conn, error) {
	if host, _, err := net.SplitHostPort(addr); err == nil && m.fw.isBlocked(host) {
		return nil, fmt.Errorf("dial %s: %w", addr, ErrBlocked)
	}
	raw, err := m.Dialer(timeout).Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := m.fw.track(raw, nil)
	if conn == nil {
		return nil, fmt.Errorf("dial %s: %w", addr, ErrBlocked)
	}
	return handshakeStream(conn, addr, kind, timeout, cfg)
}

// DialStreamTLS dials addr from any local address; see Mux.DialStreamTLS.
func DialStreamTLS(addr string, kind byte, timeout time.Duration, cfg *tls.Config) (net.Conn, error) {
	raw, err := (&net.Dialer{Timeout: timeout, KeepAlive: 15 * time.Second}).Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return handshakeStream(raw, addr, kind, timeout, cfg)
}

func handshakeStream(conn net.Conn, addr string, kind byte, timeout time.Duration, cfg *tls.Config) (net.Conn, error) {
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if cfg != nil {
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			conn.Close()
			var re tls.RecordHeaderError
			if errors.As(err, &re) && !looksLikeTLS(re.RecordHeader[:]) {
				// The server answered, but not with TLS: a wrong port, or
				// a FileShare port of a cluster run with --insecure.
				return nil, &NotFileShareError{Addr: addr, Answer: answerOf(re.RecordHeader[:]), LocalTLS: true}
			}
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		conn = tc
	}
	if _, err := conn.Write([]byte{kind}); err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// plaintextGreeting is what a plaintext Mux answers to a TLS ClientHello,
// so that a TLS client learns it reached a FileShare port of a cluster run
// without TLS (its handshake fails with a record header that begins
// "FileS"), instead of seeing the connection close for no stated reason.
const plaintextGreeting = "FileShare: this port speaks plaintext (its cluster runs without TLS); connect without TLS\n"

// httpGreeting is what a plaintext Mux answers to a connection whose first
// byte is an upper-case letter (an HTTP method such as GET), so that curl
// pointed at a cluster port says where the HTTP API is.
const httpGreeting = "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nThis is a FileShare master's cluster port, not HTTP; the HTTP API is on the master's HTTP port.\n"

// tlsAlert is a TLS fatal alert record (unexpected_message). A TLS Mux
// writes it to a client whose first bytes are not TLS, as most TLS servers
// do, so a plaintext FileShare client recognises a TLS port at once.
var tlsAlert = []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x0a}

// answerLinger bounds how long answerAndClose waits for a foreign client
// to read its answer and hang up.
const answerLinger = time.Second

// answerAndClose writes msg to a client that spoke a foreign protocol,
// then half-closes and discards what the client sent until it hangs up
// (at most answerLinger), and closes. Closing at once with the client's
// bytes unread would reset the connection, and the client might never see
// msg.
func answerAndClose(conn net.Conn, msg []byte) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(answerLinger))
	if _, err := conn.Write(msg); err != nil {
		return
	}
	raw := conn
	if tc, ok := raw.(*trackedConn); ok {
		raw = tc.Conn
	}
	if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, 1<<20))
}

// looksLikeTLS reports whether b begins like a TLS record: a record type
// (change_cipher_spec, alert, handshake, application_data) and major
// version 3.
func looksLikeTLS(b []byte) bool {
	return len(b) >= 2 && b[0] >= 0x14 && b[0] <= 0x17 && b[1] == 0x03
}

// answerOf names the protocol a server's first bytes look like.
func answerOf(b []byte) string {
	switch {
	case len(b) >= 4 && string(b[:4]) == "HTTP":
		return AnswerHTTP
	case looksLikeTLS(b):
		return AnswerTLS
	case len(b) > 0 && strings.HasPrefix(plaintextGreeting, string(b)):
		return AnswerPlaintext
	}
	return AnswerUnknown
}

// nothingListens reports whether a dial error means that no process
// listens at the address (refused, or no route to it) rather than that
// one is slow or the network lost a packet.
func nothingListens(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

func dialStream(d *net.Dialer, addr string, kind byte, timeout time.Duration) (net.Conn, error) {
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return handshakeStream(conn, addr, kind, timeout, nil)
}

// Close stops accepting, closes every stream listener, and waits for the
// accept loop. Connections already handed out are their owners' to close
// (or CloseConns'). Safe to call more than once.
func (m *Mux) Close() error {
	var err error
	m.once.Do(func() {
		close(m.closed)
		err = m.ln.Close()
		m.wg.Wait()
	})
	return err
}

// CloseConns closes every connection this Mux accepted or dialled that is
// still open, so that goroutines blocked on them return at once. A node
// uses it when stopping, after its services have stopped using them.
func (m *Mux) CloseConns() {
	m.fw.mu.Lock()
	conns := make([]*trackedConn, 0, len(m.fw.conns))
	for c := range m.fw.conns {
		conns = append(conns, c)
	}
	m.fw.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (m *Mux) acceptLoop() {
	defer m.wg.Done()
	var backoff time.Duration
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				m.logger.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
				case <-m.closed:
					return
				}
				continue
			}
			m.logger.Error("listener failed", "err", err)
			return
		}
		backoff = 0
		slot := m.admit(conn.RemoteAddr())
		if slot == nil {
			m.logger.Warn("refusing connection: too many open", "remote", conn.RemoteAddr(), "max", m.cfg.MaxConns, "max_per_ip", m.cfg.MaxConnsPerIP)
			conn.Close()
			continue
		}
		if conn = m.fw.track(conn, slot.release); conn == nil {
			continue
		}
		m.wg.Add(1)
		go m.route(conn, slot) // owned by m; Close waits for it
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// route completes the TLS handshake (if any), reads the kind byte, asks
// Authorize, and hands conn to its listener. Everything before the hand-off
// runs under the handshake timeout, so a silent connection costs at most
// that long.
func (m *Mux) route(conn net.Conn, slot *connSlot) {
	defer m.wg.Done()
	_ = conn.SetDeadline(time.Now().Add(m.cfg.HandshakeTimeout))
	caller := Caller{Insecure: true}
	var chain []*x509.Certificate
	if m.cfg.TLS != nil {
		cfg := m.cfg.TLS.ServerConfig()
		if m.cfg.Gate != nil {
			// A revoked certificate fails the handshake itself, so its
			// holder is told with a TLS alert.
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				c := m.cfg.TLS.Classify(cs.PeerCertificates)
				if _, err := m.cfg.Gate.Vet(c); err != nil {
					return refusal(c, err)
				}
				return nil
			}
		}
		tc := tls.Server(conn, cfg)
		if err := tc.Handshake(); err != nil {
			m.logger.Debug("closing connection: TLS handshake failed", "remote", conn.RemoteAddr(), "err", err)
			var re tls.RecordHeaderError
			if errors.As(err, &re) && re.Conn != nil {
				// A client that does not speak TLS: tell it this port does.
				answerAndClose(conn, tlsAlert)
				return
			}
			conn.Close()
			return
		}
		chain = tc.ConnectionState().PeerCertificates
		caller = m.cfg.TLS.Classify(chain)
		conn = tc
	}
	caller.Addr = conn.RemoteAddr()
	base := caller
	version := m.gateVersion() // before Vet: a change after it is caught below
	caller, err := m.vet(base)
	if err != nil {
		m.logger.Warn("refusing connection", "remote", conn.RemoteAddr(), "err", refusal(base, err))
		conn.Close()
		return
	}
	// Authenticated: members count against the capacity kept for them,
	// everyone else against the strangers' caps.
	pool := &m.strangers
	if caller.Member {
		pool = &m.members
	}
	if !slot.move(pool, caller.Member) {
		m.logger.Warn("refusing connection: too many open", "remote", conn.RemoteAddr(), "caller", caller.Role.String(), "max", m.cfg.MaxConns, "max_per_ip", m.cfg.MaxConnsPerIP)
		conn.Close()
		return
	}
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		conn.Close()
		return
	}
	if m.cfg.TLS == nil {
		// No stream kind begins like TLS or HTTP: answer those clients
		// with what they should do instead of closing without a word.
		switch {
		case b[0] == 0x16: // a TLS handshake record
			answerAndClose(conn, []byte(plaintextGreeting))
			return
		case b[0] >= 'A' && b[0] <= 'Z':
			answerAndClose(conn, []byte(httpGreeting))
			return
		}
	}
	_ = conn.SetDeadline(time.Time{})
	if m.cfg.Authorize != nil {
		if err := m.cfg.Authorize(b[0], caller); err != nil {
			m.logger.Warn("refusing connection", "remote", conn.RemoteAddr(), "kind", b[0], "caller", caller.Role.String(), "name", caller.Name, "err", err)
			conn.Close()
			return
		}
	}
	cc := &callerConn{Conn: conn, mux: m, kind: b[0], chain: chain, base: base, caller: caller, version: version}
	conn = cc
	m.mu.Lock()
	s, ok := m.streams[b[0]]
	if ok {
		m.routed[cc] = struct{}{}
	}
	m.mu.Unlock()
	if !ok {
		m.logger.Debug("closing connection of unknown stream kind", "kind", b[0], "remote", conn.RemoteAddr())
		conn.Close()
		return
	}
	if m.gateVersion() != version && m.recheckOne(cc, false) {
		return // the Gate changed while it was admitted, and refuses it now
	}
	select {
	case s.conns <- conn:
	case <-m.closed:
		conn.Close()
	case <-s.closed:
		conn.Close()
	case <-time.After(m.cfg.HandshakeTimeout):
		// Nobody is accepting this kind (e.g. the owner is shutting down).
		conn.Close()
	}
}

type streamListener struct {
	mux    *Mux
	kind   byte
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (s *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.closed:
		return nil, ErrMuxClosed
	case <-s.mux.closed:
		return nil, ErrMuxClosed
	}
}

// Close stops accepting this stream kind; new connections of the kind are
// closed. The shared socket stays open for the other kinds until the Mux
// itself is closed, so the RPC server can stop before Raft does.
func (s *streamListener) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

func (s *streamListener) Addr() net.Addr { return s.mux.ln.Addr() }

// connSlot is the place an accepted connection takes in one of the
// Mux's pools; it moves between them once the connection authenticates.
type connSlot struct {
	mu   sync.Mutex
	pool *quota // nil once released
	src  Source
}

// admit takes a slot for a new connection from addr: from the members'
// pool if addr is a member's, else from the strangers'. Nil means both
// are full for it.
func (m *Mux) admit(addr net.Addr) *connSlot {
	src := SourceOf(addr)
	if m.cfg.Gate != nil {
		if tcp, ok := addr.(*net.TCPAddr); ok {
			if ip, ok := netip.AddrFromSlice(tcp.IP); ok && m.cfg.Gate.Reserved(ip.Unmap()) && m.members.tryAcquire(src, 1) {
				return &connSlot{pool: &m.members, src: src}
			}
		}
	}
	if m.strangers.tryAcquire(src, 1) {
		return &connSlot{pool: &m.strangers, src: src}
	}
	return nil
}

// move charges the slot to pool instead, if it fits there, and reports
// whether the connection keeps a slot: where pool is full, an optional
// move leaves the slot where it is (a member finding the members' pool
// full stays among strangers), any other fails.
func (s *connSlot) move(pool *quota, optional bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pool == nil || s.pool == pool {
		return s.pool != nil
	}
	if !pool.tryAcquire(s.src, 1) {
		return optional
	}
	s.pool.release(s.src, 1)
	s.pool = pool
	return true
}

// release frees the slot; safe to call more than once.
func (s *connSlot) release() {
	s.mu.Lock()
	p := s.pool
	s.pool = nil
	s.mu.Unlock()
	if p != nil {
		p.release(s.src, 1)
	}
}
