package transport

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Stream kinds: the first byte of every connection.
const (
	StreamRaft  byte = 0x01
	StreamRPC   byte = 0x02
	StreamPiece byte = 0x03
)

// DefaultHandshakeTimeout bounds how long a new connection may take to send
// its stream-kind byte before the Mux closes it.
const DefaultHandshakeTimeout = 5 * time.Second

// ErrMuxClosed is returned by Accept on a stream listener after Close.
var ErrMuxClosed = errors.New("transport: listener closed")

// Mux is one TCP listener demultiplexed by the first byte of each
// connection. Create it with Listen, take the per-kind listeners with
// Listener, and Close it once.
type Mux struct {
	ln      net.Listener
	logger  *slog.Logger
	localIP net.IP // dial from this IP so each node owns its address; nil = any

	fw firewall

	mu      sync.Mutex
	streams map[byte]*streamListener
	closed  chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

// Listen opens a TCP listener on addr ("host:port"; port 0 picks one) and
// starts accepting. If host is a specific IP, outgoing connections made
// through this Mux's dialers are bound to that IP too, so that a fault
// injector can cut one node's links by address. logger may be nil.
func Listen(addr string, logger *slog.Logger) (*Mux, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	m := &Mux{
		ln:      ln,
		logger:  logger,
		streams: make(map[byte]*streamListener),
		closed:  make(chan struct{}),
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsUnspecified() {
		m.localIP = tcp.IP
	}
	m.wg.Add(1)
	go m.acceptLoop()
	return m, nil
}

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

// DialStream dials addr and writes the stream-kind byte.
func (m *Mux) DialStream(addr string, kind byte, timeout time.Duration) (net.Conn, error) {
	if host, _, err := net.SplitHostPort(addr); err == nil && m.fw.isBlocked(host) {
		return nil, fmt.Errorf("dial %s: %w", addr, ErrBlocked)
	}
	conn, err := dialStream(m.Dialer(timeout), addr, kind, timeout)
	if err != nil {
		return nil, err
	}
	if tc := m.fw.track(conn); tc != nil {
		return tc, nil
	}
	return nil, fmt.Errorf("dial %s: %w", addr, ErrBlocked)
}

func dialStream(d *net.Dialer, addr string, kind byte, timeout time.Duration) (net.Conn, error) {
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte{kind}); err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetWriteDeadline(time.Time{})
	return conn, nil
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
		if conn = m.fw.track(conn); conn == nil {
			continue
		}
		m.wg.Add(1)
		go m.route(conn)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// route reads the kind byte and hands conn to its listener.
func (m *Mux) route(conn net.Conn) {
	defer m.wg.Done()
	_ = conn.SetReadDeadline(time.Now().Add(DefaultHandshakeTimeout))
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		conn.Close()
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	m.mu.Lock()
	s, ok := m.streams[b[0]]
	m.mu.Unlock()
	if !ok {
		m.logger.Debug("closing connection of unknown stream kind", "kind", b[0], "remote", conn.RemoteAddr())
		conn.Close()
		return
	}
	select {
	case s.conns <- conn:
	case <-m.closed:
		conn.Close()
	case <-s.closed:
		conn.Close()
	case <-time.After(DefaultHandshakeTimeout):
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
