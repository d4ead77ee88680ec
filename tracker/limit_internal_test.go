package tracker

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeListener hands out one pipe end per remote address it is given.
type fakeListener struct {
	conns chan net.Conn
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func (f *fakeListener) Accept() (net.Conn, error) {
	c, ok := <-f.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (f *fakeListener) Close() error   { return nil }
func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{} }

// The HTTP tracker's per-source caps are hierarchical for IPv6 — an
// address, its /64, its /48 — so one subscriber cannot fill the global
// cap by using many addresses of its prefix; and they hold exactly when
// connections arrive and leave at once.
func TestHTTPConnCapsAreHierarchical(t *testing.T) {
	cfg := HTTPConfig{MaxConns: 1000, MaxConnsPerIP: 4, MaxConnsPer64: 8, MaxConnsPer48: 16}
	l := newLimitListener(&fakeListener{}, cfg, &Stats{})

	v6 := func(b ...byte) netip.Addr {
		var a [16]byte
		a[0], a[1] = 0x20, 0x01
		copy(a[2:], b)
		return netip.AddrFrom16(a)
	}
	// attempt tries n connections at once from addrs(i) and returns how
	// many were let in.
	attempt := func(n int, addr func(i int) netip.Addr) int {
		var ok atomic.Int64
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				k, m := sourcePrefixes(addr(i))
				if l.acquire(k[:m]) {
					ok.Add(1)
				}
			})
		}
		wg.Wait()
		return int(ok.Load())
	}
	if got := attempt(100, func(int) netip.Addr { return v6(0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1) }); got != 4 {
		t.Errorf("100 connections from one IPv6 address: %d let in, want exactly the per-address cap 4", got)
	}
	if got := attempt(100, func(i int) netip.Addr { return v6(0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(i+1)) }); got != 8 {
		t.Errorf("100 connections from 100 addresses of one /64: %d let in, want exactly the /64 cap 8", got)
	}
	if got := attempt(100, func(i int) netip.Addr { return v6(0, 3, 0, 1, 0, byte(i), 0, 0, 0, 0, 0, 0, 0, 1) }); got != 16 {
		t.Errorf("100 connections from 100 /64s of one /48: %d let in, want exactly the /48 cap 16", got)
	}
	if got := attempt(100, func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}) }); got != 100 {
		t.Errorf("100 connections from 100 IPv4 addresses: %d let in, want all", got)
	}
	if got := attempt(1000, func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }); got != 1000-4-8-16-100 {
		t.Errorf("the global cap: %d more let in, want exactly %d", got, 1000-4-8-16-100)
	}
}

// Through Accept: connections over a cap are closed at once; a released
// one makes room again.
func TestHTTPConnCapsThroughAccept(t *testing.T) {
	fl := &fakeListener{conns: make(chan net.Conn, 16)}
	st := &Stats{}
	l := newLimitListener(fl, HTTPConfig{MaxConns: 100, MaxConnsPerIP: 1, MaxConnsPer64: 2, MaxConnsPer48: 4}, st)
	push := func(ip string) net.Conn {
		a, b := net.Pipe()
		fl.conns <- addrConn{Conn: a, remote: &net.TCPAddr{IP: net.ParseIP(ip), Port: 1}}
		return b
	}
	push("2001:db8::1")
	first, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	push("2001:db8::2")
	if _, err := l.Accept(); err != nil {
		t.Fatal(err)
	}
	other := push("2001:db8::3") // the /64 is full: closed and skipped
	push("2001:db8:0:1::1")      // another /64 of the same /48
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if got := c.RemoteAddr().String(); got != "[2001:db8:0:1::1]:1" {
		t.Errorf("accepted %s, want the connection from the other /64", got)
	}
	other.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := other.Read(make([]byte, 1)); err == nil {
		t.Error("the connection over the /64 cap was not closed")
	}
	if st.Dropped.Load() != 1 {
		t.Errorf("Dropped = %d, want 1", st.Dropped.Load())
	}
	first.Close()
	push("2001:db8::3")
	if c, err := l.Accept(); err != nil || c.RemoteAddr().String() != "[2001:db8::3]:1" {
		t.Errorf("after a close, got %v, %v; want the /64 to take a connection again", c, err)
	}
}
