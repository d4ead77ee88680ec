package master_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"fileshare/master"
)

// dialHTTP connects to addr from the loopback address from (127.0.0.x).
func dialHTTP(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// healthz sends one kept-alive GET /v1/healthz on c and reports whether
// it was answered with 200.
func healthz(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET /v1/healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// closedByPeer reports whether the other end closed c within wait.
func closedByPeer(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// The HTTP port closes connections that sit idle (before a request and
// between kept-alive requests), so they cannot pile up and use this
// master's descriptors.
func TestHTTPPortClosesIdleConnections(t *testing.T) {
	c := newCluster(t, 1, func(cfg *master.Config) {
		withHTTP("")(cfg)
		cfg.HTTPLimits.ReadHeaderTimeout = 300 * time.Millisecond
		cfg.HTTPLimits.IdleTimeout = 300 * time.Millisecond
	})
	c.Leader()
	addr := c.Master(0).HTTPAddr()
	var conns []net.Conn
	for range 20 {
		conns = append(conns, dialHTTP(t, "127.0.0.2", addr))
	}
	kept := dialHTTP(t, "127.0.0.2", addr)
	if !healthz(kept) {
		t.Fatal("GET /v1/healthz not answered")
	}
	for i, conn := range append(conns, kept) {
		if !closedByPeer(conn, 10*time.Second) {
			t.Fatalf("idle connection %d still open after 10 s; want it closed after 300 ms", i)
		}
	}
}

// The HTTP port caps open connections: one client gets its share and no
// more, everyone together the cap and no more; an operator elsewhere is
// still served while one client holds its share.
func TestHTTPPortCapsConnections(t *testing.T) {
	c := newCluster(t, 1, func(cfg *master.Config) {
		withHTTP("")(cfg)
		cfg.HTTPLimits.MaxConns = 6
		cfg.HTTPLimits.MaxConnsPerSource = 3
	})
	c.Leader()
	addr := c.Master(0).HTTPAddr()
	for i := range 3 {
		if !healthz(dialHTTP(t, "127.0.0.2", addr)) {
			t.Fatalf("connection %d within one client's share not served", i)
		}
	}
	for i := range 10 {
		if conn := dialHTTP(t, "127.0.0.2", addr); !closedByPeer(conn, 5*time.Second) {
			t.Fatalf("connection %d beyond one client's share of 3 was kept open", 3+i)
		}
	}
	for i := range 3 {
		if !healthz(dialHTTP(t, "127.0.0.3", addr)) {
			t.Fatalf("an operator's connection %d was refused while another client held its share", i)
		}
	}
	if conn := dialHTTP(t, "127.0.0.4", addr); !closedByPeer(conn, 5*time.Second) {
		t.Fatal("a seventh connection was kept open; want the cap of 6 to hold")
	}
}
