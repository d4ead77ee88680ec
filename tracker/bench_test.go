package tracker_test

import (
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fileshare/tracker"
	"fileshare/tracker/trackertest"
)

func BenchmarkParseAnnounce(b *testing.B) {
	q := baseQuery("%124Vx%9A%bc%de%F0+%00ABCDEFGHIJ") + "&key=DEADBEEF&numwant=80&compact=1&event=started"
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := tracker.ParseAnnounce(q, src, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// discardWriter is a ResponseWriter that keeps nothing, so the benchmark
// measures the handler, not a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

func BenchmarkHTTPAnnounce(b *testing.B) {
	mem := &trackertest.MemoryBackend{}
	h := tracker.NewHTTPHandler(mem, tracker.HTTPConfig{})
	r := httptest.NewRequest("GET", "/announce?"+baseQuery(escapeAll(hash20, false))+"&numwant=50", nil)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}

// BenchmarkUDPAnnounceLoopback measures one client's announce round trips
// through a real loopback socket and the worker pool.
func BenchmarkUDPAnnounceLoopback(b *testing.B) {
	s := newUDP(b, &trackertest.MemoryBackend{}, tracker.UDPConfig{})
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc) }()
	defer func() { cancel(); <-done }()
	c, err := net.Dial("udp4", pc.LocalAddr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2048)
	c.Write(connectPkt(1))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(buf); err != nil {
		b.Fatal(err)
	}
	pkt := udpAnnounce{connID: binary.BigEndian.Uint64(buf[8:]), tx: 2, port: 6881, numWant: -1}.bytes()
	b.ReportAllocs()
	for b.Loop() {
		c.Write(pkt)
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// udpLoad drives pc with `clients` sockets, each keeping `window`
// announces in flight, until b.N replies arrived in all; b reports the
// time per answered announce. Replies lost (a full socket buffer) are
// given up after a short wait and sent again.
func udpLoad(b *testing.B, addr string, clients, window int) {
	b.Helper()
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for c := range clients {
		conn, err := net.Dial("udp4", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		wg.Go(func() {
			buf := make([]byte, 2048)
			conn.Write(connectPkt(1))
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := conn.Read(buf)
			if err != nil || n != 16 {
				b.Errorf("connect: %v", err)
				return
			}
			pkt := udpAnnounce{connID: binary.BigEndian.Uint64(buf[8:]), tx: 2, port: 6881, numWant: 50,
				ih: tracker.InfoHash{byte(c)}, id: tracker.PeerID{byte(c)}}.bytes()
			for left.Load() > 0 {
				for range window {
					conn.Write(pkt)
				}
				for range window {
					conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
					if _, err := conn.Read(buf); err != nil {
						break
					}
					left.Add(-1)
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkUDPAnnounceThroughput measures announces answered per second
// by Serve on one loopback socket, with 8 clients keeping 32 announces
// each in flight: the server's cost per announce, not a round trip.
func BenchmarkUDPAnnounceThroughput(b *testing.B) {
	s := newUDP(b, &trackertest.MemoryBackend{}, tracker.UDPConfig{})
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc) }()
	defer func() { cancel(); <-done }()
	udpLoad(b, pc.LocalAddr().String(), 8, 32)
}
