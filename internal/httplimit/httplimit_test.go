package httplimit

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"fileshare/internal/poll"
)

// serve starts a limited server on loopback and returns its address and
// listener; the test stops it.
func serve(t *testing.T, l Limits) (string, *Listener) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := NewListener(raw, l)
	srv := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), l)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return raw.Addr().String(), ln
}

// dialFrom connects to addr from the loopback address from (127.0.0.x).
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// get sends one keep-alive request on c and reports whether it was
// answered.
func get(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == 200 && string(b) == "ok"
}

// closedByServer reports whether the server closed c (a read ends in EOF
// or a reset within the wait).
func closedByServer(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// The connection caps hold: one source gets its share and no more, all
// sources together get MaxConns and no more, and a closed connection
// frees its slot.
func TestListenerCapsConnectionsInAllAndPerSource(t *testing.T) {
	addr, ln := serve(t, Limits{MaxConns: 4, MaxConnsPerSource: 2})
	a1, a2 := dialFrom(t, "127.0.0.1", addr), dialFrom(t, "127.0.0.1", addr)
	if !get(a1) || !get(a2) {
		t.Fatal("connections within the per-source share were not served")
	}
	a3 := dialFrom(t, "127.0.0.1", addr)
	if !closedByServer(a3, 5*time.Second) {
		t.Fatal("a third connection from one source was kept; want it closed (share of 2)")
	}
	b1, b2 := dialFrom(t, "127.0.0.2", addr), dialFrom(t, "127.0.0.2", addr)
	if !get(b1) || !get(b2) {
		t.Fatal("another source was not served while the first held its share")
	}
	c1 := dialFrom(t, "127.0.0.3", addr)
	if !closedByServer(c1, 5*time.Second) {
		t.Fatal("a fifth connection was kept; want it closed (cap of 4)")
	}
	if got := ln.Open(); got != 4 {
		t.Errorf("open connections %d, want 4", got)
	}
	if got := ln.Rejected(); got != 2 {
		t.Errorf("rejected %d, want 2", got)
	}
	a1.Close()
	poll.Until(t, 5*time.Second, "the closed connection's slot is freed", func() bool { return ln.Open() == 3 })
	if !get(dialFrom(t, "127.0.0.3", addr)) {
		t.Error("a freed slot was not given to the next connection")
	}
}

// Idle connections are closed: one that never sends a request, and one
// kept alive after its request; their slots come back.
func TestServerClosesIdleConnections(t *testing.T) {
	addr, ln := serve(t, Limits{ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 200 * time.Millisecond})
	silent := dialFrom(t, "127.0.0.1", addr)
	kept := dialFrom(t, "127.0.0.1", addr)
	if !get(kept) {
		t.Fatal("request not served")
	}
	for name, c := range map[string]net.Conn{"silent": silent, "kept-alive": kept} {
		if !closedByServer(c, 5*time.Second) {
			t.Errorf("%s connection still open after 5 s; want it closed after 200 ms", name)
		}
	}
	poll.Until(t, 5*time.Second, "no connection open", func() bool { return ln.Open() == 0 })

	// A request whose headers dribble in is cut off too.
	slow := dialFrom(t, "127.0.0.1", addr)
	_, _ = io.WriteString(slow, "GET / HTTP/1.1\r\n")
	if !closedByServer(slow, 5*time.Second) {
		t.Error("a request with unfinished headers kept its connection")
	}
}

// One source cannot take every stream; others still get theirs, and a
// released stream is free again.
func TestShareGivesEachSourceItsPart(t *testing.T) {
	s := NewShare(Limits{MaxStreams: 3, MaxStreamsPerSource: 2})
	var rel []func()
	for range 2 {
		r, err := s.Acquire("192.0.2.1:1000")
		if err != nil {
			t.Fatal(err)
		}
		rel = append(rel, r)
	}
	if _, err := s.Acquire("192.0.2.1:1001"); !errors.Is(err, ErrSourceShare) {
		t.Fatalf("third stream from one source: %v, want ErrSourceShare", err)
	}
	r, err := s.Acquire("198.51.100.7:1")
	if err != nil {
		t.Fatalf("another source: %v", err)
	}
	if _, err := s.Acquire("203.0.113.9:1"); !errors.Is(err, ErrFull) {
		t.Fatalf("over the cap: %v, want ErrFull", err)
	}
	r()
	r() // twice is harmless
	if _, err := s.Acquire("203.0.113.9:1"); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	// An IPv6 /64 is one source.
	s6 := NewShare(Limits{MaxStreamsPerSource: 1})
	if _, err := s6.Acquire("[2001:db8:1:2::1]:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s6.Acquire("[2001:db8:1:2:ffff::9]:1"); !errors.Is(err, ErrSourceShare) {
		t.Errorf("second address of one /64: %v, want ErrSourceShare", err)
	}
	if _, err := s6.Acquire("[2001:db8:1:3::1]:1"); err != nil {
		t.Errorf("another /64: %v", err)
	}
	_ = rel
}

func TestSource(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:80":          "192.0.2.1",
		"[::ffff:192.0.2.1]:80": "192.0.2.1",
		"[2001:db8::1]:80":      "2001:db8::/64",
		"garbage":               "garbage",
	} {
		if got := SourceOf(in); got != want {
			t.Errorf("SourceOf(%q) = %q, want %q", in, got, want)
		}
	}
	if err := (Limits{IdleTimeout: -1}).Check("HTTPLimits"); err == nil || !strings.Contains(err.Error(), "HTTPLimits.IdleTimeout") {
		t.Errorf("negative IdleTimeout: %v, want an error naming HTTPLimits.IdleTimeout", err)
	}
}
