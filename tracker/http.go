package tracker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"
)

// HTTPConfig configures the HTTP front-end. The zero value is usable.
type HTTPConfig struct {
	Config
	// MaxConns caps the TCP connections an HTTPServer holds at once; a
	// connection beyond it is closed as soon as it is accepted (and counted
	// in Stats.Dropped). Zero means DefaultMaxConns.
	MaxConns int
	// MaxConnsPerIP caps the connections from one source IP (an IPv4
	// address or one IPv6 address). Zero means DefaultMaxConnsPerIP.
	MaxConnsPerIP int
	// MaxConnsPer64 caps the connections from one IPv6 /64 (one
	// subscriber's LAN, whose owner can use any of its 2⁶⁴ addresses).
	// Zero means 2 × MaxConnsPerIP.
	MaxConnsPer64 int
	// MaxConnsPer48 caps the connections from one IPv6 /48 (one site).
	// Zero means 8 × MaxConnsPerIP.
	MaxConnsPer48 int
	// FullScrapeMax is the most torrents a full scrape (/scrape without
	// info_hash) lists; a tracker holding more refuses it. Zero means
	// DefaultFullScrapeMax.
	FullScrapeMax int
}

// Limits of HTTPServer. A connection costs about 10 KiB while it waits for
// a request (a goroutine stack plus 4 KiB read and write buffers), and up
// to about 25 KiB while a request with the largest header allowed
// (MaxHeaderBytes plus net/http's 4 KiB of slack) is read. So the defaults
// bound the front-end's connection memory to about 4096 × 25 KiB ≈ 100 MiB,
// and one source IP (which could be a NAT with many users) to 64 × 25 KiB
// ≈ 1.6 MiB.
const (
	DefaultMaxConns      = 4096
	DefaultMaxConnsPerIP = 64
	// MaxHeaderBytes caps a request's line plus headers; a scrape of
	// MaxScrapeHashes fully escaped hashes is about 4.5 KiB.
	MaxHeaderBytes = 8 << 10
	// ReadHeaderTimeout bounds a slow client sending its request.
	ReadHeaderTimeout = 5 * time.Second
	// WriteTimeout bounds a whole request, the backend call included.
	WriteTimeout = 15 * time.Second
	// IdleTimeout closes a kept-alive connection with no new request.
	IdleTimeout = 30 * time.Second
	// BackendTimeout bounds one Backend call; past it the client gets
	// the generic failure reason (and retries at its own pace).
	BackendTimeout = 10 * time.Second
)

// HTTPHandler serves BitTorrent HTTP announces and scrapes: GET /announce
// (BEP 3, 7, 23) and GET /scrape (BEP 48), plus full scrape and the stats
// pages /stats and /stats.json if its Backend is a StatsBackend (see
// fullscrape.go and stats.go). Every other path is a 404 with
// a bencoded failure. Failures of a request are HTTP 200 with
// d14:failure reason…e, which is what clients show their user.
//
// ServeHTTP is safe for concurrent use; each Backend call ends within
// BackendTimeout (a context shared by the calls of the same quarter
// second, not the request's: a client that hangs up does not undo a
// change it started). Per announce, the handler itself allocates
// nothing: the query is parsed in place and the reply is encoded into a
// pooled buffer.
type HTTPHandler struct {
	b     Backend
	cfg   Config
	stats Stats
	dl    *deadlines
	state sync.Pool // *httpState

	statsPage  *statsPage  // /stats and /stats.json (stats.go)
	fullScrape *fullScrape // /scrape without info_hash (fullscrape.go)
}

// httpState is one request's reusable memory.
type httpState struct {
	buf    []byte
	req    AnnounceRequest
	hashes [8]InfoHash
	clen   [1]string
}

// NewHTTPHandler returns a handler answering from b. cfg is copied; its
// zero fields mean the defaults.
func NewHTTPHandler(b Backend, cfg HTTPConfig) *HTTPHandler {
	h := &HTTPHandler{b: b, cfg: cfg.Config.normalized(), dl: newDeadlines(context.Background()),
		statsPage: newStatsPage(), fullScrape: newFullScrape(cfg.FullScrapeMax)}
	h.state.New = func() any { return &httpState{buf: make([]byte, 0, 2048)} }
	return h
}

// Stats returns the handler's live counters.
func (h *HTTPHandler) Stats() *Stats { return &h.stats }

var contentTypePlain = []string{"text/plain"}

// ServeHTTP answers one announce or scrape.
func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.serveExtra(w, r) {
		return
	}
	st := h.state.Get().(*httpState)
	buf := st.buf[:0]
	status := http.StatusOK
	ep, key, keyStatus := ParseTrackerPath(r.URL.Path)
	switch {
	case ep == EndpointUnknown:
		status = http.StatusNotFound
		buf = AppendBencodeFailure(buf, "no such path: this tracker serves /announce and /scrape")
		h.stats.Failures.Add(1)
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		status = http.StatusMethodNotAllowed
		buf = AppendBencodeFailure(buf, "use GET for announce and scrape")
		h.stats.Failures.Add(1)
	default:
		src, ok := sourceIP(r.RemoteAddr)
		if !ok {
			buf = AppendBencodeFailure(buf, "the tracker cannot tell the request's source address")
			h.stats.Failures.Add(1)
			h.cfg.Logger.Warn("tracker: unparsable remote address", "remote", r.RemoteAddr)
			break
		}
		ctx := h.dl.get(time.Now().UnixNano())
		if ep == EndpointAnnounce {
			buf = h.announce(ctx, st, buf, r.URL.RawQuery, src, key, keyStatus)
		} else {
			buf = h.scrape(ctx, st, buf, r.URL.RawQuery, key, keyStatus)
		}
	}
	hdr := w.Header()
	hdr["Content-Type"] = contentTypePlain
	// net/http sets Content-Length itself, without allocating, for a body
	// written whole before the handler returns that fits its 2 KiB
	// buffer; a longer one (or a HEAD, which writes none) gets it here.
	if len(buf) >= 2048 || r.Method == http.MethodHead {
		st.clen[0] = strconv.Itoa(len(buf))
		hdr["Content-Length"] = st.clen[:]
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(buf) // a write error means the client went away
	}
	if cap(buf) <= 64<<10 {
		st.buf = buf
		st.req = AnnounceRequest{}
		h.state.Put(st)
	}
}

// sourceIP is the IP of an http.Request.RemoteAddr, IPv4-mapped IPv6
// unmapped and any zone dropped.
func sourceIP(remote string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap().WithZone(""), true
}

func (h *HTTPHandler) fail(buf []byte, err error) []byte {
	reason, refusal := ReasonOf(err)
	h.stats.Failures.Add(1)
	if !refusal {
		h.stats.BackendErrors.Add(1)
		h.cfg.Logger.Error("tracker: backend failed", "err", err)
	}
	return AppendBencodeFailure(buf, reason)
}

func (h *HTTPHandler) announce(ctx context.Context, st *httpState, buf []byte, rawQuery string, src netip.Addr, key Passkey, keyStatus PasskeyStatus) []byte {
	var format ReplyFormat
	var err error
	st.req, format, err = ParseAnnounce(rawQuery, src, &h.cfg)
	if err != nil {
		return h.fail(buf, err)
	}
	req := &st.req
	req.Passkey, req.PasskeyStatus = key, keyStatus
	reply, err := h.b.Announce(ctx, req)
	if err == nil && reply == nil {
		err = errors.New("backend returned neither a reply nor an error")
	}
	if err != nil {
		return h.fail(buf, err)
	}
	h.stats.Announces.Add(1)
	interval, minInterval := h.cfg.intervalSeconds()
	return appendAnnounceReply(buf, reply, format, interval, minInterval, req.NumWant)
}

// appendAnnounceReply encodes an announce reply. At most numWant peers
// are written, whatever the backend returned.
func appendAnnounceReply(buf []byte, reply *AnnounceReply, format ReplyFormat, interval, minInterval int64, numWant int) []byte {
	peers := reply.Peers
	if len(peers) > numWant {
		peers = peers[:numWant]
	}
	// Keys in ascending order: complete, incomplete, interval,
	// min interval, peers, peers6.
	buf = append(buf, "d8:complete"...)
	buf = AppendBencodeInt(buf, int64(reply.Complete))
	buf = append(buf, "10:incomplete"...)
	buf = AppendBencodeInt(buf, int64(reply.Incomplete))
	buf = append(buf, "8:interval"...)
	buf = AppendBencodeInt(buf, interval)
	buf = append(buf, "12:min interval"...)
	buf = AppendBencodeInt(buf, minInterval)
	buf = append(buf, "5:peers"...)
	if !format.Compact {
		buf = append(buf, 'l')
		for _, p := range peers {
			// Keys in ascending order: ip, peer id, port.
			buf = append(buf, "d2:ip"...)
			var ipb [48]byte
			buf = AppendBencodeBytes(buf, p.Addr.Addr().Unmap().AppendTo(ipb[:0]))
			if !format.NoPeerID {
				buf = append(buf, "7:peer id20:"...)
				buf = append(buf, p.ID[:]...)
			}
			buf = append(buf, "4:port"...)
			buf = AppendBencodeInt(buf, int64(p.Addr.Port()))
			buf = append(buf, 'e')
		}
		return append(buf, "ee"...)
	}
	n4, n6 := 0, 0
	for _, p := range peers {
		if p.Addr.Addr().Unmap().Is4() {
			n4++
		} else {
			n6++
		}
	}
	buf = strconv.AppendInt(buf, int64(6*n4), 10)
	buf = append(buf, ':')
	for _, p := range peers {
		if a := p.Addr.Addr().Unmap(); a.Is4() {
			buf = appendCompactPeer(buf, a, p.Addr.Port())
		}
	}
	if n6 > 0 {
		buf = append(buf, "6:peers6"...)
		buf = strconv.AppendInt(buf, int64(18*n6), 10)
		buf = append(buf, ':')
		for _, p := range peers {
			if a := p.Addr.Addr().Unmap(); !a.Is4() {
				buf = appendCompactPeer(buf, a, p.Addr.Port())
			}
		}
	}
	return append(buf, 'e')
}

// appendCompactPeer appends a's 4 or 16 bytes and the port, big-endian.
func appendCompactPeer(buf []byte, a netip.Addr, port uint16) []byte {
	if a.Is4() {
		b := a.As4()
		buf = append(buf, b[:]...)
	} else {
		b := a.As16()
		buf = append(buf, b[:]...)
	}
	return append(buf, byte(port>>8), byte(port))
}

func (h *HTTPHandler) scrape(ctx context.Context, st *httpState, buf []byte, rawQuery string, key Passkey, keyStatus PasskeyStatus) []byte {
	hashes, err := ParseScrape(rawQuery, st.hashes[:0])
	if err != nil {
		return h.fail(buf, err)
	}
	// The files dictionary needs its keys sorted and unique.
	slices.SortFunc(hashes, func(a, b InfoHash) int { return compareHash(&a, &b) })
	hashes = slices.Compact(hashes)
	var entries []ScrapeEntry
	if ks, ok := h.b.(KeyedScraper); ok {
		entries, err = ks.ScrapeKeyed(ctx, hashes, key, keyStatus)
	} else {
		entries, err = h.b.Scrape(ctx, hashes)
	}
	if err != nil {
		return h.fail(buf, err)
	}
	if len(entries) != len(hashes) {
		return h.fail(buf, errors.New("backend returned "+strconv.Itoa(len(entries))+" scrape entries for "+strconv.Itoa(len(hashes))+" hashes"))
	}
	h.stats.Scrapes.Add(1)
	buf = append(buf, "d5:filesd"...)
	for i := range hashes {
		buf = appendScrapeFile(buf, &hashes[i], &entries[i])
	}
	return append(buf, "ee"...)
}

func compareHash(a, b *InfoHash) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// HTTPServer is an http.Server around an HTTPHandler with the limits
// above: timeouts, MaxHeaderBytes, and caps on connections in all and per
// source, so that a stranger opening connections cannot exhaust memory.
// The per-source caps are hierarchical for IPv6: a connection counts
// against its address, its /64 and its /48, and is refused if any of them
// is full, so one subscriber cannot fill the global cap by rotating
// through the addresses of its prefix. Keep-alive is on (IdleTimeout), so
// a client announcing many torrents reuses one connection.
type HTTPServer struct {
	h   *HTTPHandler
	srv *http.Server
	cfg HTTPConfig
}

// NewHTTPServer returns a server answering from b; start it with Serve or
// ListenAndServe. cfg is copied; zero fields mean the defaults.
func NewHTTPServer(b Backend, cfg HTTPConfig) *HTTPServer {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerIP <= 0 {
		cfg.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	cfg.MaxConnsPerIP = min(cfg.MaxConnsPerIP, cfg.MaxConns)
	if cfg.MaxConnsPer64 <= 0 {
		cfg.MaxConnsPer64 = 2 * cfg.MaxConnsPerIP
	}
	if cfg.MaxConnsPer48 <= 0 {
		cfg.MaxConnsPer48 = 8 * cfg.MaxConnsPerIP
	}
	cfg.MaxConnsPer64 = min(max(cfg.MaxConnsPer64, cfg.MaxConnsPerIP), cfg.MaxConns)
	cfg.MaxConnsPer48 = min(max(cfg.MaxConnsPer48, cfg.MaxConnsPer64), cfg.MaxConns)
	h := NewHTTPHandler(b, cfg)
	s := &HTTPServer{h: h, cfg: cfg}
	s.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadHeaderTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(h.cfg.Logger.Handler(), slog.LevelDebug),
	}
	return s
}

// Stats returns the server's live counters.
func (s *HTTPServer) Stats() *Stats { return s.h.Stats() }

// Serve accepts connections on ln until Shutdown, which makes it return
// http.ErrServerClosed; any other accept error is returned as is. ln is
// closed when Serve returns.
func (s *HTTPServer) Serve(ln net.Listener) error {
	return s.srv.Serve(newLimitListener(ln, s.cfg, &s.h.stats))
}

// ListenAndServe listens on TCP addr and calls Serve.
func (s *HTTPServer) ListenAndServe(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Shutdown stops accepting, closes idle connections, and waits for
// requests in flight until ctx ends (then returns ctx's error). Safe to
// call more than once.
func (s *HTTPServer) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// limitListener closes connections beyond its caps as soon as they are
// accepted: cheaper than holding them, and the client retries later.
type limitListener struct {
	net.Listener
	max     int
	caps    [3]int // per address, per /64, per /48
	dropped *Stats

	mu    sync.Mutex
	total int
	by    map[sourcePrefix]int
}

// sourcePrefix is an address masked to a prefix: an IPv4 address (bits
// 32), or an IPv6 /128, /64 or /48.
type sourcePrefix struct {
	addr [16]byte
	bits uint8
}

func newLimitListener(ln net.Listener, cfg HTTPConfig, st *Stats) *limitListener {
	return &limitListener{
		Listener: ln,
		max:      cfg.MaxConns,
		caps:     [3]int{cfg.MaxConnsPerIP, cfg.MaxConnsPer64, cfg.MaxConnsPer48},
		dropped:  st,
		by:       make(map[sourcePrefix]int),
	}
}

// sourcePrefixes returns the prefixes ip counts against: one for IPv4,
// three for IPv6.
func sourcePrefixes(ip netip.Addr) (p [3]sourcePrefix, n int) {
	ip = ip.Unmap()
	if !ip.Is6() {
		p[0] = sourcePrefix{addr: ip.As16(), bits: 32}
		return p, 1
	}
	a := ip.As16()
	p[0] = sourcePrefix{addr: a, bits: 128}
	clear(a[8:])
	p[1] = sourcePrefix{addr: a, bits: 64}
	clear(a[6:])
	p[2] = sourcePrefix{addr: a, bits: 48}
	return p, 3
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var ip netip.Addr
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			ip = ta.AddrPort().Addr().Unmap()
		}
		lc := &limitConn{Conn: c, l: l}
		lc.keys, lc.n = sourcePrefixes(ip)
		if !l.acquire(lc.keys[:lc.n]) {
			c.Close()
			l.dropped.Dropped.Add(1)
			continue
		}
		return lc, nil
	}
}

// acquire counts a connection against every prefix in keys if none of
// them (nor the total) is full. Check and count happen under one lock,
// so the caps hold exactly however many connections arrive at once.
func (l *limitListener) acquire(keys []sourcePrefix) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max {
		return false
	}
	for i, k := range keys {
		if l.by[k] >= l.caps[i] {
			return false
		}
	}
	l.total++
	for _, k := range keys {
		l.by[k]++
	}
	return true
}

func (l *limitListener) release(keys []sourcePrefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	for _, k := range keys {
		if n := l.by[k] - 1; n > 0 {
			l.by[k] = n
		} else {
			delete(l.by, k)
		}
	}
}

type limitConn struct {
	net.Conn
	l    *limitListener
	keys [3]sourcePrefix
	n    int
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.keys[:c.n]) })
	return err
}
