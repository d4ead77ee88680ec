package transport

import (
	"errors"
	"io"
	"net"
	"sync"
)

// ErrBlocked is returned when dialing an address the Mux's firewall blocks.
var ErrBlocked = errors.New("transport: link blocked by firewall")

// firewall cuts a node's links to chosen IPs: it refuses dials to them,
// closes accepted connections from them, and severs open connections either
// way. It is a fault-injection hook for in-process tests, where each node
// listens and dials on its own loopback IP (127.0.0.x) so that an IP names a
// node. Cross-process fault injection uses the kernel or proxies instead.
type firewall struct {
	mu      sync.Mutex
	blocked map[string]bool
	conns   map[*trackedConn]struct{}
}

type trackedConn struct {
	net.Conn
	fw      *firewall
	ip      string
	release func() // nil, or frees the connection's slot once
	once    sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.fw.mu.Lock()
		delete(c.fw.conns, c)
		c.fw.mu.Unlock()
		if c.release != nil {
			c.release()
		}
	})
	return c.Conn.Close()
}

// ReadFrom passes through to the wrapped connection, so io.Copy from a file
// to a tracked TCP connection still uses sendfile.
func (c *trackedConn) ReadFrom(r io.Reader) (int64, error) { return readFrom(c.Conn, r) }

// readFrom copies r to conn, by conn's own ReadFrom when it has one (a TCP
// connection's uses sendfile), else by io.Copy. It is the ReadFrom of the
// connection wrappers, which would otherwise hide their connection's.
func readFrom(conn net.Conn, r io.Reader) (int64, error) {
	if rf, ok := conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{conn}, r)
}

// HostOf returns the IP (or, failing that, the host) of addr, as a
// string: the key by which the Mux caps connections per remote IP.
func HostOf(addr net.Addr) string {
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

// track registers conn, or closes it and returns nil if its IP is blocked.
// release, if not nil, runs once when the connection closes (or at once if
// it is refused).
func (f *firewall) track(conn net.Conn, release func()) net.Conn {
	ip := HostOf(conn.RemoteAddr())
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.blocked[ip] {
		conn.Close()
		if release != nil {
			release()
		}
		return nil
	}
	if f.conns == nil {
		f.conns = make(map[*trackedConn]struct{})
	}
	tc := &trackedConn{Conn: conn, fw: f, ip: ip, release: release}
	f.conns[tc] = struct{}{}
	return tc
}

func (f *firewall) isBlocked(host string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blocked[host]
}

// Block cuts this node's links to and from the given IPs (both directions
// from this node's side; block on both nodes for a clean partition).
func (m *Mux) Block(ips ...string) {
	f := &m.fw
	f.mu.Lock()
	if f.blocked == nil {
		f.blocked = make(map[string]bool)
	}
	var doomed []*trackedConn
	for _, ip := range ips {
		f.blocked[ip] = true
	}
	for c := range f.conns {
		if f.blocked[c.ip] {
			doomed = append(doomed, c)
		}
	}
	f.mu.Unlock()
	for _, c := range doomed {
		c.Close()
	}
}

// Unblock restores links to the given IPs, or to all if none are given.
func (m *Mux) Unblock(ips ...string) {
	f := &m.fw
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(ips) == 0 {
		f.blocked = nil
		return
	}
	for _, ip := range ips {
		delete(f.blocked, ip)
	}
}
