package transport

import (
	"context"
	"encoding/binary"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"fileshare/internal/poll"
)

type bigReq struct{ N int }
type bigResp struct{ Data []byte }

// pipeline writes n requests for method on conn as fast as it can and
// never reads a reply.
func pipeline(conn net.Conn, method string, body []byte, n int) {
	for i := range n {
		b, _ := Marshal(&request{ID: uint64(i + 10), Method: method, Timeout: int64(time.Minute), Body: body})
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
		if _, err := conn.Write(append(hdr[:], b...)); err != nil {
			return
		}
	}
}

// Replies a client does not read are bounded by bytes: two connections
// that pipeline requests for large replies (like searches for 10,000
// files) and never read them leave the server's heap bounded, another
// client is answered at once, and the connections that do not read are
// closed after the write timeout.
func TestUnreadRepliesAreBoundedByBytes(t *testing.T) {
	m, err := ListenMux(MuxConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServerLimits(nil, Limits{WriteTimeout: 3 * time.Second})
	const replySize = 256 << 10
	var served atomic.Int64
	Handle(s, "Big", func(ctx context.Context, r *bigReq) (*bigResp, error) {
		served.Add(1)
		return &bigResp{Data: make([]byte, replySize)}, nil
	})
	Handle(s, "Echo", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		return &echoResp{Msg: r.Msg}, nil
	})
	go s.Serve(m.Listener(StreamRPC))
	t.Cleanup(func() { s.Close(); m.Close() })
	addr := m.Addr().String()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	// The attacker dials from 127.0.0.2 (Linux routes all of 127/8 to
	// loopback), so that its per-address share is not the other client's.
	body, _ := Marshal(&bigReq{N: 1})
	var attackers []net.Conn
	for range 2 {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		raw, err := d.Dial("tcp", addr)
		if err != nil {
			t.Skipf("cannot dial from 127.0.0.2: %v", err)
		}
		if _, err := raw.Write([]byte{StreamRPC}); err != nil {
			t.Fatal(err)
		}
		attackers = append(attackers, raw)
		go pipeline(raw, "Big", body, 4000)
	}
	defer func() {
		for _, c := range attackers {
			c.Close()
		}
	}()

	// Watch the heap while the attack runs.
	var peak atomic.Uint64
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	poll.Until(t, 10*time.Second, "the attack gets its first replies made", func() bool { return served.Load() > 10 })

	// Another client is answered promptly.
	c := NewClient(ClientConfig{})
	defer c.Close()
	for range 5 {
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		var out echoResp
		err := c.Call(ctx, addr, "Echo", &echoReq{Msg: "hi"}, &out)
		cancel()
		if err != nil || out.Msg != "hi" {
			t.Fatalf("another client's call during the attack: %v", err)
		}
		t.Logf("call took %v, served %d", time.Since(start), served.Load())
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("another client's call took %v during the attack, want under 5s", d)
		}
	}

	// The connections that never read are closed once a write has waited
	// for the write timeout.
	poll.Until(t, 20*time.Second, "the server closes the connections that do not read", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) <= 1 // the other client's
	})
	close(stop)
	<-watched
	grew := int64(peak.Load()) - int64(before.HeapInuse)
	t.Logf("heap in use grew by at most %d MiB; %d large replies were made", grew>>20, served.Load())
	// Without the byte bounds each connection runs MaxCallsPerConn calls
	// at once and holds their replies: 2 × 512 × 256 KiB = 256 MiB.
	if limit := int64(100 << 20); grew > limit {
		t.Fatalf("heap in use grew by %d MiB under the attack, want under %d MiB", grew>>20, limit>>20)
	}
	if n := served.Load(); n > 2000 {
		t.Fatalf("the server made %d large replies nobody read, want it to stop early", n)
	}
}

// Handler slots are shared per source address: many connections from one
// address together hold at most MaxCallsPerIP handlers, and a client
// elsewhere is served at once.
func TestHandlerSlotsAreSharedPerSource(t *testing.T) {
	m, err := ListenMux(MuxConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServerLimits(nil, Limits{MaxCalls: 64, MaxCallsPerIP: 16, MaxCallsPerConn: 8})
	Handle(s, "Echo", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		select {
		case <-time.After(r.Sleep):
		case <-ctx.Done():
		}
		return &echoResp{Msg: r.Msg}, nil
	})
	go s.Serve(m.Listener(StreamRPC))
	t.Cleanup(func() { s.Close(); m.Close() })
	addr := m.Addr().String()
	body, _ := Marshal(&echoReq{Msg: "x", Sleep: time.Minute})
	attacker := SourceOf(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)})
	for range 16 {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		raw, err := d.Dial("tcp", addr)
		if err != nil {
			t.Skipf("cannot dial from 127.0.0.2: %v", err)
		}
		t.Cleanup(func() { raw.Close() })
		if _, err := raw.Write([]byte{StreamRPC}); err != nil {
			t.Fatal(err)
		}
		go pipeline(raw, "Echo", body, 100)
	}
	poll.Until(t, 10*time.Second, "the attacker fills its address's share", func() bool {
		n, _ := s.calls.usedBy(attacker)
		return n == 16
	})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c := NewClient(ClientConfig{})
	defer c.Close()
	var out echoResp
	if err := c.Call(ctx, addr, "Echo", &echoReq{Msg: "hi"}, &out); err != nil || out.Msg != "hi" {
		t.Fatalf("a client elsewhere while one address holds its share: %v", err)
	}
	if n, total := s.calls.usedBy(attacker); n > 16 || total > 17 {
		t.Fatalf("one address holds %d handler slots (%d in all), want at most 16", n, total)
	}
}
