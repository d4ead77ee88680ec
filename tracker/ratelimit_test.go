package tracker_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fileshare/internal/poll"
	"fileshare/tracker"
	"fileshare/tracker/trackertest"
)

func answered(s *tracker.UDPServer, from netip.AddrPort) bool {
	r := s.HandlePacket(context.Background(), connectPkt(1), from, nil)
	return len(r) == 16
}

// One source gets its burst, then its rate; another source is not
// affected; an IPv6 /64 is one source however many addresses it uses, and
// a /48 gets eight sources' worth (rate and burst).
func TestUDPSourceRateLimit(t *testing.T) {
	clk := &clock{}
	clk.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	s := newUDP(t, &trackertest.MemoryBackend{}, tracker.UDPConfig{Now: clk.now, SourceRate: 10, SourceBurst: 20})
	flood := netip.MustParseAddrPort("198.51.100.1:1000")
	n := 0
	for range 1000 {
		if answered(s, flood) {
			n++
		}
	}
	if n < 20 || n > 22 {
		t.Errorf("a source sending 1000 packets at once got %d answered, want its burst of about 20", n)
	}
	if !answered(s, netip.MustParseAddrPort("198.51.100.2:1000")) {
		t.Error("another source was refused while the first flooded")
	}
	clk.advance(time.Second)
	n = 0
	for range 100 {
		if answered(s, flood) {
			n++
		}
	}
	if n < 9 || n > 11 {
		t.Errorf("after a second the flooder got %d answered, want its rate of 10", n)
	}
	if got := s.Stats().RateLimited.Load(); got < 1000 {
		t.Errorf("Stats.RateLimited = %d, want the ~1070 dropped", got)
	}

	// IPv6: many addresses of one /64 share its bucket.
	n = 0
	for i := range 1000 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)})
		if answered(s, netip.AddrPortFrom(a, 1000)) {
			n++
		}
	}
	if n > 22 {
		t.Errorf("1000 addresses of one /64 got %d answered, want one source's burst (about 20)", n)
	}
	// Many /64s of one /48 share the /48's burst.
	n = 0
	for i := range 1000 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 2, byte(i >> 8), byte(i), 0, 0, 0, 0, 0, 0, 0, 1})
		if answered(s, netip.AddrPortFrom(a, 1000)) {
			n++
		}
	}
	if n > 8*20+2 {
		t.Errorf("1000 /64s of one /48 got %d answered at once, want at most the /48's burst (8 × 20)", n)
	}
	clk.advance(10 * time.Second)
	n = 0
	for i := range 1000 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 2, byte(i >> 8), byte(i), 0, 0, 0, 0, 0, 0, 0, 1})
		if answered(s, netip.AddrPortFrom(a, 1000)) {
			n++
		}
	}
	if n < 20 {
		t.Errorf("after 10 s, /64s of one /48 got %d answered, want at least the burst again", n)
	}
}

// A source that keeps sending bad connection IDs is banned: even its
// connects go unanswered until the ban ends. A good ID between bad ones
// starts the count again, so a real client with an expired ID is never
// banned. The ban is logged.
func TestUDPBanForBadConnIDs(t *testing.T) {
	clk := &clock{}
	clk.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	var log bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &log, mu: &logMu}, nil))
	s := newUDP(t, &trackertest.MemoryBackend{}, tracker.UDPConfig{
		Config: tracker.Config{Logger: logger}, Now: clk.now,
		SourceRate: 1e6, SourceBurst: 1e6, BanAfterBadIDs: 10, BanFor: time.Minute,
	})
	src := netip.MustParseAddrPort("198.51.100.9:1000")
	good := trackertest.Connect(t, s, src)
	for range 9 {
		trackertest.Accepts(s, good^1, src)
	}
	if !trackertest.Accepts(s, good, src) {
		t.Fatal("a good ID after 9 bad ones was refused")
	}
	for range 9 {
		trackertest.Accepts(s, good^1, src)
	}
	if !answered(s, src) {
		t.Fatal("9 bad IDs after a good one got the source banned; the count must restart at a good ID")
	}
	trackertest.Accepts(s, good^1, src) // the 10th in a row
	if answered(s, src) || trackertest.Accepts(s, good, src) {
		t.Error("a source with 10 bad IDs in a row is still answered; want it banned")
	}
	if !answered(s, netip.MustParseAddrPort("198.51.100.10:1000")) {
		t.Error("another source was refused during the ban")
	}
	clk.advance(61 * time.Second)
	if !answered(s, src) {
		t.Error("the source is still refused after its ban ended")
	}
	logMu.Lock()
	out := log.String()
	logMu.Unlock()
	if !strings.Contains(out, "banned for bad connection ids") || !strings.Contains(out, "198.51.100.9") {
		t.Errorf("the ban was not logged with the source; log:\n%s", out)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Dropped datagrams are logged, one line per kind per interval with the
// count, so an operator sees them without a log flood.
func TestUDPDropsAreLoggedRateLimited(t *testing.T) {
	clk := &clock{}
	clk.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	var log bytes.Buffer
	var mu sync.Mutex
	s := newUDP(t, &trackertest.MemoryBackend{}, tracker.UDPConfig{
		Config: tracker.Config{Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &log, mu: &mu}, nil))},
		Now:    clk.now, BanAfterBadIDs: -1,
	})
	for range 500 {
		trackertest.Accepts(s, 12345, client4)
	}
	mu.Lock()
	out := log.String()
	mu.Unlock()
	if n := strings.Count(out, "udp datagrams dropped"); n != 1 {
		t.Errorf("500 bad connection IDs made %d log lines, want 1; log:\n%s", n, out)
	}
	if !strings.Contains(out, "wrong or expired connection id") {
		t.Errorf("the drop line does not name the reason; log:\n%s", out)
	}
	if got := s.Stats().BadConnIDs.Load(); got != 500 {
		t.Errorf("Stats.BadConnIDs = %d, want 500", got)
	}
}

// slowStarts is a Backend whose started announces take a while, as a
// membership change does while it commits.
type slowStarts struct {
	trackertest.MemoryBackend
	delay time.Duration
}

func (b *slowStarts) Announce(ctx context.Context, req *tracker.AnnounceRequest) (*tracker.AnnounceReply, error) {
	if req.Event == tracker.EventStarted {
		select {
		case <-time.After(b.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return b.MemoryBackend.Announce(ctx, req)
}

// A source flooding the tracker with valid announces that change
// membership cannot keep the workers' queue full: its datagrams beyond
// its rate are dropped before they queue, and another source's announces
// are answered.
func TestUDPFloodingSourceDoesNotStarveOthers(t *testing.T) {
	b := &slowStarts{delay: 2 * time.Millisecond}
	s := newUDP(t, b, tracker.UDPConfig{Workers: 2, Queue: 16, SourceRate: 20, SourceBurst: 20, LimitLoopback: true})
	pc := listenUDP(t, "udp4", "127.0.0.1:0")
	serveUDP(t, s, pc)
	dial := func(local string) net.Conn {
		d := net.Dialer{LocalAddr: net.UDPAddrFromAddrPort(netip.MustParseAddrPort(local))}
		c, err := d.Dial("udp4", pc.LocalAddr().String())
		if err != nil {
			t.Skipf("cannot send from %s here (%v)", local, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	flooder, victim := dial("127.0.0.2:0"), dial("127.0.0.3:0")
	floodID := binary.BigEndian.Uint64(exchange(t, flooder, connectPkt(1))[8:])
	victimID := binary.BigEndian.Uint64(exchange(t, victim, connectPkt(1))[8:])

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var sent atomic.Int64
	wg.Go(func() {
		pkt := udpAnnounce{connID: floodID, tx: 9, port: 1, numWant: 5, event: 2}
		for i := uint32(0); ctx.Err() == nil; i++ {
			pkt.id = tracker.PeerID{byte(i), byte(i >> 8), byte(i >> 16)}
			flooder.Write(pkt.bytes())
			sent.Add(1)
		}
	})
	go func() { // drain the flooder's replies so its socket stays open
		buf := make([]byte, 2048)
		for {
			if _, err := flooder.Read(buf); err != nil {
				return
			}
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	poll.Until(t, 10*time.Second, "the flood under way", func() bool { return sent.Load() > 1000 })

	answeredN := 0
	buf := make([]byte, 2048)
	for i := range 10 {
		pkt := udpAnnounce{connID: victimID, tx: uint32(100 + i), id: tracker.PeerID{0xee, byte(i)}, port: 2, numWant: 5, event: 2}
		victim.Write(pkt.bytes())
		victim.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := victim.Read(buf); err == nil && n >= 20 && binary.BigEndian.Uint32(buf[4:]) == uint32(100+i) {
			answeredN++
		}
	}
	if answeredN < 8 {
		t.Errorf("during a flood from another source, %d of 10 announces were answered, want at least 8 (rate limited %d, dropped %d)",
			answeredN, s.Stats().RateLimited.Load(), s.Stats().Dropped.Load())
	}
	if s.Stats().RateLimited.Load() == 0 {
		t.Error("the flood was not rate limited")
	}
}

// An announce without an event that blocks in the Backend (a change the
// loop could not foresee) does not stall the socket: the stall monitor
// starts another loop, and other clients are answered.
func TestUDPBlockedRenewalDoesNotStallTheSocket(t *testing.T) {
	b := &blocking{release: make(chan struct{})}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(b.release) }) })
	s := newUDP(t, b, tracker.UDPConfig{Readers: 1, Workers: 4})
	pc := listenUDP(t, "udp4", "127.0.0.1:0")
	serveUDP(t, s, pc)
	c, err := net.Dial("udp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := binary.BigEndian.Uint64(exchange(t, c, connectPkt(1))[8:])
	c.Write(udpAnnounce{connID: id, tx: 2, port: 6881, numWant: -1}.bytes()) // blocks its loop
	poll.Until(t, 10*time.Second, "the announce inside the backend", func() bool { return b.entered.Load() == 1 })
	if r := exchange(t, c, connectPkt(3)); len(r) != 16 || binary.BigEndian.Uint32(r[4:]) != 3 {
		t.Errorf("connect while a renewal blocks: reply %x, want a connect reply", r)
	}
	once.Do(func() { close(b.release) })
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
}

// The datagrams read in the same batch as a renewal that blocks are
// answered by the loop that replaces the stalled one, not after the
// blocked call returns.
func TestUDPBlockedRenewalDoesNotDelayItsBatch(t *testing.T) {
	b := &blocking{release: make(chan struct{})}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(b.release) }) })
	s := newUDP(t, b, tracker.UDPConfig{Readers: 1})
	pc := listenUDP(t, "udp4", "127.0.0.1:0")
	c, err := net.Dial("udp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	from := netip.MustParseAddrPort(c.LocalAddr().String())
	id := trackertest.Connect(t, s, from) // IDs are stateless: valid on the socket too
	// Both datagrams wait in the socket before Serve starts, so its first
	// read takes them in one batch: the blocking announce first.
	c.Write(udpAnnounce{connID: id, tx: 2, port: 6881, numWant: -1}.bytes())
	c.Write(connectPkt(3))
	serveUDP(t, s, pc)
	if r := exchangeRead(t, c); len(r) != 16 || binary.BigEndian.Uint32(r[4:]) != 3 {
		t.Errorf("the connect read with a blocked renewal: reply %x, want the connect reply", r)
	}
	if got := b.entered.Load(); got != 1 {
		t.Errorf("%d announces in the backend, want the blocked one", got)
	}
	once.Do(func() { close(b.release) })
}

func exchangeRead(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	return buf[:n]
}
