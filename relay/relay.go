// Package relay is FileShare's circuit relay: the last resort for two
// peers that can reach neither each other nor punch through their NATs
// (both behind port-randomising NATs). Each peer dials the relay, names
// the same random circuit token (agreed through the masters' rendezvous),
// and the relay splices the two connections, byte for byte, within
// limits on duration and bytes per circuit and on circuits at once, as
// libp2p's circuit relay v2 does.
//
// The relay never sees plaintext: the two peers run their own TLS 1.3
// session over the circuit (the holder proves its peer key, the
// downloader checks it against the index and proves its own), so the
// relay carries only records it cannot read or alter undetected. It sees
// who talks to whom (the two connections' addresses and keys), when, and
// how much.
//
// A relay runs on a peer that opts in (peer.Config.Relay) or on a master
// with a budget (master.Config.RelayBudget); both serve the stream kind
// transport.StreamRelay on their one listener.
//
// # Wire format
//
// After the stream kind, inside the relay's own TLS, a peer sends a
// request of RequestLen bytes:
//
//	version  1 byte   Version (1)
//	role     1 byte   RoleDialer (1, the downloader) or RoleListener (2, the holder)
//	token    16 bytes the circuit token
//
// The relay answers one status byte: StatusOK once the other side has
// arrived and bytes flow, or StatusRefused / StatusTimeout, and closes.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"fileshare/internal/connset"
)

// Wire constants; see the package doc.
const (
	Version    = 1
	RequestLen = 2 + TokenLen
	TokenLen   = 16

	RoleDialer   byte = 1
	RoleListener byte = 2

	StatusOK      byte = 0
	StatusRefused byte = 1
	StatusTimeout byte = 2
)

// Defaults of Limits.
const (
	DefaultMaxCircuits = 16
	DefaultMaxBytes    = 256 << 20
	DefaultMaxDuration = 10 * time.Minute
	DefaultPairTimeout = 10 * time.Second
)

// Limits bound what a relay carries. A zero field means its default.
type Limits struct {
	// MaxCircuits caps the circuits open at once (a circuit waiting for
	// its second side counts). Default DefaultMaxCircuits.
	MaxCircuits int
	// MaxBytes caps the bytes a circuit carries, both directions
	// together; past it the circuit is closed. Default 256 MiB.
	MaxBytes int64
	// MaxDuration caps a circuit's life. Default 10 min.
	MaxDuration time.Duration
	// PairTimeout is how long the first side waits for the second.
	// Default 10 s.
	PairTimeout time.Duration
	// Rate caps the bytes per second the relay carries, all circuits
	// and both directions together. Zero means no cap.
	Rate int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxCircuits <= 0 {
		l.MaxCircuits = DefaultMaxCircuits
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxDuration <= 0 {
		l.MaxDuration = DefaultMaxDuration
	}
	if l.PairTimeout <= 0 {
		l.PairTimeout = DefaultPairTimeout
	}
	return l
}

// ErrBadRequest wraps every request decoding error.
var ErrBadRequest = errors.New("malformed relay request")

// Request is one side's relay request.
type Request struct {
	Role  byte
	Token [TokenLen]byte
}

// Append appends the request's encoding to b.
func (r Request) Append(b []byte) []byte {
	b = append(b, Version, r.Role)
	return append(b, r.Token[:]...)
}

// ParseRequest decodes a request of exactly RequestLen bytes.
func ParseRequest(b []byte) (Request, error) {
	var r Request
	if len(b) != RequestLen {
		return r, fmt.Errorf("%w: %d bytes, want %d", ErrBadRequest, len(b), RequestLen)
	}
	if b[0] != Version {
		return r, fmt.Errorf("%w: version %d", ErrBadRequest, b[0])
	}
	if b[1] != RoleDialer && b[1] != RoleListener {
		return r, fmt.Errorf("%w: role %d", ErrBadRequest, b[1])
	}
	r.Role = b[1]
	copy(r.Token[:], b[2:])
	return r, nil
}

// Server relays circuits. Create it with NewServer, feed it connections
// with Serve, stop it with Close.
type Server struct {
	lim Limits
	log *slog.Logger

	mu      sync.Mutex
	open    int                      // circuits open or waiting
	waiting map[[TokenLen]byte]*half // first sides, by token
	closed  bool
	quit    chan struct{} // closed by Close
	wg      sync.WaitGroup
	conns   connset.Set // every connection held, for Close

	bucket *bucket // nil without Limits.Rate

	// Counters, for metrics and tests.
	Circuits atomic.Uint64 // circuits that carried bytes
	Bytes    atomic.Uint64 // bytes relayed, both directions
	Refused  atomic.Uint64 // requests refused (limits, bad requests)
	// Tap, if set before Serve, sees every chunk relayed (tests use it to
	// prove the relay never holds plaintext). Called from the splicing
	// goroutines.
	Tap func([]byte)
}

type half struct {
	role byte
	conn net.Conn
	peer chan net.Conn // cap 1: the other side
	done chan struct{} // closed when the circuit ends
	once sync.Once
}

func (h *half) finish() { h.once.Do(func() { close(h.done) }) }

// NewServer returns a relay with limits lim.
func NewServer(lim Limits, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var b *bucket
	if lim.Rate > 0 {
		b = &bucket{rate: float64(lim.Rate), tokens: float64(lim.Rate) / 10, last: time.Now()}
	}
	return &Server{lim: lim.withDefaults(), log: log, bucket: b, waiting: map[[TokenLen]byte]*half{}, quit: make(chan struct{})}
}

// Serve accepts relay streams from ln until it closes. It blocks.
func (s *Server) Serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if !s.conns.Add(c) {
			c.Close()
			return
		}
		s.wg.Go(func() { s.handle(c) })
	}
}

// drop lets connection c go, closing it.
func (s *Server) drop(c net.Conn) {
	s.conns.Remove(c)
	c.Close()
}

func refuse(c net.Conn, status byte) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write([]byte{status})
}

// handle reads one side's request and pairs it with the other.
func (s *Server) handle(c net.Conn) {
	defer s.drop(c)
	_ = c.SetReadDeadline(time.Now().Add(s.lim.PairTimeout))
	var b [RequestLen]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		s.Refused.Add(1)
		return
	}
	req, err := ParseRequest(b[:])
	if err != nil {
		s.Refused.Add(1)
		refuse(c, StatusRefused)
		return
	}
	s.mu.Lock()
	first := s.waiting[req.Token]
	switch {
	case first != nil && first.role != req.Role:
		delete(s.waiting, req.Token)
		s.mu.Unlock()
		first.peer <- c
		// The first side's goroutine splices; this one keeps c held
		// until the circuit ends.
		<-first.done
		return
	case first != nil || s.open >= s.lim.MaxCircuits:
		s.mu.Unlock()
		s.Refused.Add(1)
		refuse(c, StatusRefused)
		return
	}
	h := &half{role: req.Role, conn: c, peer: make(chan net.Conn, 1), done: make(chan struct{})}
	s.waiting[req.Token] = h
	s.open++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.open--
		if s.waiting[req.Token] == h {
			delete(s.waiting, req.Token)
		}
		s.mu.Unlock()
	}()
	var other net.Conn
	select {
	case other = <-h.peer:
	case <-time.After(s.lim.PairTimeout):
		refuse(c, StatusTimeout)
		h.finish()
		return
	case <-s.quit:
		h.finish()
		return
	}
	defer h.finish()
	_ = c.SetReadDeadline(time.Time{})
	for _, x := range []net.Conn{c, other} {
		_ = x.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := x.Write([]byte{StatusOK}); err != nil {
			other.Close()
			return
		}
		_ = x.SetWriteDeadline(time.Time{})
	}
	s.Circuits.Add(1)
	s.splice(c, other)
}

// splice copies both ways until either side closes, the circuit's bytes
// or duration run out, and then closes both.
func (s *Server) splice(a, b net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), s.lim.MaxDuration)
	defer cancel()
	var budget atomic.Int64
	budget.Store(s.lim.MaxBytes)
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		defer cancel()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if budget.Add(-int64(n)) < 0 {
					return
				}
				if !s.bucket.take(ctx, n) {
					return
				}
				if s.Tap != nil {
					s.Tap(buf[:n])
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
				s.Bytes.Add(uint64(n))
			}
			if err != nil {
				return
			}
		}
	}
	wg.Add(2)
	go pipe(a, b)
	go pipe(b, a)
	<-ctx.Done()
	a.Close()
	b.Close()
	wg.Wait()
}

// Close closes every connection the relay holds and waits for its
// goroutines. Serve returns when its listener closes (the caller's).
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		close(s.quit)
	}
	s.closed = true
	s.mu.Unlock()
	s.conns.Close()
	s.wg.Wait()
}

// Join sends req on conn (a relay stream, just dialled) and waits, at most
// until ctx ends, for the relay to pair it. On success conn carries the
// circuit.
func Join(ctx context.Context, conn net.Conn, req Request) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write(req.Append(nil)); err != nil {
		return err
	}
	var st [1]byte
	if _, err := io.ReadFull(conn, st[:]); err != nil {
		return fmt.Errorf("relay closed the circuit before the other side arrived: %w", err)
	}
	switch st[0] {
	case StatusOK:
		return nil
	case StatusTimeout:
		return errors.New("the other side never reached the relay")
	default:
		return errors.New("the relay refused the circuit (full, or the token is in use)")
	}
}

// bucket is a token bucket shared by every circuit of a relay: a burst of
// a tenth of a second, then rate bytes per second.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	tokens float64
	last   time.Time
}

// take waits until n bytes may pass, or ctx ends (false). A nil bucket
// lets everything pass.
func (b *bucket) take(ctx context.Context, n int) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	now := time.Now()
	b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*b.rate, b.rate/10)
	b.last = now
	b.tokens -= float64(n)
	wait := time.Duration(-b.tokens / b.rate * float64(time.Second))
	b.mu.Unlock()
	if wait <= 0 {
		return true
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(wait):
		return true
	}
}
