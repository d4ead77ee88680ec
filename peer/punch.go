package peer

// This file owns hole punching: the peer's UDP socket and QUIC transport
// (quicState), learning the socket's public mapping from a master
// (client.AppendBindingRequest), and the simultaneous open the masters
// coordinate (dialPunched on the downloader, servePunched on the holder).
//
// Both sides learn each other's observed UDP address through the
// rendezvous (the downloader's in the message, the holder's in the
// Connect reply) and, at the agreed moment, send towards it: each
// datagram out opens the sender's NAT for answers from that address, so
// once both have sent, the downloader's QUIC handshake gets through. This
// works when each NAT maps the socket to the same public port for every
// destination (endpoint-independent mapping: Linux MASQUERADE without
// --random-fully, most home routers); with port-randomising NATs on both
// sides the addresses learnt from the masters are wrong for the peer, the
// handshake times out, and the download falls back to a relay.
//
// QUIC runs TLS 1.3 with the same keys as the TCP piece streams: the
// holder presents its peer key and requires the downloader's; the
// downloader checks the holder's key against the peer ID the index lists,
// and the holder accepts only a downloader that asked for this punch
// through the masters. One bidirectional stream per connection carries the
// piece protocol unchanged.
//
// The transport's goroutines (non-QUIC packet reader, accept loop, one
// per punched connection served) run in Peer.wg and stop when Peer.ctx
// ends; release closes the transport.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"fileshare/client"
)

// pieceALPN names the piece protocol inside QUIC.
const pieceALPN = "fileshare-piece/1"

// Timing of a punch.
const (
	punchLead      = 300 * time.Millisecond // from the request to the agreed moment
	punchMaxAhead  = 5 * time.Second        // an agreed moment further off is taken as now
	punchPackets   = 10                     // datagrams each side sends towards the other
	punchSpacing   = 100 * time.Millisecond
	punchTimeout   = 5 * time.Second  // for the QUIC handshake after the moment
	punchAllowFor  = 15 * time.Second // how long a holder accepts the asker's handshake
	bindingTimeout = 700 * time.Millisecond
)

// punchPacket is what each side sends to open its NAT: the first byte is
// below 0x40, so the far side's QUIC stack hands it over as non-QUIC, and
// the reader drops it.
var punchPacket = []byte{0x03, 'F', 'S', 'P'}

// quicState is the peer's UDP socket and QUIC transport.
type quicState struct {
	udp      *net.UDPConn
	tr       *quic.Transport
	observed atomic.Pointer[string] // the socket's mapping as a master saw it

	mu      sync.Mutex
	allowed map[string]time.Time             // peer ID -> until when it may connect
	binding map[[12]byte]chan netip.AddrPort // binding requests in flight
}

// quicConf is the QUIC configuration of piece connections: keep-alives
// hold the NAT mappings open while a download idles.
func quicConf() *quic.Config {
	// The receive windows start large: a downloader pipelines several
	// pieces (up to 4 MiB) at once, and a window that must first grow
	// through auto-tuning halves the rate of a short download.
	return &quic.Config{HandshakeIdleTimeout: punchTimeout, MaxIdleTimeout: 30 * time.Second, KeepAlivePeriod: 10 * time.Second,
		InitialStreamReceiveWindow: 8 << 20, MaxStreamReceiveWindow: 16 << 20,
		InitialConnectionReceiveWindow: 8 << 20, MaxConnectionReceiveWindow: 16 << 20}
}

// startQUIC opens the UDP socket (on the listen address's IP and port
// for a listening peer, any port for a download-only one) and starts the
// transport's goroutines. It is called once, by New for a listening peer
// and by the first punch of a download-only one (under quicMu).
func (p *Peer) startQUIC() (*quicState, error) {
	laddr := &net.UDPAddr{}
	if p.mux != nil {
		if a, ok := p.mux.Addr().(*net.TCPAddr); ok {
			laddr = &net.UDPAddr{IP: a.IP, Port: a.Port}
		}
	}
	udp, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("open a UDP socket for hole punching: %w", err)
	}
	q := &quicState{udp: udp, tr: &quic.Transport{Conn: udp}, allowed: map[string]time.Time{}, binding: map[[12]byte]chan netip.AddrPort{}}
	if p.mux != nil {
		cfg := p.tls.ServerConfig()
		cfg.ClientAuth = tls.RequireAnyClientCert
		cfg.NextProtos = []string{pieceALPN}
		ln, err := q.tr.Listen(cfg, quicConf())
		if err != nil {
			q.tr.Close()
			return nil, fmt.Errorf("listen for QUIC piece connections: %w", err)
		}
		if !p.enter() {
			q.tr.Close()
			return nil, ErrClosed
		}
		go func() {
			defer p.wg.Done()
			p.acceptPunched(q, ln)
		}()
	}
	if !p.enter() {
		q.tr.Close()
		return nil, ErrClosed
	}
	go func() {
		defer p.wg.Done()
		q.readNonQUIC(p.ctx)
	}()
	return q, nil
}

// quicTransport returns the peer's QUIC state, starting it on first use.
func (p *Peer) quicTransport() (*quicState, error) {
	p.quicMu.Lock()
	defer p.quicMu.Unlock()
	if p.quic != nil {
		return p.quic, nil
	}
	q, err := p.startQUIC()
	if err != nil {
		return nil, err
	}
	p.quic = q
	return q, nil
}

// closeQUIC closes the transport, if any. Called by release.
func (p *Peer) closeQUIC() {
	p.quicMu.Lock()
	defer p.quicMu.Unlock()
	if p.quic != nil {
		_ = p.quic.tr.Close()
	}
}

// readNonQUIC takes the datagrams that are not QUIC: binding answers go
// to whoever asked, punch packets are dropped.
func (q *quicState) readNonQUIC(ctx context.Context) {
	buf := make([]byte, 1500)
	for {
		n, _, err := q.tr.ReadNonQUICPacket(ctx, buf)
		if err != nil {
			return
		}
		id, from, err := client.ParseBindingResponse(buf[:n])
		if err != nil {
			continue
		}
		q.mu.Lock()
		ch := q.binding[id]
		delete(q.binding, id)
		q.mu.Unlock()
		if ch != nil {
			ch <- from
		}
	}
}

// bind asks the masters, one after another, which address this socket's
// datagrams come from, and remembers the answer.
func (p *Peer) bind(ctx context.Context, q *quicState) (netip.AddrPort, error) {
	var errs []error
	for round := 0; round < 2; round++ {
		for _, m := range p.cfg.Masters {
			ua, err := net.ResolveUDPAddr("udp", strings.TrimSpace(m))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			var id [12]byte
			_, _ = rand.Read(id[:])
			ch := make(chan netip.AddrPort, 1)
			q.mu.Lock()
			q.binding[id] = ch
			q.mu.Unlock()
			_, err = q.tr.WriteTo(client.AppendBindingRequest(nil, id), ua)
			if err == nil {
				select {
				case a := <-ch:
					s := a.String()
					q.observed.Store(&s)
					return a, nil
				case <-time.After(bindingTimeout):
					err = fmt.Errorf("no answer from %s", m)
				case <-ctx.Done():
					err = ctx.Err()
				}
			}
			q.mu.Lock()
			delete(q.binding, id)
			q.mu.Unlock()
			errs = append(errs, err)
			if ctx.Err() != nil {
				return netip.AddrPort{}, ctx.Err()
			}
		}
	}
	return netip.AddrPort{}, fmt.Errorf("no master told this peer its UDP address: %w", errors.Join(errs...))
}

// punchAddr returns this peer's UDP address as a master last observed it,
// or "".
func (p *Peer) punchAddr() string {
	p.quicMu.Lock()
	q := p.quic
	p.quicMu.Unlock()
	if q == nil {
		return ""
	}
	if s := q.observed.Load(); s != nil {
		return *s
	}
	return ""
}

// refreshBinding learns the UDP mapping again (observeLoop calls it): a
// NAT forgets an idle mapping within minutes, and may give a new one.
func (p *Peer) refreshBinding(ctx context.Context) {
	q, err := p.quicTransport()
	if err != nil {
		return
	}
	if _, err := p.bind(ctx, q); err != nil {
		p.logger.Debug("UDP address observation failed", "err", err)
	}
}

// sendPunches sends punchPackets datagrams to addr, punchSpacing apart,
// from at on, until ctx ends.
func (q *quicState) sendPunches(ctx context.Context, at time.Time, addr *net.UDPAddr) {
	if d := time.Until(at); d > 0 && d < punchMaxAhead {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
	for i := 0; i < punchPackets; i++ {
		_, _ = q.tr.WriteTo(punchPacket, addr)
		select {
		case <-ctx.Done():
			return
		case <-time.After(punchSpacing):
		}
	}
}

// dialPunched coordinates a simultaneous open with holder id through the
// masters and returns a QUIC stream to it.
func (p *Peer) dialPunched(ctx context.Context, id string) (net.Conn, error) {
	q, err := p.quicTransport()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, punchTimeout+punchLead+2*p.cfg.MasterTimeout)
	defer cancel()
	self, err := p.bind(ctx, q)
	if err != nil {
		return nil, err
	}
	at := time.Now().Add(punchLead)
	reply, err := p.client.Connect(ctx, p.id, id, client.RendezvousMessage{Kind: client.ConnPunch, Addr: self.String(), At: at.UnixMilli()})
	if err != nil {
		return nil, err
	}
	if reply.Target.UDP == "" {
		return nil, fmt.Errorf("holder %s has no UDP address to punch towards", id)
	}
	target, err := net.ResolveUDPAddr("udp", reply.Target.UDP)
	if err != nil {
		return nil, err
	}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	go q.sendPunches(pctx, at, target)
	if d := time.Until(at); d > 0 {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(d):
		}
	}
	cfg := p.tls.PeerClientConfig(expectKey(id, target.String()))
	cfg.NextProtos = []string{pieceALPN}
	hctx, hcancel := context.WithTimeout(ctx, punchTimeout)
	defer hcancel()
	conn, err := q.tr.Dial(hctx, target, cfg, quicConf())
	if err != nil {
		return nil, fmt.Errorf("QUIC handshake with %s through both NATs: %w", target, err)
	}
	st, err := conn.OpenStreamSync(hctx)
	if err != nil {
		conn.CloseWithError(0, "")
		return nil, err
	}
	return &quicStreamConn{Stream: st, conn: conn}, nil
}

// servePunched answers a punch request: it lets the asker's handshake in
// for a while and sends datagrams towards it at the agreed moment.
func (p *Peer) servePunched(m client.RendezvousMessage) error {
	if p.mux == nil {
		return errors.New("a download-only peer serves no pieces")
	}
	q, err := p.quicTransport()
	if err != nil {
		return err
	}
	addr, err := net.ResolveUDPAddr("udp", m.Addr)
	if err != nil {
		return err
	}
	q.mu.Lock()
	now := time.Now()
	for id, until := range q.allowed {
		if now.After(until) {
			delete(q.allowed, id)
		}
	}
	q.allowed[m.From] = now.Add(punchAllowFor)
	q.mu.Unlock()
	ctx, cancel := context.WithTimeout(p.ctx, punchAllowFor)
	defer cancel()
	q.sendPunches(ctx, time.UnixMilli(m.At), addr)
	return nil
}

// acceptPunched serves QUIC piece connections from downloaders that asked
// for a punch, one goroutine per connection, until the transport closes.
func (p *Peer) acceptPunched(q *quicState, ln *quic.Listener) {
	for {
		conn, err := ln.Accept(p.ctx)
		if err != nil {
			return
		}
		if !p.enter() {
			conn.CloseWithError(0, "")
			return
		}
		go func() {
			defer p.wg.Done()
			p.servePunchedConn(q, conn)
		}()
	}
}

func (p *Peer) servePunchedConn(q *quicState, conn *quic.Conn) {
	certs := conn.ConnectionState().TLS.PeerCertificates
	var who string
	if len(certs) > 0 {
		if k, ok := certs[0].PublicKey.(ed25519.PublicKey); ok {
			who = client.PeerIDOf(k)
		}
	}
	// The asker's handshake may overtake the rendezvous message that
	// allows it (the message travels through the masters): give the
	// message a moment to arrive.
	allowed := func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		until, ok := q.allowed[who]
		return ok && time.Now().Before(until)
	}
	for wait := time.Now().Add(punchTimeout); !allowed() && time.Now().Before(wait); {
		select {
		case <-p.ctx.Done():
			conn.CloseWithError(0, "")
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	if !allowed() {
		p.logger.Debug("refusing a QUIC connection nobody arranged", "remote", conn.RemoteAddr(), "peer", who)
		conn.CloseWithError(1, "no punch was arranged for this peer")
		return
	}
	for {
		st, err := conn.AcceptStream(p.ctx)
		if err != nil {
			conn.CloseWithError(0, "")
			return
		}
		sc := &quicStreamConn{Stream: st, conn: conn}
		if !p.conns.Add(sc) {
			sc.Close()
			return
		}
		p.serveConn(sc, nil)
		p.conns.Remove(sc)
	}
}

// quicStreamConn is a QUIC stream as a net.Conn; closing it closes the
// whole QUIC connection (each carries one stream).
type quicStreamConn struct {
	*quic.Stream
	conn *quic.Conn
}

func (s *quicStreamConn) LocalAddr() net.Addr  { return s.conn.LocalAddr() }
func (s *quicStreamConn) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

func (s *quicStreamConn) Close() error {
	_ = s.Stream.Close()
	return s.conn.CloseWithError(0, "")
}
