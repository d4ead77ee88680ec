package tracker_test

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fileshare/internal/poll"
	"fileshare/tracker"
	"fileshare/tracker/trackertest"
)

func connectPkt(tx uint32) []byte {
	p := binary.BigEndian.AppendUint64(nil, tracker.UDPProtocolID)
	p = binary.BigEndian.AppendUint32(p, 0)
	return binary.BigEndian.AppendUint32(p, tx)
}

type udpAnnounce struct {
	connID         uint64
	tx             uint32
	ih             tracker.InfoHash
	id             tracker.PeerID
	down, left, up uint64
	event, ip, key uint32
	numWant        int32
	port           uint16
	opts           []byte
}

func (a udpAnnounce) bytes() []byte {
	p := binary.BigEndian.AppendUint64(nil, a.connID)
	p = binary.BigEndian.AppendUint32(p, 1)
	p = binary.BigEndian.AppendUint32(p, a.tx)
	p = append(p, a.ih[:]...)
	p = append(p, a.id[:]...)
	p = binary.BigEndian.AppendUint64(p, a.down)
	p = binary.BigEndian.AppendUint64(p, a.left)
	p = binary.BigEndian.AppendUint64(p, a.up)
	p = binary.BigEndian.AppendUint32(p, a.event)
	p = binary.BigEndian.AppendUint32(p, a.ip)
	p = binary.BigEndian.AppendUint32(p, a.key)
	p = binary.BigEndian.AppendUint32(p, uint32(a.numWant))
	p = binary.BigEndian.AppendUint16(p, a.port)
	return append(p, a.opts...)
}

func scrapePkt(connID uint64, tx uint32, hashes ...tracker.InfoHash) []byte {
	p := binary.BigEndian.AppendUint64(nil, connID)
	p = binary.BigEndian.AppendUint32(p, 2)
	p = binary.BigEndian.AppendUint32(p, tx)
	for _, h := range hashes {
		p = append(p, h[:]...)
	}
	return p
}

// checkError fails unless reply is a BEP 15 error for tx whose message
// starts with want.
func checkError(t *testing.T, reply []byte, tx uint32, want string) {
	t.Helper()
	if len(reply) < 8 || binary.BigEndian.Uint32(reply) != 3 || binary.BigEndian.Uint32(reply[4:]) != tx || !strings.HasPrefix(string(reply[8:]), want) {
		t.Errorf("got reply %q, want error for tx %d starting %q", reply, tx, want)
	}
}

// clock is a settable time source for connection-ID expiry.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func newUDP(t testing.TB, b tracker.Backend, cfg tracker.UDPConfig) *tracker.UDPServer {
	t.Helper()
	if cfg.Intervals == (tracker.Intervals{}) {
		cfg.Config.Intervals = fixedIntervals.Intervals
	}
	s, err := tracker.NewUDPServer(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func connID(t testing.TB, s *tracker.UDPServer, from netip.AddrPort) uint64 {
	t.Helper()
	r := s.HandlePacket(context.Background(), connectPkt(77), from, nil)
	if len(r) != 16 || binary.BigEndian.Uint32(r) != 0 || binary.BigEndian.Uint32(r[4:]) != 77 {
		t.Fatalf("connect reply %x", r)
	}
	return binary.BigEndian.Uint64(r[8:])
}

var client4 = netip.MustParseAddrPort("192.0.2.1:40000")

// A connection ID works for two minutes for the address it was made for,
// and not after three minutes, nor for another address, nor forged.
func TestUDPConnectionIDLifetime(t *testing.T) {
	clk := &clock{}
	clk.ns.Store(time.Date(2025, 1, 1, 0, 0, 59, 0, time.UTC).UnixNano()) // the end of a slot
	s := newUDP(t, &trackertest.MemoryBackend{}, tracker.UDPConfig{Now: clk.now})
	id := connID(t, s, client4)
	ann := udpAnnounce{connID: id, tx: 5, port: 1, numWant: -1}
	ctx := t.Context()

	clk.advance(119 * time.Second)
	if r := s.HandlePacket(ctx, ann.bytes(), client4, nil); len(r) < 20 || binary.BigEndian.Uint32(r) != 1 {
		t.Errorf("announce 119 s after connect: reply %q, want an announce reply", r)
	}
	other := netip.MustParseAddrPort("192.0.2.1:40001")
	if r := s.HandlePacket(ctx, ann.bytes(), other, nil); r != nil {
		t.Errorf("connection ID used from another port got %q, want no reply", r)
	}
	forged := ann
	forged.connID ^= 1
	if r := s.HandlePacket(ctx, forged.bytes(), client4, nil); r != nil {
		t.Errorf("forged connection ID got %q, want no reply", r)
	}
	clk.advance(62 * time.Second) // 181 s after connect
	if r := s.HandlePacket(ctx, ann.bytes(), client4, nil); r != nil {
		t.Errorf("connection ID 181 s old got %q, want no reply", r)
	}
	if got := s.Stats().Dropped.Load(); got != 3 {
		t.Errorf("dropped %d, want 3", got)
	}
}

// Every malformed packet is answered with a reason or dropped, never
// mistaken for a valid request.
func TestUDPMalformedPackets(t *testing.T) {
	s := newUDP(t, &trackertest.MemoryBackend{}, tracker.UDPConfig{})
	id := connID(t, s, client4)
	ctx := t.Context()
	good := udpAnnounce{connID: id, tx: 9, port: 6881, numWant: -1}

	for name, pkt := range map[string][]byte{
		"empty":             nil,
		"15 bytes":          connectPkt(1)[:15],
		"wrong protocol id": append([]byte{0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x81}, connectPkt(1)[8:]...),
	} {
		if r := s.HandlePacket(ctx, pkt, client4, nil); r != nil {
			t.Errorf("%s: got reply %q, want none", name, r)
		}
	}
	checkError(t, s.HandlePacket(ctx, good.bytes()[:97], client4, nil), 9, "truncated announce: 97 bytes")
	bad := good
	bad.event = 4
	checkError(t, s.HandlePacket(ctx, bad.bytes(), client4, nil), 9, "event must be 0")
	bad = good
	bad.port = 0
	checkError(t, s.HandlePacket(ctx, bad.bytes(), client4, nil), 9, "port must be")
	checkError(t, s.HandlePacket(ctx, scrapePkt(id, 4), client4, nil), 4, "scrape needs at least one info_hash")
	checkError(t, s.HandlePacket(ctx, append(scrapePkt(id, 4, tracker.InfoHash{}), 1, 2, 3), client4, nil), 4, "truncated scrape")
	many := make([]tracker.InfoHash, tracker.MaxScrapeHashes+1)
	checkError(t, s.HandlePacket(ctx, scrapePkt(id, 4, many...), client4, nil), 4, "a scrape may name at most 74")
	unknown := scrapePkt(id, 6)
	binary.BigEndian.PutUint32(unknown[8:], 9)
	checkError(t, s.HandlePacket(ctx, unknown, client4, nil), 6, "unknown action 9")
}

// BEP 41 options after the announce are accepted, even malformed ones.
func TestUDPURLDataOptions(t *testing.T) {
	b := &scripted{}
	s := newUDP(t, b, tracker.UDPConfig{})
	id := connID(t, s, client4)
	for name, opts := range map[string][]byte{
		"url data":          append(append([]byte{0x2, 9}, "/announce"...), 0x1, 0x2, 3, '?', 'a', '=', 0x0),
		"length past end":   {0x2, 200, 'x'},
		"unknown option":    {0x7, 1, 2},
		"only end":          {0x0},
		"nops then nothing": {0x1, 0x1},
	} {
		ann := udpAnnounce{connID: id, tx: 3, port: 6881, numWant: 5, opts: opts}
		r := s.HandlePacket(t.Context(), ann.bytes(), client4, nil)
		if len(r) != 20 || binary.BigEndian.Uint32(r) != 1 {
			t.Errorf("%s: reply %q, want an empty announce reply", name, r)
		}
	}
}

// num_want -1 means the default; the ip field is ignored; the announced
// address is the packet's source.
func TestUDPAnnounceFields(t *testing.T) {
	b := &scripted{}
	s := newUDP(t, b, tracker.UDPConfig{})
	from6 := netip.MustParseAddrPort("[2001:db8::9]:5000")
	for _, tc := range []struct {
		from    netip.AddrPort
		numWant int32
		event   uint32
		want    int
	}{
		{client4, -1, 0, 50},
		{client4, 1000, 0, 200},
		{client4, 30, 3, 0},
		{from6, 1000, 0, 79}, // what fits in one 1500-byte frame
	} {
		ann := udpAnnounce{connID: connID(t, s, tc.from), tx: 1, port: 6881, numWant: tc.numWant, event: tc.event,
			ip: 0x01020304, key: 0xabcdef01, left: 5, ih: tracker.InfoHash{7}, id: tracker.PeerID{8}}
		s.HandlePacket(t.Context(), ann.bytes(), tc.from, nil)
		want := tracker.AnnounceRequest{InfoHash: tracker.InfoHash{7}, PeerID: tracker.PeerID{8}, Left: 5,
			Addr: netip.AddrPortFrom(tc.from.Addr(), 6881), Event: tracker.Event(tc.event), NumWant: tc.want, Key: 0xabcdef01, HasKey: true}
		if b.last != want {
			t.Errorf("num_want %d from %v:\n got %+v\nwant %+v", tc.numWant, tc.from, b.last, want)
		}
	}
}

// listenUDP opens a loopback UDP socket, or skips if the family is not
// available on this machine.
func listenUDP(t *testing.T, network, addr string) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Skipf("no %s loopback here (%v); the IPv4 test covers the same code", network, err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func serveUDP(t *testing.T, s *tracker.UDPServer, pc net.PacketConn) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

func exchange(t *testing.T, c net.Conn, pkt []byte) []byte {
	t.Helper()
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	return buf[:n]
}

// connect → announce → scrape over a real socket, for each family: the
// reply carries the peers of the packet's family only, in its length.
func TestUDPRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		network, addr string
		peerLen       int
		wantPeer      string
	}{
		{"udp4", "127.0.0.1:0", 6, "\x0a\x00\x00\x01\x1a\xe1"},
		{"udp6", "[::1]:0", 18, "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\xc8\xd5"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			mem := &trackertest.MemoryBackend{}
			ih := tracker.InfoHash{0xaa}
			for i, p := range goldenPeers[:2] { // a v4 and a v6 seeder
				if _, err := mem.Announce(t.Context(), &tracker.AnnounceRequest{InfoHash: ih, PeerID: p.ID, Addr: p.Addr, Event: tracker.EventStarted, Left: 0}); err != nil {
					t.Fatal(i, err)
				}
			}
			s := newUDP(t, mem, tracker.UDPConfig{})
			pc := listenUDP(t, tc.network, tc.addr)
			serveUDP(t, s, pc)
			c, err := net.Dial(tc.network, pc.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()

			r := exchange(t, c, connectPkt(0x1234))
			if len(r) != 16 || binary.BigEndian.Uint32(r) != 0 || binary.BigEndian.Uint32(r[4:]) != 0x1234 {
				t.Fatalf("connect reply %x", r)
			}
			id := binary.BigEndian.Uint64(r[8:])
			ann := udpAnnounce{connID: id, tx: 0x5678, ih: ih, id: tracker.PeerID{9}, left: 100, event: 2, numWant: -1, port: 6881}
			r = exchange(t, c, ann.bytes())
			if len(r) != 20+tc.peerLen {
				t.Fatalf("announce reply of %d bytes %x, want 20 + one %d-byte peer", len(r), r, tc.peerLen)
			}
			if a, tx, iv, le, se := binary.BigEndian.Uint32(r), binary.BigEndian.Uint32(r[4:]), binary.BigEndian.Uint32(r[8:]),
				binary.BigEndian.Uint32(r[12:]), binary.BigEndian.Uint32(r[16:]); a != 1 || tx != 0x5678 || iv != 1800 || le != 1 || se != 2 {
				t.Errorf("announce header: action %d tx %#x interval %d leechers %d seeders %d; want 1 0x5678 1800 1 2", a, tx, iv, le, se)
			}
			if string(r[20:]) != tc.wantPeer {
				t.Errorf("peer %x, want %x", r[20:], tc.wantPeer)
			}
			r = exchange(t, c, scrapePkt(id, 0x9abc, ih, tracker.InfoHash{0xbb}))
			want := "\x00\x00\x00\x02\x00\x00\x9a\xbc" + "\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x01" + strings.Repeat("\x00", 12)
			if string(r) != want {
				t.Errorf("scrape reply %x, want %x", r, want)
			}
			st := s.Stats()
			if st.Connects.Load() != 1 || st.Announces.Load() != 1 || st.Scrapes.Load() != 1 {
				t.Errorf("stats connects %d announces %d scrapes %d, want 1 each", st.Connects.Load(), st.Announces.Load(), st.Scrapes.Load())
			}
		})
	}
}

// blocking is a Backend whose announces wait until released (or their
// context ends).
type blocking struct {
	release chan struct{}
	entered atomic.Int64
}

func (b *blocking) Announce(ctx context.Context, req *tracker.AnnounceRequest) (*tracker.AnnounceReply, error) {
	b.entered.Add(1)
	select {
	case <-b.release:
		return &tracker.AnnounceReply{}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (b *blocking) Scrape(ctx context.Context, hashes []tracker.InfoHash) ([]tracker.ScrapeEntry, error) {
	return make([]tracker.ScrapeEntry, len(hashes)), nil
}

// With every worker busy and the queue full, announces that carry an
// event (the ones handed to workers) are dropped and counted instead of
// piling up; the server still stops when asked.
func TestUDPSaturationDrops(t *testing.T) {
	b := &blocking{release: make(chan struct{})}
	s := newUDP(t, b, tracker.UDPConfig{Workers: 1, Queue: 1})
	pc := listenUDP(t, "udp4", "127.0.0.1:0")
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(b.release) }) }) // if the test fails early
	serveUDP(t, s, pc)
	c, err := net.Dial("udp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := binary.BigEndian.Uint64(exchange(t, c, connectPkt(1))[8:])
	ann := udpAnnounce{connID: id, tx: 2, port: 6881, numWant: -1, event: 2}
	poll.Until(t, 10*time.Second, "a packet dropped while the only worker is blocked", func() bool {
		c.Write(ann.bytes())
		return s.Stats().Dropped.Load() > 0
	})
	poll.Until(t, 10*time.Second, "the one worker inside the backend", func() bool { return b.entered.Load() >= 1 })
	if got := b.entered.Load(); got != 1 {
		t.Errorf("%d announces reached the backend with one worker blocked, want 1", got)
	}
	once.Do(func() { close(b.release) })
}

// Whatever arrives, the handler does not panic, and a reply always echoes
// the packet's transaction ID.
func FuzzUDPHandlePacket(f *testing.F) {
	clk := &clock{}
	clk.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	// No rate limit: the clock stands still, so a source would run dry.
	s := newUDP(f, &trackertest.MemoryBackend{}, tracker.UDPConfig{Now: clk.now, SourceRate: -1})
	id := connID(f, s, client4)
	f.Add(connectPkt(1))
	f.Add(udpAnnounce{connID: id, tx: 2, port: 6881, numWant: -1, opts: []byte{0x2, 3, 'a', 'b', 'c', 0x1, 0x0}}.bytes())
	f.Add(udpAnnounce{connID: id, tx: 2, port: 6881, numWant: 3, event: 3}.bytes())
	f.Add(scrapePkt(id, 3, tracker.InfoHash{1}, tracker.InfoHash{2}))
	f.Add(scrapePkt(id, 3)[:14])
	f.Fuzz(func(t *testing.T, pkt []byte) {
		r := s.HandlePacket(t.Context(), pkt, client4, nil)
		if r == nil {
			return
		}
		if len(r) < 8 || string(r[4:8]) != string(pkt[12:16]) {
			t.Fatalf("packet %x got reply %x without its transaction ID", pkt, r)
		}
	})
}

// Many datagrams arriving at once are read and answered in batches, each
// reply to its own request.
func TestUDPBatchesAnswerEveryDatagram(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "udp6" {
				addr = "[::1]:0"
			}
			s := newUDP(t, &trackertest.MemoryBackend{}, tracker.UDPConfig{Readers: 1})
			pc := listenUDP(t, network, addr)
			serveUDP(t, s, pc)
			c, err := net.Dial(network, pc.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			const n = 100 // more than one batch
			for i := range n {
				c.Write(connectPkt(uint32(1000 + i)))
			}
			seen := map[uint32]bool{}
			buf := make([]byte, 2048)
			for len(seen) < n {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				m, err := c.Read(buf)
				if err != nil {
					t.Fatalf("after %d of %d replies: %v", len(seen), n, err)
				}
				tx := binary.BigEndian.Uint32(buf[4:])
				if m != 16 || tx < 1000 || tx >= 1000+n || seen[tx] {
					t.Fatalf("reply %x: not a connect reply to a request sent once", buf[:m])
				}
				seen[tx] = true
			}
		})
	}
}

// ListenUDP's sockets share one address, and Serve answers on each of
// them; a UDPConns is also usable as a single PacketConn.
func TestUDPListenReusePort(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"udp4", "127.0.0.1:0"}, {"udp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			g, err := tracker.ListenUDP(t.Context(), tc.network, tc.addr, 4)
			if err != nil {
				t.Skipf("no %s loopback here (%v)", tc.network, err)
			}
			t.Cleanup(func() { g.Close() })
			if got := len(g.Conns()); got != 4 && runtime.GOOS == "linux" {
				t.Errorf("%d sockets, want 4 on Linux", got)
			}
			for _, c := range g.Conns() {
				if c.LocalAddr().String() != g.LocalAddr().String() {
					t.Errorf("socket on %s, want every socket on %s", c.LocalAddr(), g.LocalAddr())
				}
			}
			s := newUDP(t, &trackertest.MemoryBackend{}, tracker.UDPConfig{})
			serveUDP(t, s, g)
			for i := range 16 { // different source ports spread over the sockets
				c, err := net.Dial(tc.network, g.LocalAddr().String())
				if err != nil {
					t.Fatal(err)
				}
				id := binary.BigEndian.Uint64(exchange(t, c, connectPkt(uint32(i)))[8:])
				r := exchange(t, c, udpAnnounce{connID: id, tx: 7, port: 6881, numWant: 5, event: 2, id: tracker.PeerID{byte(i)}}.bytes())
				if len(r) < 20 || binary.BigEndian.Uint32(r) != 1 || binary.BigEndian.Uint32(r[4:]) != 7 {
					t.Errorf("client %d: announce reply %x", i, r)
				}
				c.Close()
			}
			if got := s.Stats().Announces.Load(); got != 16 {
				t.Errorf("%d announces answered, want 16", got)
			}
		})
	}
}
