package tracker

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"fileshare/internal/defaults"
)

// The BEP 15 wire values, shared with the client side (btclient).
const (
	// UDPProtocolID opens every connect request.
	UDPProtocolID = 0x41727101980

	// The actions of requests and replies.
	UDPActionConnect  = 0
	UDPActionAnnounce = 1
	UDPActionScrape   = 2
	UDPActionError    = 3
)

// The server's BEP 15 limits.
const (
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
	// udpBatch is how many datagrams one read or write system call moves
	// (recvmmsg and sendmmsg on Linux).
	udpBatch = 32
)

// Defaults of UDPConfig.
const (
	// DefaultSourceRate is the datagrams per second one source (an IPv4
	// address or an IPv6 /64) may send on average. A client sends two per
	// announce at most (connect and announce) and re-announces each
	// torrent every few minutes, so this is thousands of torrents, or a
	// NAT with many users.
	DefaultSourceRate = 200
	// DefaultSourceBurst is how many datagrams a source may send at once
	// above its rate (a client starting with many torrents).
	DefaultSourceBurst = 1000
	// DefaultMaxSources is the number of sources whose buckets are kept;
	// the table takes about 40 bytes per source.
	DefaultMaxSources = 1 << 16
	// DefaultBanAfterBadIDs is how many bad connection IDs in a row (with
	// no good one between) get a source banned. A real client sends a
	// few after its ID expires, then connects again.
	DefaultBanAfterBadIDs = 256
	// DefaultBanFor is how long a ban lasts.
	DefaultBanFor = time.Minute
	// DefaultDropLogInterval is the least time between two log lines for
	// the same kind of dropped datagram.
	DefaultDropLogInterval = 10 * time.Second
)

// UDPConfig configures the BEP 15 front-end. The zero value is usable.
type UDPConfig struct {
	Config
	// Workers is how many announces that carry an event (started,
	// completed, stopped) are handled at once per Serve call. Those
	// usually change membership and so block in the Backend until the
	// change commits; they are handed to these workers so that the read
	// loops go on answering renewals. The changes answered per second are
	// at most Workers divided by the commit latency (256 / 5 ms ≈ 50,000),
	// and a waiting worker costs about 10 KiB. Zero means 256.
	Workers int
	// Queue is how many such announces may wait for a worker; one
	// arriving when the queue is full is dropped and counted in
	// Stats.Dropped (the client retries, BEP 15's 15·2ⁿ s schedule).
	// Zero means 1024, which bounds queued memory to 1024 × 2 KiB = 2 MiB.
	Queue int
	// Readers is how many read loops Serve runs on a single socket (each
	// reads and writes udpBatch datagrams per system call). Zero means
	// GOMAXPROCS. A UDPConns from ListenUDP gets one loop per socket
	// instead.
	Readers int
	// SourceRate is the datagrams per second one source (an IPv4 address
	// or an IPv6 /64; an IPv6 /48 gets 8 times as much) may send on
	// average; datagrams above it are dropped and counted in
	// Stats.RateLimited. Zero means DefaultSourceRate; negative turns the
	// limit (and bans) off.
	SourceRate float64
	// SourceBurst is how many datagrams above SourceRate a source may send
	// at once. Zero means DefaultSourceBurst.
	SourceBurst int
	// MaxSources is how many sources the rate limiter keeps (about 40
	// bytes each); when it is full a new source takes the place of an
	// idle one. Zero means DefaultMaxSources.
	MaxSources int
	// BanAfterBadIDs bans a source that sends this many bad or expired
	// connection IDs with no good one between, for BanFor. Zero means
	// DefaultBanAfterBadIDs; negative never bans. UDP sources can be
	// forged, so a forger can get an address banned for as long as it
	// keeps sending: keep BanFor short.
	BanAfterBadIDs int
	// BanFor is how long a ban lasts. Zero means DefaultBanFor.
	BanFor time.Duration
	// LimitLoopback applies the rate limit to loopback sources too. By
	// default they are exempt: only processes on this machine can send
	// from a loopback address (benchmarks, a local proxy).
	LimitLoopback bool
	// DropLogInterval is the least time between two warnings about
	// dropped datagrams of one kind (each counts the drops it stands
	// for). Zero means DefaultDropLogInterval.
	DropLogInterval time.Duration
	// Now is the clock connection IDs are made and checked with and rate
	// limits are kept by; nil means time.Now. Tests use it to expire IDs.
	Now func() time.Time
}

// UDPServer is a BEP 15 tracker: connect, announce (with BEP 41 options
// tolerated), scrape and error replies.
//
// Connection IDs are stateless: a MAC of the client's IP and port and a
// 60-second time slot (see connid.go), accepted for two to three
// minutes. The key is the backend's (ConnIDSecrets) when it has one, so
// that every server sharing it accepts the IDs of the others — masters on
// one IP, a restarted master — else a random one of this server's. A
// packet whose connection ID is wrong or expired is dropped without a
// reply (counted in Stats.Dropped and Stats.BadConnIDs, and logged at
// most every DropLogInterval), as opentracker does: BEP 15 defines no
// reply for it, a client that gets no answer connects again, and a reply
// would let a spoofed source use the tracker as a reflector. A source
// that keeps sending bad IDs is banned for a while, and every source is
// held to a packet rate, so one client cannot crowd out the others. The
// announce's ip field is ignored (see ParseAnnounce for why); a num_want
// of -1 (any negative) means the default.
//
// A reply to an IPv4 packet (including IPv4-mapped ones on a dual-stack
// socket) carries 6-byte IPv4 peers; to an IPv6 packet, 18-byte IPv6 peers:
// the client can only use its own family. Peers of the other family are
// left out, so such a reply may hold fewer than num_want peers.
type UDPServer struct {
	b     Backend
	cfg   UDPConfig
	ring  connIDRing
	limit *sourceLimiter // nil: no rate limit
	drops *dropLog
	stats Stats
	jobs  sync.Pool // *udpJob
}

// NewUDPServer returns a server answering from b. cfg is copied; zero
// fields mean the defaults. It fails only if the system's random source
// does.
func NewUDPServer(b Backend, cfg UDPConfig) (*UDPServer, error) {
	cfg.Config = cfg.Config.normalized()
	if cfg.Workers <= 0 {
		cfg.Workers = 256
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 1024
	}
	if cfg.Readers <= 0 {
		cfg.Readers = runtime.GOMAXPROCS(0)
	}
	defaults.Fill(&cfg.SourceRate, DefaultSourceRate)
	if cfg.SourceBurst <= 0 {
		cfg.SourceBurst = DefaultSourceBurst
	}
	if cfg.MaxSources <= 0 {
		cfg.MaxSources = DefaultMaxSources
	}
	defaults.Fill(&cfg.BanAfterBadIDs, DefaultBanAfterBadIDs)
	cfg.BanAfterBadIDs = max(cfg.BanAfterBadIDs, 0)
	if cfg.BanFor <= 0 {
		cfg.BanFor = DefaultBanFor
	}
	if cfg.DropLogInterval <= 0 {
		cfg.DropLogInterval = DefaultDropLogInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &UDPServer{b: b, cfg: cfg, drops: newDropLog(cfg.Logger, cfg.DropLogInterval)}
	var own [32]byte
	if _, err := rand.Read(own[:]); err != nil {
		return nil, fmt.Errorf("tracker: read a connection-ID secret: %w", err)
	}
	s.ring.own = newConnIDKeys([][]byte{own[:]})
	s.ring.src, _ = b.(ConnIDSecrets)
	if cfg.SourceRate > 0 {
		s.limit = newSourceLimiter(cfg.SourceRate, cfg.SourceBurst, cfg.MaxSources, cfg.BanAfterBadIDs, cfg.BanFor)
	}
	s.jobs.New = func() any { return new(udpJob) }
	return s, nil
}

// Stats returns the server's live counters.
func (s *UDPServer) Stats() *Stats { return &s.stats }

// drop counts and (rate-limited) logs a datagram that gets no reply.
func (s *UDPServer) drop(r dropReason, from netip.AddrPort, now int64) {
	s.stats.Dropped.Add(1)
	switch r {
	case dropBadConnID:
		s.stats.BadConnIDs.Add(1)
	case dropRateLimited, dropBanned:
		s.stats.RateLimited.Add(1)
	}
	s.drops.drop(r, from, now)
}

// HandlePacket answers one request packet from `from` as Serve would, and
// returns the reply (appended to out[:0]), or nil when the packet gets no
// reply. It is for tests and fuzzing and for callers with their own socket
// loop; it is safe for concurrent use, but slower than Serve's loops (it
// sets up its own state each call). The Backend call is bounded by
// BackendTimeout.
func (s *UDPServer) HandlePacket(ctx context.Context, pkt []byte, from netip.AddrPort, out []byte) []byte {
	w := s.newWorker()
	w.keys = s.ring.keys()
	ctx, cancel := context.WithTimeout(ctx, BackendTimeout)
	defer cancel()
	reply, _ := w.handle(ctx, out[:0], pkt, from, s.cfg.Now(), false)
	return reply
}

// udpWorker is the reusable state of one goroutine that answers packets.
type udpWorker struct {
	s    *UDPServer
	mac  connIDMAC
	keys *connIDKeys
	// inCall, if set, holds the stall epoch while the goroutine is in a
	// Backend call, 0 otherwise; the monitor adds takenMark to replace
	// the loop, and leaving the call then sets taken (see udploop.go).
	inCall *atomic.Uint64
	epoch  *atomic.Uint64
	taken  *atomic.Bool
	// req and hashes are handed to the Backend, which may not keep them
	// past the call; here they cost no allocation per packet.
	req    AnnounceRequest
	hashes [MaxScrapeHashes]InfoHash
}

func (s *UDPServer) newWorker() *udpWorker { return &udpWorker{s: s} }

// handle answers one packet from raw (the socket's source address) at
// now. It returns the reply appended to out (nil: no reply), or
// deferred=true, without a reply, for an announce that carries an event
// when canDefer is set: the caller hands it to a worker (its checks are
// done) that calls announce.
func (w *udpWorker) handle(ctx context.Context, out, pkt []byte, raw netip.AddrPort, now time.Time, canDefer bool) (reply []byte, deferred bool) {
	s := w.s
	from := netip.AddrPortFrom(raw.Addr().Unmap().WithZone(""), raw.Port())
	nowNS := now.UnixNano()
	if !from.IsValid() || from.Port() == 0 {
		s.drop(dropBadSource, from, nowNS)
		return nil, false
	}
	verdict := limitAllow
	limited := s.limit != nil && (s.cfg.LimitLoopback || !from.Addr().IsLoopback())
	if limited {
		switch verdict = s.limit.allow(from.Addr(), nowNS); verdict {
		case limitRate:
			s.drop(dropRateLimited, from, nowNS)
			return nil, false
		case limitBanned:
			s.drop(dropBanned, from, nowNS)
			return nil, false
		}
	}
	if len(pkt) < udpHeaderLen {
		s.drop(dropNotBEP15, from, nowNS)
		return nil, false
	}
	id := binary.BigEndian.Uint64(pkt[0:])
	action := binary.BigEndian.Uint32(pkt[8:])
	tx := binary.BigEndian.Uint32(pkt[12:])
	if action == UDPActionConnect {
		if id != UDPProtocolID {
			s.drop(dropNotBEP15, from, nowNS)
			return nil, false
		}
		s.stats.Connects.Add(1)
		out = binary.BigEndian.AppendUint32(out, UDPActionConnect)
		out = binary.BigEndian.AppendUint32(out, tx)
		out = binary.BigEndian.AppendUint64(out, w.mac.issue(w.keys, from, now))
		return out, false
	}
	if !w.mac.valid(w.keys, id, from, now) {
		s.drop(dropBadConnID, from, nowNS)
		if limited {
			if s.limit.strike(from.Addr(), nowNS) {
				s.cfg.Logger.Warn("tracker: udp source banned for bad connection ids", "source", from.Addr().String(), "for", s.cfg.BanFor.String(), "after", s.cfg.BanAfterBadIDs)
			}
		}
		return nil, false
	}
	if verdict == limitStrikes {
		s.limit.clear(from.Addr(), nowNS)
	}
	switch action {
	case UDPActionAnnounce:
		if canDefer && len(pkt) >= udpAnnounceLen && pkt[80]|pkt[81]|pkt[82] == 0 && pkt[83] != 0 && pkt[83] <= byte(EventStopped) {
			return nil, true
		}
		return w.announce(ctx, out, pkt, from, tx), false
	case UDPActionScrape:
		return w.scrape(ctx, out, pkt, tx), false
	default:
		return w.fail(out, tx, Refuse("unknown action "+strconv.FormatUint(uint64(action), 10)+"; this tracker speaks BEP 15 connect, announce and scrape")), false
	}
}

// enterCall and leaveCall mark a Backend call for the stall monitor.
func (w *udpWorker) enterCall() {
	if w.inCall != nil {
		w.inCall.Store(w.epoch.Load())
	}
}

func (w *udpWorker) leaveCall() {
	if w.inCall != nil && w.inCall.Swap(0)&takenMark != 0 {
		w.taken.Store(true)
	}
}

func (w *udpWorker) fail(out []byte, tx uint32, err error) []byte {
	reason, refusal := ReasonOf(err)
	w.s.stats.Failures.Add(1)
	if !refusal {
		w.s.stats.BackendErrors.Add(1)
		w.s.cfg.Logger.Error("tracker: backend failed", "err", err)
	}
	out = binary.BigEndian.AppendUint32(out, UDPActionError)
	out = binary.BigEndian.AppendUint32(out, tx)
	return append(out, reason...)
}

func (w *udpWorker) announce(ctx context.Context, out, pkt []byte, from netip.AddrPort, tx uint32) []byte {
	if len(pkt) < udpAnnounceLen {
		return w.fail(out, tx, Refuse("truncated announce: "+strconv.Itoa(len(pkt))+" bytes, BEP 15 needs 98"))
	}
	req := &w.req
	*req = AnnounceRequest{}
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
	urlData, ok := parseURLData(urlBuf[:0], pkt[udpAnnounceLen:])
	if !ok && w.s.cfg.Logger.Enabled(ctx, slog.LevelDebug) {
		w.s.cfg.Logger.Debug("tracker: malformed BEP 41 options ignored", "from", from)
	}
	if len(urlData) > 0 {
		// The URL's path and query, e.g. "/PASSKEY/announce". A path
		// that is not a tracker path carries no passkey.
		if ep, key, st := parseTrackerPath(urlData); ep == EndpointAnnounce {
			req.Passkey, req.PasskeyStatus = key, st
		}
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
	w.enterCall()
	reply, err := w.s.b.Announce(ctx, req)
	w.leaveCall()
	if err == nil && reply == nil {
		err = errors.New("backend returned neither a reply nor an error")
	}
	if err != nil {
		return w.fail(out, tx, err)
	}
	w.s.stats.Announces.Add(1)
	interval, _ := w.s.cfg.intervalSeconds()
	out = binary.BigEndian.AppendUint32(out, UDPActionAnnounce)
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
// carry only the announce URL's path (where a private tracker's passkey
// is). URL data beyond cap(dst) is dropped, so a datagram cannot make it
// allocate; a passkey path fits in far less.
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
			dst = append(dst, opts[i+2:i+2+min(n, cap(dst)-len(dst))]...)
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
	hashes := w.hashes[:len(body)/20]
	for i := range hashes {
		copy(hashes[i][:], body[20*i:])
	}
	w.enterCall()
	entries, err := w.s.b.Scrape(ctx, hashes)
	w.leaveCall()
	if err != nil {
		return w.fail(out, tx, err)
	}
	if len(entries) != len(hashes) {
		return w.fail(out, tx, errors.New("backend returned "+strconv.Itoa(len(entries))+" scrape entries for "+strconv.Itoa(len(hashes))+" hashes"))
	}
	w.s.stats.Scrapes.Add(1)
	out = binary.BigEndian.AppendUint32(out, UDPActionScrape)
	out = binary.BigEndian.AppendUint32(out, tx)
	for _, e := range entries {
		out = binary.BigEndian.AppendUint32(out, uint32(max(e.Complete, 0)))
		out = binary.BigEndian.AppendUint32(out, uint32(max(e.Downloaded, 0)))
		out = binary.BigEndian.AppendUint32(out, uint32(max(e.Incomplete, 0)))
	}
	return out
}
