package master

// This file owns the rendezvous service (client.MethodObserve, Wait,
// Connect, Deliver): observed addresses, reachability probes, and the push
// channel that carries connection requests to peers behind NATs.
//
// All of it is soft state of the master that serves the calls, never the
// Raft log, by design: a peer's observed address and reachability change
// whenever its NAT renews a mapping or its home network changes, and its
// push channel lives exactly as long as one TCP connection. Logging them
// would cost an entry per change for facts that are stale within minutes
// and worthless after a restart; the design keeps liveness as soft state
// for the same reason. Each peer says what it knows of itself (PeerNAT) in
// every Wait call, so the master holding its channel always has it fresh,
// and a Connect reaches that master wherever it is: the receiving master
// delivers locally or asks every other member (MethodDeliver, over the
// cluster's mutual TLS). Nothing needs a leader, so rendezvous keeps
// working through an election.

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/transport"
)

// Bounds of the rendezvous service, per master.
const (
	// maxMailboxes caps the push channels one master keeps; past it a new
	// Wait is refused as busy (the peer's client tries another master).
	maxMailboxes = 100_000
	// maxRendezvousQueued caps the messages waiting for one peer.
	maxRendezvousQueued = 16
	// mailboxIdle is how long a push channel counts as open after its
	// last Wait call ended.
	mailboxIdle = time.Second
	// mailboxForget is how long an unused mailbox is kept at all.
	mailboxForget = 30 * time.Second
	// maxProbes caps the dial-backs in flight on one master.
	maxProbes = 32
	// probeTimeout bounds one dial-back.
	probeTimeout = 2 * time.Second
	// deliverTimeout bounds one forward of a Connect to another master.
	deliverTimeout = 2 * time.Second
)

// rendezvous is one master's rendezvous state.
type rendezvous struct {
	mu     sync.Mutex
	boxes  map[string]*mailbox
	probes chan struct{} // a slot per dial-back in flight
}

// mailbox is the push channel of one peer on this master.
type mailbox struct {
	nat     client.PeerNAT
	waiting int       // Wait calls holding it open now
	last    time.Time // when the last Wait call began or ended
	msgs    []client.RendezvousMessage
	wake    chan struct{} // cap 1: a message arrived
}

func newRendezvous() *rendezvous {
	return &rendezvous{boxes: map[string]*mailbox{}, probes: make(chan struct{}, maxProbes)}
}

// open reports whether the peer's channel counts as open here.
func (b *mailbox) open(now time.Time) bool {
	return b.waiting > 0 || now.Sub(b.last) < mailboxIdle
}

// registerRendezvous adds the rendezvous methods to the RPC server.
func (m *Master) registerRendezvous(s *transport.Server) {
	m.rdv = newRendezvous()
	transport.Handle(s, client.MethodObserve, m.handleObserve)
	transport.Handle(s, client.MethodWait, m.handleWait)
	transport.Handle(s, client.MethodConnect, m.handleConnect)
	transport.Handle(s, client.MethodDeliver, m.handleDeliver)
	transport.Handle(s, client.MethodRelays, m.handleRelays)
	m.serveUDPObserve()
	m.startRelay()
}

func validAddr(what, a string) error {
	if len(a) > client.MaxRendezvousAddr {
		return fmt.Errorf("%w: %s is %d bytes, at most %d", fsm.ErrInvalid, what, len(a), client.MaxRendezvousAddr)
	}
	if a == "" {
		return nil
	}
	if _, err := netipAddrPort(a); err != nil {
		return fmt.Errorf("%w: %s %q is not ip:port", fsm.ErrInvalid, what, a)
	}
	return nil
}

func netipAddrPort(a string) (*net.TCPAddr, error) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return nil, err
	}
	ip := net.ParseIP(host)
	p, err := strconv.Atoi(port)
	if ip == nil || err != nil || p <= 0 || p > 65535 {
		return nil, errors.New("not ip:port")
	}
	return &net.TCPAddr{IP: ip, Port: p}, nil
}

// handleObserve answers the caller's address and, if asked, dials it back
// at the caller's own IP (never another: the master must not become a
// tool for probing third parties) and checks that the caller's key
// answers there.
func (m *Master) handleObserve(ctx context.Context, req *client.ObserveRequest) (*client.ObserveReply, error) {
	if _, err := authorizePeer(ctx, req.PeerID, req.Key, false); err != nil {
		return nil, err
	}
	addr := transport.CallerFrom(ctx).Addr
	if addr == nil {
		return nil, fmt.Errorf("%w: no remote address", fsm.ErrInvalid)
	}
	out := &client.ObserveReply{Observed: addr.String()}
	if req.ProbePort <= 0 {
		return out, nil
	}
	if req.ProbePort > 65535 {
		return nil, fmt.Errorf("%w: probe port %d", fsm.ErrInvalid, req.ProbePort)
	}
	select {
	case m.rdv.probes <- struct{}{}:
		defer func() { <-m.rdv.probes }()
	default:
		out.ProbeError = "this master is probing many peers now; ask again later"
		return out, nil
	}
	target := net.JoinHostPort(transport.HostOf(addr), strconv.Itoa(req.ProbePort))
	if err := m.probePeer(target, ed25519.PublicKey(req.Key)); err != nil {
		out.ProbeError = err.Error()
		return out, nil
	}
	out.Reachable = true
	return out, nil
}

// probePeer completes a piece-stream TLS handshake with target and checks
// that the peer with key answers there, then hangs up.
func (m *Master) probePeer(target string, key ed25519.PublicKey) error {
	t := m.cfg.TLS
	if t == nil {
		t = new(transport.TLS) // an insecure cluster: present no certificate
	}
	want := client.PeerIDOf(key)
	cfg := t.PeerClientConfig(func(k ed25519.PublicKey) error {
		if got := client.PeerIDOf(k); got != want {
			return fmt.Errorf("%w: %s answers with the key of peer %s", transport.ErrWrongPeer, target, got)
		}
		return nil
	})
	conn, err := m.mux.DialStreamTLS(target, transport.StreamPiece, probeTimeout, cfg)
	if err != nil {
		return err
	}
	return conn.Close()
}

func validNAT(n client.PeerNAT) error {
	if err := validAddr("address", n.Addr); err != nil {
		return err
	}
	return validAddr("UDP address", n.UDP)
}

// handleWait holds the caller's push channel open until a message arrives
// for it, client.WaitHold passes, the call's deadline nears, or the
// master stops.
func (m *Master) handleWait(ctx context.Context, req *client.WaitRequest) (*client.WaitReply, error) {
	if _, err := authorizePeer(ctx, req.PeerID, req.Key, false); err != nil {
		return nil, err
	}
	if err := validNAT(req.NAT); err != nil {
		return nil, err
	}
	r := m.rdv
	now := time.Now()
	r.mu.Lock()
	b := r.boxes[req.PeerID]
	if b == nil {
		if len(r.boxes) >= maxMailboxes {
			r.sweep(now)
		}
		if len(r.boxes) >= maxMailboxes {
			r.mu.Unlock()
			return nil, fmt.Errorf("%w: this master keeps %d rendezvous channels already", transport.ErrBusy, maxMailboxes)
		}
		b = &mailbox{wake: make(chan struct{}, 1)}
		r.boxes[req.PeerID] = b
	}
	b.nat, b.last = req.NAT, now
	b.waiting++
	r.mu.Unlock()

	defer func() {
		r.mu.Lock()
		b.waiting--
		b.last = time.Now()
		r.mu.Unlock()
	}()
	hold := time.NewTimer(client.WaitHold)
	defer hold.Stop()
	for {
		r.mu.Lock()
		if len(b.msgs) > 0 {
			out := &client.WaitReply{Messages: b.msgs}
			b.msgs = nil
			r.mu.Unlock()
			return out, nil
		}
		r.mu.Unlock()
		select {
		case <-b.wake:
		case <-hold.C:
			return &client.WaitReply{}, nil
		case <-ctx.Done():
			return &client.WaitReply{}, nil
		case <-m.ctx.Done():
			return &client.WaitReply{}, nil
		}
	}
}

// sweep forgets mailboxes unused for mailboxForget. Called with mu held.
func (r *rendezvous) sweep(now time.Time) {
	for id, b := range r.boxes {
		if b.waiting == 0 && now.Sub(b.last) > mailboxForget {
			delete(r.boxes, id)
		}
	}
}

// deliverLocal queues msg for target if target's channel is open here.
func (r *rendezvous) deliverLocal(target string, msg client.RendezvousMessage) (client.ConnectReply, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.boxes[target]
	if b == nil || !b.open(time.Now()) {
		return client.ConnectReply{}, nil
	}
	if len(b.msgs) >= maxRendezvousQueued {
		return client.ConnectReply{}, fmt.Errorf("%w: %d rendezvous requests wait for peer %s already", transport.ErrBusy, maxRendezvousQueued, target)
	}
	b.msgs = append(b.msgs, msg)
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return client.ConnectReply{Delivered: true, Target: b.nat}, nil
}

func validMessage(req *client.ConnectRequest) error {
	if err := fsm.PeerID(req.Target).Validate(); err != nil {
		return err
	}
	msg := req.Message
	if msg.From != req.PeerID {
		return fmt.Errorf("%w: a rendezvous message must come from its sender (%q, not %q)", fsm.ErrInvalid, req.PeerID, msg.From)
	}
	switch msg.Kind {
	case client.ConnReverse, client.ConnPunch, client.ConnRelay:
	default:
		return fmt.Errorf("%w: unknown rendezvous kind %q", fsm.ErrInvalid, msg.Kind)
	}
	if msg.Addr == "" {
		return fmt.Errorf("%w: a rendezvous message needs an address", fsm.ErrInvalid)
	}
	if err := validAddr("address", msg.Addr); err != nil {
		return err
	}
	if msg.Relay != "" {
		if err := fsm.PeerID(msg.Relay).Validate(); err != nil {
			return err
		}
	}
	if len(msg.Token) > client.RendezvousToken {
		return fmt.Errorf("%w: token of %d bytes, at most %d", fsm.ErrInvalid, len(msg.Token), client.RendezvousToken)
	}
	return nil
}

// handleConnect passes a rendezvous message to its target: through the
// target's channel here if it is open, else through whichever other
// member holds it.
func (m *Master) handleConnect(ctx context.Context, req *client.ConnectRequest) (*client.ConnectReply, error) {
	if _, err := authorizePeer(ctx, req.PeerID, req.Key, false); err != nil {
		return nil, err
	}
	if err := validMessage(req); err != nil {
		return nil, err
	}
	if err := ownAddress(ctx, req.Message); err != nil {
		return nil, err
	}
	if req.Message.Kind == client.ConnRelay && !m.knownRelay(ctx, req.Message.Addr, req.Message.Relay) {
		return nil, fmt.Errorf("%w: %s is not a relay the masters know; list them with %s", fsm.ErrInvalid, req.Message.Addr, client.MethodRelays)
	}
	out, err := m.rdv.deliverLocal(req.Target, req.Message)
	if err != nil || out.Delivered {
		return &out, err
	}
	servers, err := m.configuration()
	if err != nil {
		return nil, err
	}
	fwd := *req
	fwd.Forwarded = true
	type result struct {
		out client.ConnectReply
		err error
	}
	results := make(chan result, len(servers))
	asked := 0
	for _, s := range servers {
		if string(s.ID) == m.cfg.ID || s.Suffrage == raft.Staging {
			continue
		}
		asked++
		go func(addr string) {
			actx, cancel := context.WithTimeout(ctx, deliverTimeout)
			defer cancel()
			var r result
			r.err = m.client.Call(actx, addr, client.MethodDeliver, &fwd, &r.out)
			results <- r
		}(string(s.Address))
	}
	var errs []error
	for range asked {
		r := <-results
		if r.err == nil && r.out.Delivered {
			// The other calls finish on their own (bounded by
			// deliverTimeout) and find room in the buffered channel.
			return &r.out, nil
		}
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	if len(errs) > 0 && len(errs) == asked {
		return nil, fmt.Errorf("%w (no other master answered: %v)", client.ErrNoChannel, errors.Join(errs...))
	}
	return nil, fmt.Errorf("%w: peer %s", client.ErrNoChannel, req.Target)
}

// ownAddress refuses a reversal or punch whose address is not on the
// caller's own IP as this master sees it: otherwise anyone could make
// every holder in the index dial a third party.
func ownAddress(ctx context.Context, msg client.RendezvousMessage) error {
	if msg.Kind != client.ConnReverse && msg.Kind != client.ConnPunch {
		return nil
	}
	host, _, err := net.SplitHostPort(msg.Addr)
	caller := transport.CallerFrom(ctx).Addr
	if err != nil || caller == nil || !sameIP(host, transport.HostOf(caller)) {
		return fmt.Errorf("%w: a %s address must be on the caller's own IP (%v), not %q", fsm.ErrInvalid, msg.Kind, caller, msg.Addr)
	}
	return nil
}

func sameIP(a, b string) bool {
	x, y := net.ParseIP(a), net.ParseIP(b)
	return x != nil && y != nil && x.Equal(y)
}

// handleDeliver is a Connect passed on by another member: deliver it
// here or report that the target's channel is not here.
func (m *Master) handleDeliver(ctx context.Context, req *client.ConnectRequest) (*client.ConnectReply, error) {
	c := transport.CallerFrom(ctx)
	if !req.Forwarded || !(c.Insecure || (c.Role == transport.RoleMaster && c.Allows(transport.RoleMaster))) {
		return nil, transport.Require(ctx, transport.RoleMaster)
	}
	if err := validMessage(req); err != nil {
		return nil, err
	}
	out, err := m.rdv.deliverLocal(req.Target, req.Message)
	return &out, err
}
