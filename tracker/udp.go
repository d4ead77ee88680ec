package tracker

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// BEP 15 constants.
const (
	udpProtocolID = 0x41727101980

	udpActionConnect  = 0
	udpActionAnnounce = 1
	udpActionScrape   = 2
	udpActionError    = 3

	udpConnectLen  = 16
	udpAnnounceLen = 98
	udpHeaderLen   = 16 // connection id, action, transaction id

	// udpMaxPacket is the largest request read; longer datagrams are
	// truncated by the read and then fail their length checks.
	udpMaxPacket = 2048
	// udpReplyBudget keeps an announce reply within one 1500-byte
	// Ethernet frame after IPv6 and UDP headers (48 bytes), since
	// fragments are often lost on the internet: at most 79 IPv6 peers
	// (IPv4 replies are never limited by it: 200 peers take 1220 bytes).
	udpReplyBudget = 1500 - 48

	// connIDSlot is the length of one connection-ID time slot. An ID is
	// accepted in the slot it was made in and the two after, so it works
	// for at least two minutes (BEP 15: clients use an ID for one minute,
	// trackers accept it for two) and at most three.
	connIDSlot  = 60 * time.Second
	connIDSlots = 3
)

// UDPConfig configures the BEP 15 front-end. The zero value is usable.
type UDPConfig struct {
	Config
	// Workers is how many packets are handled at once per Serve call
	// (each blocks in a Backend call while a membership change commits).
	// Zero means 64.
	Workers int
	// Queue is how many received packets may wait for a worker; a packet
	// arriving when the queue is full is dropped and counted in
	// Stats.Dropped (the client retries, BEP 15's 15·2ⁿ s schedule).
	// Zero means 1024, which bounds queued memory to 1024 × 2 KiB = 2 MiB.
	Queue int
	// Now is the clock connection IDs are made and checked with; nil means
	// time.Now. Tests use it to expire IDs.
	Now func() time.Time
}

// UDPServer is a BEP 15 tracker: connect, announce (with BEP 41 options
// tolerated), scrape and error replies.
//
// Connection IDs are stateless: HMAC-SHA256 under a random per-server
// secret of the client's IP and port and a 60-second time slot, truncated
// to 64 bits, accepted for two to three minutes. A packet whose connection
// ID is wrong or expired is dropped without a reply (and counted in
// Stats.Dropped), as opentracker does: BEP 15 defines no reply for it, a
// client that gets no answer connects again, and a reply would let a
// spoofed source use the tracker as a reflector. The announce's ip field
// is ignored (see ParseAnnounce for why); a num_want of -1 (any negative)
// means the default.
//
// A reply to an IPv4 packet (including IPv4-mapped ones on a dual-stack
// socket) carries 6-byte IPv4 peers; to an IPv6 packet, 18-byte IPv6 peers:
// the client can only use its own family. Peers of the other family are
// left out, so such a reply may hold fewer than num_want peers.
type UDPServer struct {
	b      Backend
	cfg    UDPConfig
	secret [32]byte
	stats  Stats
	bufs   sync.Pool // *[udpMaxPacket]byte
}

type udpPacket struct {
	buf  *[udpMaxPacket]byte
	n    int
	from netip.AddrPort
}

// NewUDPServer returns a server answering from b with a fresh random
// secret. cfg is copied; zero fields mean the defaults. It fails only if
// the system's random source does.
func NewUDPServer(b Backend, cfg UDPConfig) (*UDPServer, error) {
	cfg.Config = cfg.Config.normalized()
	if cfg.Workers <= 0 {
		cfg.Workers = 64
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 1024
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &UDPServer{b: b, cfg: cfg}
	if _, err := rand.Read(s.secret[:]); err != nil {
		return nil, fmt.Errorf("tracker: read a connection-ID secret: %w", err)
	}
	s.bufs.New = func() any { return new([udpMaxPacket]byte) }
	return s, nil
}

// Stats returns the server's live counters.
func (s *UDPServer) Stats() *Stats { return &s.stats }

// Serve reads packets from pc and answers them until ctx ends (then it
// returns nil) or a read fails (then it returns the error). It blocks; it
// starts cfg.Workers goroutines and waits for all of them before
// returning. It does not close pc. Serve may run on several PacketConns at
// once (say an IPv4 and an IPv6 socket); each call has its own workers and
// queue.
func (s *UDPServer) Serve(ctx context.Context, pc net.PacketConn) error {
	queue := make(chan udpPacket, s.cfg.Queue)
	var wg sync.WaitGroup
	for range s.cfg.Workers {
		wg.Add(1)
		go func() { // owned by Serve, which waits for it
			defer wg.Done()
			w := s.newWorker()
			for p := range queue {
				reply := w.handle(ctx, p.buf[:p.n], p.from)
				s.bufs.Put(p.buf)
				if reply != nil {
					s.write(pc, reply, p.from)
				}
			}
		}()
	}
	defer wg.Wait()
	defer close(queue)
	// A deadline in the past wakes the blocked read when ctx ends; one left
	// by an earlier Serve on the same pc is cleared first.
	pc.SetReadDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	udp, _ := pc.(*net.UDPConn)
	for {
		buf := s.bufs.Get().(*[udpMaxPacket]byte)
		var n int
		var from netip.AddrPort
		var err error
		if udp != nil {
			n, from, err = udp.ReadFromUDPAddrPort(buf[:])
		} else {
			var a net.Addr
			n, a, err = pc.ReadFrom(buf[:])
			if ua, ok := a.(*net.UDPAddr); ok {
				from = ua.AddrPort()
			}
		}
		if err != nil {
			s.bufs.Put(buf)
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tracker: udp read: %w", err)
		}
		if !from.IsValid() || from.Port() == 0 {
			s.bufs.Put(buf)
			s.stats.Dropped.Add(1)
			continue
		}
		select {
		case queue <- udpPacket{buf: buf, n: n, from: from}:
		default:
			s.bufs.Put(buf)
			s.stats.Dropped.Add(1)
		}
	}
}

func (s *UDPServer) write(pc net.PacketConn, reply []byte, to netip.AddrPort) {
	var err error
	if udp, ok := pc.(*net.UDPConn); ok {
		_, err = udp.WriteToUDPAddrPort(reply, to)
	} else {
		_, err = pc.WriteTo(reply, net.UDPAddrFromAddrPort(to))
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		s.cfg.Logger.Debug("tracker: udp write failed", "to", to, "err", err)
	}
}

// HandlePacket answers one request packet from `from` as Serve would, and
// returns the reply (appended to out[:0]), or nil when the packet gets no
// reply. It is for tests and fuzzing and for callers with their own socket
// loop; it is safe for concurrent use, but slower than Serve's workers
// (it sets up its own HMAC state each call).
func (s *UDPServer) HandlePacket(ctx context.Context, pkt []byte, from netip.AddrPort, out []byte) []byte {
	w := s.newWorker()
	w.out = out[:0]
	return w.handle(ctx, pkt, from)
}

// udpWorker is one worker's reusable state; it is used by one goroutine.
type udpWorker struct {
	s   *UDPServer
	mac hash.Hash
	sum [sha256.Size]byte
	out []byte
}

func (s *UDPServer) newWorker() *udpWorker {
	return &udpWorker{s: s, mac: hmac.New(sha256.New, s.secret[:]), out: make([]byte, 0, udpMaxPacket)}
}

// connID is the connection ID for from in time slot slot.
func (w *udpWorker) connID(from netip.AddrPort, slot int64) uint64 {
	var b [16 + 2 + 8]byte
	a := from.Addr().As16()
	copy(b[:16], a[:])
	binary.BigEndian.PutUint16(b[16:], from.Port())
	binary.BigEndian.PutUint64(b[18:], uint64(slot))
	w.mac.Reset()
	w.mac.Write(b[:])
	return binary.BigEndian.Uint64(w.mac.Sum(w.sum[:0]))
}

func (w *udpWorker) slot() int64 {
	return w.s.cfg.Now().Unix() / int64(connIDSlot/time.Second)
}

func (w *udpWorker) validConnID(id uint64, from netip.AddrPort) bool {
	slot := w.slot()
	for i := range int64(connIDSlots) {
		if w.connID(from, slot-i) == id {
			return true
		}
	}
	return false
}

// handle answers one packet; nil means no reply.
func (w *udpWorker) handle(ctx context.Context, pkt []byte, from netip.AddrPort) []byte {
	s := w.s
	from = netip.AddrPortFrom(from.Addr().Unmap().WithZone(""), from.Port())
	if len(pkt) < udpHeaderLen {
		s.stats.Dropped.Add(1)
		return nil
	}
	id := binary.BigEndian.Uint64(pkt[0:])
	action := binary.BigEndian.Uint32(pkt[8:])
	tx := binary.BigEndian.Uint32(pkt[12:])
	out := w.out[:0]
	if action == udpActionConnect {
		if id != udpProtocolID {
			s.stats.Dropped.Add(1) // not BEP 15
			return nil
		}
		s.stats.Connects.Add(1)
		out = binary.BigEndian.AppendUint32(out, udpActionConnect)
		out = binary.BigEndian.AppendUint32(out, tx)
		out = binary.BigEndian.AppendUint64(out, w.connID(from, w.slot()))
		return out
	}
	if !w.validConnID(id, from) {
		s.stats.Dropped.Add(1)
		return nil
	}
	switch action {
	case udpActionAnnounce:
		return w.announce(ctx, out, pkt, from, tx)
	case udpActionScrape:
		return w.scrape(ctx, out, pkt, tx)
	default:
		return w.fail(out, tx, Refuse("unknown action "+strconv.FormatUint(uint64(action), 10)+"; this tracker speaks BEP 15 connect, announce and scrape"))
	}
}

func (w *udpWorker) fail(out []byte, tx uint32, err error) []byte {
	reason, refusal := ReasonOf(err)
	w.s.stats.Failures.Add(1)
	if !refusal {
		w.s.stats.BackendErrors.Add(1)
		w.s.cfg.Logger.Error("tracker: backend failed", "err", err)
	}
	out = binary.BigEndian.AppendUint32(out, udpActionError)
	out = binary.BigEndian.AppendUint32(out, tx)
	return append(out, reason...)
}

func (w *udpWorker) announce(ctx context.Context, out, pkt []byte, from netip.AddrPort, tx uint32) []byte {
	if len(pkt) < udpAnnounceLen {
		return w.fail(out, tx, Refuse("truncated announce: "+strconv.Itoa(len(pkt))+" bytes, BEP 15 needs 98"))
	}
	var req AnnounceRequest
	copy(req.InfoHash[:], pkt[16:36])
	copy(req.PeerID[:], pkt[36:56])
	req.Downloaded = binary.BigEndian.Uint64(pkt[56:])
	req.Left = binary.BigEndian.Uint64(pkt[64:])
	req.Uploaded = binary.BigEndian.Uint64(pkt[72:])
	ev := binary.BigEndian.Uint32(pkt[80:])
	if ev > uint32(EventStopped) {
		return w.fail(out, tx, Refuse("event must be 0 (none), 1 (completed), 2 (started) or 3 (stopped)"))
	}
	req.Event = Event(ev)
	// pkt[84:88] is the ip field: ignored, the source address is used.
	req.Key, req.HasKey = binary.BigEndian.Uint32(pkt[88:]), true
	numWant := int32(binary.BigEndian.Uint32(pkt[92:]))
	port := binary.BigEndian.Uint16(pkt[96:])
	if port == 0 {
		return w.fail(out, tx, Refuse("port must be from 1 to 65535"))
	}
	var urlBuf [256]byte
	if _, ok := parseURLData(urlBuf[:0], pkt[udpAnnounceLen:]); !ok && w.s.cfg.Logger.Enabled(ctx, slog.LevelDebug) {
		w.s.cfg.Logger.Debug("tracker: malformed BEP 41 options ignored", "from", from)
	}
	req.Addr = netip.AddrPortFrom(from.Addr(), port)
	v4 := from.Addr().Is4()
	peerLen := 18
	if v4 {
		peerLen = 6
	}
	limit := min(w.s.cfg.MaxNumWant, (udpReplyBudget-20)/peerLen)
	switch {
	case req.Event == EventStopped:
		req.NumWant = 0
	case numWant < 0:
		req.NumWant = min(w.s.cfg.DefaultNumWant, limit)
	default:
		req.NumWant = min(int(numWant), limit)
	}
	ctx, cancel := context.WithTimeout(ctx, BackendTimeout)
	defer cancel()
	reply, err := w.s.b.Announce(ctx, &req)
	if err == nil && reply == nil {
		err = errors.New("backend returned neither a reply nor an error")
	}
	if err != nil {
		return w.fail(out, tx, err)
	}
	w.s.stats.Announces.Add(1)
	interval, _ := w.s.cfg.intervalSeconds()
	out = binary.BigEndian.AppendUint32(out, udpActionAnnounce)
	out = binary.BigEndian.AppendUint32(out, tx)
	out = binary.BigEndian.AppendUint32(out, uint32(interval))
	out = binary.BigEndian.AppendUint32(out, uint32(max(reply.Incomplete, 0)))
	out = binary.BigEndian.AppendUint32(out, uint32(max(reply.Complete, 0)))
	n := 0
	for _, p := range reply.Peers {
		if n == req.NumWant {
			break
		}
		a := p.Addr.Addr().Unmap()
		if a.Is4() != v4 {
			continue
		}
		out = appendCompactPeer(out, a, p.Addr.Port())
		n++
	}
	return out
}

// parseURLData walks BEP 41 options (after the 98-byte announce) and
// appends the URLData payloads to dst, concatenated as BEP 41 says. ok is
// false if the options are malformed (a length past the end, an unknown
// option type); the announce is answered either way, since the options
// only carry the announce URL's path, which this tracker does not use.
func parseURLData(dst, opts []byte) (urlData []byte, ok bool) {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0x0: // EndOfOptions
			return dst, true
		case 0x1: // NOP
			i++
		case 0x2: // URLData: a length byte, then that many bytes
			if i+1 >= len(opts) || i+2+int(opts[i+1]) > len(opts) {
				return dst, false
			}
			n := int(opts[i+1])
			dst = append(dst, opts[i+2:i+2+n]...)
			i += 2 + n
		default:
			return dst, false
		}
	}
	return dst, true
}

func (w *udpWorker) scrape(ctx context.Context, out, pkt []byte, tx uint32) []byte {
	body := pkt[udpHeaderLen:]
	switch {
	case len(body) == 0:
		return w.fail(out, tx, Refuse("scrape needs at least one info_hash; this tracker does not list every torrent"))
	case len(body)%20 != 0:
		return w.fail(out, tx, Refuse("truncated scrape: the info-hashes are not a multiple of 20 bytes"))
	case len(body)/20 > MaxScrapeHashes:
		return w.fail(out, tx, Refuse("a scrape may name at most "+strconv.Itoa(MaxScrapeHashes)+" info-hashes; split it"))
	}
	hashes := make([]InfoHash, len(body)/20)
	for i := range hashes {
		copy(hashes[i][:], body[20*i:])
	}
	ctx, cancel := context.WithTimeout(ctx, BackendTimeout)
	defer cancel()
	entries, err := w.s.b.Scrape(ctx, hashes)
	if err != nil {
		return w.fail(out, tx, err)
	}
	if len(entries) != len(hashes) {
		return w.fail(out, tx, errors.New("backend returned "+strconv.Itoa(len(entries))+" scrape entries for "+strconv.Itoa(len(hashes))+" hashes"))
	}
	w.s.stats.Scrapes.Add(1)
	out = binary.BigEndian.AppendUint32(out, udpActionScrape)
	out = binary.BigEndian.AppendUint32(out, tx)
	for _, e := range entries {
		out = binary.BigEndian.AppendUint32(out, uint32(max(e.Complete, 0)))
		out = binary.BigEndian.AppendUint32(out, uint32(max(e.Downloaded, 0)))
		out = binary.BigEndian.AppendUint32(out, uint32(max(e.Incomplete, 0)))
	}
	return out
}
