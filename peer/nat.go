package peer

// This file owns NAT traversal on the peer side: what the peer knows of
// its own reachability (natState), the two loops that keep it fresh and
// keep the push channel to the masters open (observeLoop, waitLoop), and
// the connection ladder a downloader climbs per holder (dialHolder):
//
//	direct    dial the holder's advertised address
//	reversal  the holder cannot be dialled but this peer can: the masters
//	          ask the holder to dial this peer (transport.StreamReverse)
//	punch     both behind NATs: simultaneous QUIC open (punch.go)
//	relay     through a relay that sees only ciphertext (relay.go)
//
// Every path ends in the same mutually authenticated TLS session (TLS 1.3
// over TCP, or QUIC's TLS 1.3), so the piece protocol runs over it
// unchanged and the downloader always checks the holder's key against the
// peer ID the index lists.
//
// observeLoop and waitLoop run in Peer.syncWG (started by New for a
// listening peer, stopped by syncCancel); acceptReverse and every served
// reversed connection run in Peer.wg.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"fileshare/client"
	"fileshare/transport"
)

// Paths a piece connection can take, as DownloadResult.Paths, the
// progress line and /metrics name them.
const (
	PathDirect   = "direct"
	PathReversal = "reversal"
	PathPunch    = "punch"
	PathRelay    = "relay"
)

// DefaultNATInterval is how often a listening peer asks a master how it
// sees it and whether it can dial it back (Config.NATInterval).
const DefaultNATInterval = time.Minute

// Bounds of the connection ladder.
const (
	directTimeout  = 3 * time.Second // a dial to the advertised address
	reverseTimeout = 5 * time.Second // from the request until the holder's connection arrives
	maxReversed    = 16              // reversed connections served at once
)

// reversePreface is what the dialling holder writes on a reversed
// connection right after the stream kind: a version byte and the token
// of the downloader's request.
const (
	reverseVersion    = 1
	reversePrefaceLen = 1 + client.RendezvousToken
)

// natState is what the peer knows of its own reachability.
type natState struct {
	probed    atomic.Bool // a dial-back has answered at least once
	reachable atomic.Bool
	observed  atomic.Pointer[string] // as the last master saw it
	public    atomic.Pointer[string] // the observed IP with the listen port, once reachable there (Peer.Addr)
	moved     atomic.Bool            // public changed: the sync goroutine joins again with it

	mu      sync.Mutex
	pending map[[client.RendezvousToken]byte]*reverseWait // reversals asked for, by token

	reversed  chan struct{} // a slot per reversed connection served
	ready     chan struct{} // closed after the first reachability check, answered or not
	pathCount [4]atomic.Uint64
}

type reverseWait struct {
	holder string
	conn   chan net.Conn // cap 1
}

func pathIndex(path string) int {
	switch path {
	case PathReversal:
		return 1
	case PathPunch:
		return 2
	case PathRelay:
		return 3
	}
	return 0
}

// Reachable reports whether a master could dial this peer back at its
// listen port (known is false until one has tried).
func (p *Peer) Reachable() (reachable, known bool) {
	return p.nat.reachable.Load(), p.nat.probed.Load()
}

// startNAT starts the NAT goroutines of a listening peer. Called by New.
func (p *Peer) startNAT(syncCtx context.Context) {
	p.nat.pending = map[[client.RendezvousToken]byte]*reverseWait{}
	p.nat.reversed = make(chan struct{}, maxReversed)
	p.nat.ready = make(chan struct{})
	if p.mux == nil {
		return
	}
	if _, err := p.quicTransport(); err != nil {
		p.logger.Warn("no hole punching: peers behind NATs reach this one only by reversal or relay", "err", err)
	}
	p.startRelay()
	ln := p.mux.Listener(transport.StreamReverse)
	p.wg.Go(func() { p.acceptReverse(ln) })
	p.syncWG.Go(func() { p.observeLoop(syncCtx) })
	p.syncWG.Go(func() { p.waitLoop(syncCtx) })
}

// observeLoop asks a master, every NATInterval, what it sees of this peer
// and whether it can dial the listener back, and logs every change.
func (p *Peer) observeLoop(ctx context.Context) {
	_, portStr, _ := net.SplitHostPort(p.mux.Addr().String())
	port, _ := strconv.Atoi(portStr)
	every := p.cfg.NATInterval
	wait := time.Duration(0)
	first := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = every
		p.refreshBinding(ctx)
		cctx, cancel := context.WithTimeout(ctx, 2*p.cfg.MasterTimeout)
		r, err := p.client.Observe(cctx, p.id, port)
		cancel()
		if first {
			// The push channel opens with what this peer now knows of
			// itself; later changes reach the master with the next Wait
			// call, within client.WaitHold.
			first = false
			close(p.nat.ready)
		}
		if err != nil {
			if ctx.Err() == nil {
				p.logger.Debug("reachability check failed; trying again later", "err", err)
				wait = min(every, 5*time.Second)
			}
			continue
		}
		was, known := p.nat.reachable.Load(), p.nat.probed.Load()
		old := p.nat.observed.Load()
		p.nat.observed.Store(&r.Observed)
		p.nat.reachable.Store(r.Reachable)
		p.nat.probed.Store(true)
		if r.Reachable && p.cfg.Advertise == "" {
			p.adoptObserved(r.Observed, port)
		}
		if !known || was != r.Reachable || old == nil || *old != r.Observed {
			if r.Reachable {
				p.logger.Info("reachable: a master dialled this peer back", "observed", r.Observed, "listen_port", port)
			} else {
				p.logger.Info("not reachable from outside (behind a NAT or firewall): others reach this peer through reversal, hole punching or a relay", "observed", r.Observed, "listen_port", port, "probe_error", r.ProbeError)
			}
		}
	}
}

// adoptObserved makes the observed IP with the listen port this peer's
// advertised address, if it differs: a master just reached the peer
// there, so others can too, while the configured address (a private one
// behind a router that forwards the port) may work only at home. The
// sync goroutine joins again with it; the registrations stay.
func (p *Peer) adoptObserved(observed string, port int) {
	host, _, err := net.SplitHostPort(observed)
	if err != nil {
		return
	}
	a := net.JoinHostPort(host, strconv.Itoa(port))
	if a == p.Addr() {
		return
	}
	p.nat.public.Store(&a)
	p.nat.moved.Store(true)
	p.logger.Info("advertising the address a master reached this peer at", "addr", a, "was", p.addr)
	select {
	case p.syncKick <- struct{}{}:
	default:
	}
}

// selfNAT is what this peer says of itself in its Wait calls.
func (p *Peer) selfNAT() client.PeerNAT {
	n := client.PeerNAT{Reachable: p.nat.reachable.Load(), Addr: p.Addr(), Relay: p.cfg.Relay && p.nat.reachable.Load()}
	if u := p.punchAddr(); u != "" {
		n.UDP = u
	}
	return n
}

// waitLoop keeps the push channel open: one Wait call at a time, to
// whichever master the client picks (it fails over with every other call),
// handling what arrives.
func (p *Peer) waitLoop(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-p.nat.ready:
	}
	for ctx.Err() == nil {
		msgs, err := p.client.Wait(ctx, p.id, p.selfNAT())
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.logger.Debug("rendezvous channel failed; reopening", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		for _, m := range msgs {
			p.handleRendezvous(m)
		}
	}
}

// handleRendezvous acts on one message from the push channel, in its own
// goroutine in p.wg.
func (p *Peer) handleRendezvous(m client.RendezvousMessage) {
	if !p.enter() {
		return
	}
	go func() {
		defer p.wg.Done()
		var err error
		switch m.Kind {
		case client.ConnReverse:
			err = p.serveReversed(m)
		case client.ConnPunch:
			err = p.servePunched(m)
		case client.ConnRelay:
			err = p.serveRelayed(m)
		default:
			err = fmt.Errorf("unknown kind %q", m.Kind)
		}
		if err != nil {
			p.logger.Info("could not connect to a peer that asked through the masters", "peer", m.From, "kind", m.Kind, "addr", m.Addr, "err", err)
		}
	}()
}

// expectKey returns a TLS key check that accepts only peer id.
func expectKey(id, addr string) func(ed25519.PublicKey) error {
	return func(k ed25519.PublicKey) error {
		if got := client.PeerIDOf(k); got != id {
			return fmt.Errorf("%w: %s presented the key of peer %s, not %s", transport.ErrWrongPeer, addr, got, id)
		}
		return nil
	}
}

// serveReversed dials the downloader that asked for a reversal, proves
// this peer's key and checks the downloader's, and serves it pieces over
// that connection as if it had dialled in.
func (p *Peer) serveReversed(m client.RendezvousMessage) error {
	if len(m.Token) != client.RendezvousToken {
		return fmt.Errorf("reversal request with a %d-byte token", len(m.Token))
	}
	select {
	case p.nat.reversed <- struct{}{}:
		defer func() { <-p.nat.reversed }()
	default:
		return fmt.Errorf("serving %d reversed connections already", maxReversed)
	}
	conn, err := p.mux.DialStreamTLS(m.Addr, transport.StreamReverse, reverseTimeout, p.tls.PeerClientConfig(expectKey(m.From, m.Addr)))
	if err != nil {
		return err
	}
	pre := append([]byte{reverseVersion}, m.Token...)
	_ = conn.SetWriteDeadline(time.Now().Add(reverseTimeout))
	if _, err := conn.Write(pre); err != nil {
		conn.Close()
		return err
	}
	_ = conn.SetWriteDeadline(time.Time{})
	if !p.conns.Add(conn) {
		conn.Close()
		return ErrClosed
	}
	defer p.conns.Remove(conn)
	p.logger.Debug("serving a reversed connection", "peer", m.From, "addr", m.Addr)
	p.serveConn(conn, nil)
	return nil
}

// readReversePreface reads and checks a reversed connection's preface.
func readReversePreface(r io.Reader) (tok [client.RendezvousToken]byte, err error) {
	var b [reversePrefaceLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return tok, err
	}
	if b[0] != reverseVersion {
		return tok, fmt.Errorf("%w: reversal preface version %d", errBadMessage, b[0])
	}
	copy(tok[:], b[1:])
	return tok, nil
}

// acceptReverse takes reversed connections until the listener closes and
// hands each to the download that asked for it, if its token and the
// dialler's key match; others are closed.
func (p *Peer) acceptReverse(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		if !p.enter() {
			conn.Close()
			return
		}
		go func() {
			defer p.wg.Done()
			_ = conn.SetReadDeadline(time.Now().Add(reverseTimeout))
			tok, err := readReversePreface(conn)
			_ = conn.SetReadDeadline(time.Time{})
			if err != nil {
				conn.Close()
				return
			}
			p.nat.mu.Lock()
			w := p.nat.pending[tok]
			delete(p.nat.pending, tok)
			p.nat.mu.Unlock()
			if w == nil || client.PeerIDOf(transport.CallerOf(conn).Key) != w.holder {
				p.logger.Debug("closing a reversed connection nobody asked for", "remote", conn.RemoteAddr())
				conn.Close()
				return
			}
			w.conn <- conn
		}()
	}
}

// dialReversed asks holder id, through the masters, to dial this peer,
// and waits for its connection.
func (p *Peer) dialReversed(ctx context.Context, id string) (net.Conn, error) {
	if p.mux == nil {
		return nil, errors.New("reversal needs a listening peer (this one only downloads)")
	}
	if !p.nat.reachable.Load() {
		return nil, errors.New("reversal needs this peer to be reachable, and the masters cannot dial it")
	}
	var tok [client.RendezvousToken]byte
	_, _ = rand.Read(tok[:])
	w := &reverseWait{holder: id, conn: make(chan net.Conn, 1)}
	p.nat.mu.Lock()
	p.nat.pending[tok] = w
	p.nat.mu.Unlock()
	defer func() {
		p.nat.mu.Lock()
		delete(p.nat.pending, tok)
		p.nat.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, reverseTimeout)
	defer cancel()
	if _, err := p.client.Connect(ctx, p.id, id, client.RendezvousMessage{Kind: client.ConnReverse, Addr: p.Addr(), Token: tok[:]}); err != nil {
		return nil, err
	}
	select {
	case c := <-w.conn:
		return c, nil
	case <-ctx.Done():
		// A connection that arrives now finds no waiter and is closed.
		return nil, fmt.Errorf("holder %s did not dial back within %v", id, reverseTimeout)
	}
}

// dialHolder opens a piece connection to holder id, climbing the ladder
// direct → reversal → punch → relay from the path that last worked for
// it, and returns the connection and the path it took.
func (p *Peer) dialHolder(addr, id string, timeout time.Duration) (net.Conn, string, error) {
	order := []string{PathDirect, PathReversal, PathPunch, PathRelay}
	if last, ok := p.lastPath.Load(id); ok {
		for i, s := range order {
			if s == last {
				order = append(order[i:], order[:i]...)
				break
			}
		}
	}
	ctx := p.ctx
	var errs []error
	for _, path := range order {
		if slices.Contains(p.cfg.skipPaths, path) {
			continue
		}
		var conn net.Conn
		var err error
		switch path {
		case PathDirect:
			conn, err = p.dialPieces(addr, id, min(timeout, directTimeout))
		case PathReversal:
			conn, err = p.dialReversed(ctx, id)
		case PathPunch:
			conn, err = p.dialPunched(ctx, id)
		case PathRelay:
			conn, err = p.dialRelayed(ctx, id)
		}
		if err == nil {
			p.lastPath.Store(id, path)
			p.nat.pathCount[pathIndex(path)].Add(1)
			return conn, path, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", path, err))
		if errors.Is(err, client.ErrNoChannel) || ctx.Err() != nil {
			break // the holder cannot be asked for anything else now
		}
	}
	return nil, "", errors.Join(errs...)
}

// pathLog records the path each holder's connection took, for one
// download; workers write it, the coordinator reads it.
type pathLog struct {
	mu sync.Mutex
	m  map[string]string
}

func (l *pathLog) set(holder, path string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]string{}
	}
	l.m[holder] = path
}

func (l *pathLog) all() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.m) == 0 {
		return nil
	}
	out := make(map[string]string, len(l.m))
	for k, v := range l.m {
		out[k] = v
	}
	return out
}

func (l *pathLog) counts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.m) == 0 {
		return nil
	}
	out := map[string]int{}
	for _, v := range l.m {
		out[v]++
	}
	return out
}
