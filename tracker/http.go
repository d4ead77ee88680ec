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
	// MaxConnsPerIP caps the connections from one source IP. Zero means
	// DefaultMaxConnsPerIP.
	MaxConnsPerIP int
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
// (BEP 3, 7, 23) and GET /scrape (BEP 48). Every other path is a 404 with
// a bencoded failure. Failures of a request are HTTP 200 with
// d14:failure reason…e, which is what clients show their user.
//
// ServeHTTP is safe for concurrent use; it calls the Backend with the
// request's context bounded by BackendTimeout.
type HTTPHandler struct {
	b     Backend
	cfg   Config
	stats Stats
	bufs  sync.Pool // *[]byte reply buffers
}

// NewHTTPHandler returns a handler answering from b. cfg is copied; its
// zero fields mean the defaults.
func NewHTTPHandler(b Backend, cfg HTTPConfig) *HTTPHandler {
	h := &HTTPHandler{b: b, cfg: cfg.Config.normalized()}
	h.bufs.New = func() any { b := make([]byte, 0, 2048); return &b }
	return h
}

// Stats returns the handler's live counters.
func (h *HTTPHandler) Stats() *Stats { return &h.stats }

var contentTypePlain = []string{"text/plain"}

// ServeHTTP answers one announce or scrape.
func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	bp := h.bufs.Get().(*[]byte)
	buf := (*bp)[:0]
	status := http.StatusOK
	switch {
	case r.URL.Path != "/announce" && r.URL.Path != "/scrape":
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
		if r.URL.Path == "/announce" {
			buf = h.announce(r.Context(), buf, r.URL.RawQuery, src)
		} else {
			buf = h.scrape(r.Context(), buf, r.URL.RawQuery)
		}
	}
	hdr := w.Header()
	hdr["Content-Type"] = contentTypePlain
	hdr["Content-Length"] = []string{strconv.Itoa(len(buf))}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(buf) // a write error means the client went away
	}
	if cap(buf) <= 64<<10 {
		*bp = buf
		h.bufs.Put(bp)
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

func (h *HTTPHandler) announce(ctx context.Context, buf []byte, rawQuery string, src netip.Addr) []byte {
	req, format, err := ParseAnnounce(rawQuery, src, &h.cfg)
	if err != nil {
		return h.fail(buf, err)
	}
	ctx, cancel := context.WithTimeout(ctx, BackendTimeout)
	defer cancel()
	reply, err := h.b.Announce(ctx, &req)
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

func (h *HTTPHandler) scrape(ctx context.Context, buf []byte, rawQuery string) []byte {
	var arr [8]InfoHash
	hashes, err := ParseScrape(rawQuery, arr[:0])
	if err != nil {
		return h.fail(buf, err)
	}
	// The files dictionary needs its keys sorted and unique.
	slices.SortFunc(hashes, func(a, b InfoHash) int { return compareHash(&a, &b) })
	hashes = slices.Compact(hashes)
	ctx, cancel := context.WithTimeout(ctx, BackendTimeout)
	defer cancel()
	entries, err := h.b.Scrape(ctx, hashes)
	if err != nil {
		return h.fail(buf, err)
	}
	if len(entries) != len(hashes) {
		return h.fail(buf, errors.New("backend returned "+strconv.Itoa(len(entries))+" scrape entries for "+strconv.Itoa(len(hashes))+" hashes"))
	}
	h.stats.Scrapes.Add(1)
	buf = append(buf, "d5:filesd"...)
	for i := range hashes {
		e := &entries[i]
		buf = append(buf, "20:"...)
		buf = append(buf, hashes[i][:]...)
		// Keys in ascending order: complete, downloaded, incomplete.
		buf = append(buf, "d8:complete"...)
		buf = AppendBencodeInt(buf, int64(e.Complete))
		buf = append(buf, "10:downloaded"...)
		buf = AppendBencodeInt(buf, int64(e.Downloaded))
		buf = append(buf, "10:incomplete"...)
		buf = AppendBencodeInt(buf, int64(e.Incomplete))
		buf = append(buf, 'e')
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
// source IP, so that a stranger opening connections cannot exhaust memory.
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
	return s.srv.Serve(&limitListener{
		Listener: ln,
		max:      s.cfg.MaxConns,
		perIP:    s.cfg.MaxConnsPerIP,
		byIP:     make(map[netip.Addr]int),
		dropped:  &s.h.stats,
	})
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
	max, perIP int
	dropped    *Stats

	mu    sync.Mutex
	total int
	byIP  map[netip.Addr]int
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
		if !l.acquire(ip) {
			c.Close()
			l.dropped.Dropped.Add(1)
			continue
		}
		return &limitConn{Conn: c, l: l, ip: ip}, nil
	}
}

func (l *limitListener) acquire(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max || l.byIP[ip] >= l.perIP {
		return false
	}
	l.total++
	l.byIP[ip]++
	return true
}

func (l *limitListener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.byIP[ip] - 1; n > 0 {
		l.byIP[ip] = n
	} else {
		delete(l.byIP, ip)
	}
}

type limitConn struct {
	net.Conn
	l    *limitListener
	ip   netip.Addr
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}
