// Package httplimit bounds an HTTP port that faces strangers: the status,
// metrics and dashboard port of a master and the status port of a peer.
//
// Three things are bounded, each by a field of Limits:
//
//   - how long a connection may sit idle, or dribble a request or read a
//     reply (the http.Server timeouts, set by NewServer);
//   - how many connections are open at once, in all and from one source
//     (Listener, which closes a connection over either cap as soon as it
//     is accepted, so a flood never queues ahead of an operator);
//   - how many long-lived streams (server-sent events) are open at once,
//     in all and from one source (Share).
//
// A source is an IPv4 address or an IPv6 /64 (one host usually holds a
// whole /64, so counting /128s would give it millions of shares).
//
// The package imports only the standard library, so both master and peer
// use it.
package httplimit

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"fileshare/internal/defaults"
)

// Limits bounds one HTTP port. A zero field means its default
// (DefaultLimits); a negative duration or count is refused by Check.
type Limits struct {
	// MaxConns is the most connections open at once (default 256).
	MaxConns int
	// MaxConnsPerSource is the most connections open at once from one
	// source (default 32), so one client cannot take every connection.
	MaxConnsPerSource int
	// MaxStreams is the most event streams open at once (default 32).
	MaxStreams int
	// MaxStreamsPerSource is the most event streams open at once from one
	// source (default 4), so one client cannot lock operators out.
	MaxStreamsPerSource int
	// ReadHeaderTimeout bounds reading a request's headers (default 5 s).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request (default 10 s).
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a reply, from the end of the request's
	// headers (default 60 s, above a 30 s CPU profile). An event stream
	// extends its own deadline before each write instead.
	WriteTimeout time.Duration
	// IdleTimeout is how long a kept-alive connection may wait for its
	// next request before it is closed (default 30 s).
	IdleTimeout time.Duration
}

// DefaultLimits returns every limit's default.
func DefaultLimits() Limits {
	return Limits{
		MaxConns:            256,
		MaxConnsPerSource:   32,
		MaxStreams:          32,
		MaxStreamsPerSource: 4,
		ReadHeaderTimeout:   5 * time.Second,
		ReadTimeout:         10 * time.Second,
		WriteTimeout:        60 * time.Second,
		IdleTimeout:         30 * time.Second,
	}
}

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	defaults.Fill(&l.MaxConns, d.MaxConns)
	defaults.Fill(&l.MaxConnsPerSource, d.MaxConnsPerSource)
	defaults.Fill(&l.MaxStreams, d.MaxStreams)
	defaults.Fill(&l.MaxStreamsPerSource, d.MaxStreamsPerSource)
	defaults.Fill(&l.ReadHeaderTimeout, d.ReadHeaderTimeout)
	defaults.Fill(&l.ReadTimeout, d.ReadTimeout)
	defaults.Fill(&l.WriteTimeout, d.WriteTimeout)
	defaults.Fill(&l.IdleTimeout, d.IdleTimeout)
	return l
}

// Check refuses negative fields, naming the field (prefix is the name of
// the Limits field in the caller's config, e.g. "HTTPLimits").
func (l Limits) Check(prefix string) error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxConns", int64(l.MaxConns)}, {"MaxConnsPerSource", int64(l.MaxConnsPerSource)},
		{"MaxStreams", int64(l.MaxStreams)}, {"MaxStreamsPerSource", int64(l.MaxStreamsPerSource)},
		{"ReadHeaderTimeout", int64(l.ReadHeaderTimeout)}, {"ReadTimeout", int64(l.ReadTimeout)},
		{"WriteTimeout", int64(l.WriteTimeout)}, {"IdleTimeout", int64(l.IdleTimeout)},
	} {
		if f.v < 0 {
			return fmt.Errorf("%s.%s is negative; use 0 for the default", prefix, f.name)
		}
	}
	return nil
}

// NewServer returns an http.Server for h with every timeout of l (zero
// fields take their defaults). Serve it on a Listener.
func NewServer(h http.Handler, l Limits) *http.Server {
	l = l.WithDefaults()
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
	}
}

// Source returns the key a remote address is counted under: its IPv4
// address, or its IPv6 /64. An address that does not parse counts as
// itself.
func Source(addr net.Addr) string {
	return SourceOf(addr.String())
}

// SourceOf is Source for a "host:port" string, such as
// http.Request.RemoteAddr.
func SourceOf(hostport string) string {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return hostport
	}
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.Prefix(64)
	return p.String()
}

// counter counts holders in all and per source, under caps.
type counter struct {
	max, perSource int
	mu             sync.Mutex
	total          int
	bySource       map[string]int
}

func (c *counter) acquire(src string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.total >= c.max {
		return ErrFull
	}
	if c.bySource[src] >= c.perSource {
		return ErrSourceShare
	}
	c.total++
	c.bySource[src]++
	return nil
}

func (c *counter) release(src string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.bySource[src]--; c.bySource[src] <= 0 {
		delete(c.bySource, src)
	}
}

var (
	// ErrFull means the cap over all sources is reached.
	ErrFull = errors.New("every slot is taken")
	// ErrSourceShare means this source already holds its share.
	ErrSourceShare = errors.New("this client already holds its share")
)

// Listener wraps a net.Listener with Limits.MaxConns and
// Limits.MaxConnsPerSource: a connection over either cap is closed as
// soon as it is accepted, and a connection's slot is freed when it is
// closed.
type Listener struct {
	net.Listener
	c        counter
	rejected atomic.Uint64
}

// NewListener wraps ln (zero fields of l take their defaults).
func NewListener(ln net.Listener, l Limits) *Listener {
	l = l.WithDefaults()
	return &Listener{Listener: ln, c: counter{max: l.MaxConns, perSource: l.MaxConnsPerSource, bySource: map[string]int{}}}
}

// Accept returns the next connection within the caps; connections over a
// cap are closed and counted in Rejected.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := Source(c.RemoteAddr())
		if l.c.acquire(src) != nil {
			l.rejected.Add(1)
			_ = c.Close()
			continue
		}
		return &conn{Conn: c, l: l, src: src}, nil
	}
}

// Open is the number of connections open now.
func (l *Listener) Open() int {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	return l.c.total
}

// Rejected is the number of connections closed for being over a cap.
func (l *Listener) Rejected() uint64 { return l.rejected.Load() }

type conn struct {
	net.Conn
	l    *Listener
	src  string
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.c.release(c.src) })
	return err
}

// Share bounds long-lived streams (Limits.MaxStreams,
// Limits.MaxStreamsPerSource). Safe for concurrent use.
type Share struct{ c counter }

// NewShare returns a Share with l's stream caps (zero fields take their
// defaults).
func NewShare(l Limits) *Share {
	l = l.WithDefaults()
	return &Share{c: counter{max: l.MaxStreams, perSource: l.MaxStreamsPerSource, bySource: map[string]int{}}}
}

// Acquire takes a stream slot for the client at remoteAddr (host:port)
// and returns the function that frees it, or ErrFull or ErrSourceShare.
func (s *Share) Acquire(remoteAddr string) (release func(), err error) {
	src := SourceOf(remoteAddr)
	if err := s.c.acquire(src); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { s.c.release(src) }) }, nil
}
