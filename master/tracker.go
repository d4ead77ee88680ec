package master

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/tracker"
	"fileshare/transport"
)

// This file makes the master a tracker.Backend: the BitTorrent front-ends
// (HTTP and UDP, package tracker) call Announce and Scrape, and the master
// answers from its own index.
//
// What goes through the log and what does not:
//   - A membership change (a peer appears in a swarm, leaves it, completes,
//     changes address, port or seeder state) is proposed at the leader and
//     answered after it commits, so an acknowledged started survives the
//     loss of the master that took it, of the leader, and a restart of every
//     master. A follower relays it (MethodTrackerAnnounce).
//   - A re-announce that changes nothing is a lease renewal: the receiving
//     master marks the record seen in its own index, and a follower passes
//     renewals to the leader in batches (MethodTrackerRenew) once a second.
//     The leader proposes batched expiry (fsm.ExpireSwarmPeers) for records
//     it has not seen for PeerLifetime, and a new leader gives every record
//     a full lifetime before it expires any.
//   - Peer lists and scrapes are served stale, from the answering master's
//     index: a BitTorrent client only needs some live peers, and it never
//     has to know which master leads.

// TrackerConfig configures the tracker a master serves. A zero field means
// its default.
type TrackerConfig struct {
	// HTTP is the host:port of the HTTP tracker (announce URL
	// http://HTTP/announce). Empty disables it.
	HTTP string
	// UDP is the host:port of the UDP tracker (BEP 15; announce URL
	// udp://UDP/announce). Empty disables it.
	UDP string
	// Interval is the re-announce interval sent to clients. Zero means
	// 15 minutes. Re-announces are cheap (no log entry), but libtorrent
	// and qBittorrent do not re-announce more often than every 5 minutes
	// whatever a tracker says, so shorter intervals only help other
	// clients notice a change sooner.
	Interval time.Duration
	// MinInterval is the min interval sent to clients. Zero means a
	// third of Interval.
	MinInterval time.Duration
	// PeerLifetime is how long a swarm entry lives without a re-announce.
	// Zero means 2 × Interval + 2 minutes: one re-announce may be lost or
	// late (jittered, or the client was busy) without the peer dropping
	// out.
	PeerLifetime time.Duration
	// MaxConnsPerIP caps the HTTP tracker connections one source IP may
	// hold at once. Zero means tracker.DefaultMaxConnsPerIP (64); raise it
	// for clients behind a large NAT.
	MaxConnsPerIP int
	// MaxNumWant caps the peers one announce returns. Zero means 200; a
	// client that sends no numwant gets 50 (or fewer, up to this cap).
	MaxNumWant int
	// MaxPeers caps the swarm entries in the whole index, so that
	// strangers announcing random info-hashes cannot exhaust the
	// masters' memory. Zero means 2,000,000 (about 200 MB per master).
	MaxPeers int
	// MaxSwarms caps the swarms in the index. A swarm stays after its last
	// peer leaves if it counted a completed download (so scrapes keep its
	// count), so without a cap strangers could pile up empty swarms. Zero
	// means 1,000,000.
	MaxSwarms int
	// MaxPeersPerIP caps the swarm entries whose address is one IPv4
	// address or one IPv6 /64. Zero means 5,000: a seedbox with thousands
	// of torrents fits, one host cannot fill the tracker.
	MaxPeersPerIP int
}

func (c *TrackerConfig) withDefaults() error {
	for flag, a := range map[string]string{"--tracker-http": c.HTTP, "--tracker-udp": c.UDP} {
		if _, _, err := net.SplitHostPort(a); a != "" && err != nil {
			return fmt.Errorf("%w: %s %q is not host:port: %v", ErrConfig, flag, a, err)
		}
	}
	if c.Interval == 0 {
		c.Interval = 15 * time.Minute
	}
	if c.MinInterval == 0 {
		c.MinInterval = c.Interval / 3
	}
	if c.PeerLifetime == 0 {
		c.PeerLifetime = 2*c.Interval + 2*time.Minute
	}
	if c.MaxNumWant == 0 {
		c.MaxNumWant = 200
	}
	if c.MaxPeers == 0 {
		c.MaxPeers = 2_000_000
	}
	if c.MaxPeersPerIP == 0 {
		c.MaxPeersPerIP = 5000
	}
	if c.MaxSwarms == 0 {
		c.MaxSwarms = 1_000_000
	}
	switch {
	case c.Interval < time.Second:
		return fmt.Errorf("%w: --tracker-interval %v is under a second", ErrConfig, c.Interval)
	case c.MinInterval < 0 || c.MinInterval > c.Interval:
		return fmt.Errorf("%w: the tracker's min interval %v must be between 0 and --tracker-interval %v", ErrConfig, c.MinInterval, c.Interval)
	case c.PeerLifetime <= c.Interval:
		return fmt.Errorf("%w: --tracker-peer-lifetime %v must exceed --tracker-interval %v, or every peer expires before it re-announces", ErrConfig, c.PeerLifetime, c.Interval)
	case c.MaxNumWant < 1:
		return fmt.Errorf("%w: --tracker-max-numwant %d must be at least 1", ErrConfig, c.MaxNumWant)
	case c.MaxPeers < 1 || c.MaxPeersPerIP < 1 || c.MaxSwarms < 1:
		return fmt.Errorf("%w: --tracker-max-peers, --tracker-max-swarms and --tracker-max-peers-per-ip must be at least 1", ErrConfig)
	}
	return nil
}

// Refusals a BitTorrent client can see, worded for its user.
var (
	errNotTracked    = tracker.Refuse("this tracker does not track this torrent (it runs an allowlist; ask the operator to allow the info-hash)")
	errOtherAddress  = tracker.Refuse("this peer_id is already in the swarm from another address; restart the client to get a new peer_id, or announce with the key it first used")
	errTrackerFull   = tracker.Refuse("the tracker is full (--tracker-max-peers, --tracker-max-swarms); retry later")
	errTooManyFromIP = tracker.Refuse("too many swarm entries from your address (--tracker-max-peers-per-ip); stop some torrents or retry later")
)

// trackerBackend is the master as a tracker.Backend.
type trackerBackend struct{ m *Master }

// Announce implements tracker.Backend.
func (b trackerBackend) Announce(ctx context.Context, req *tracker.AnnounceRequest) (*tracker.AnnounceReply, error) {
	m := b.m
	ih, pid := fsm.InfoHash(req.InfoHash), fsm.SwarmPeerID(req.PeerID)
	if !m.fsm.TrackerAllowed(ih) {
		return nil, errNotTracked
	}
	ip := req.Addr.Addr().Unmap().As16()
	seeder := req.Left == 0 || req.Event == tracker.EventCompleted
	cur, present := m.fsm.SwarmPeer(ih, pid)
	if present && cur.IP != ip && !(req.HasKey && cur.HasKey && cur.Key == req.Key) {
		// Checked again by the FSM when the change applies; refusing
		// here saves the round trip to the leader.
		return nil, errOtherAddress
	}
	// An explicit event (started, completed, stopped) always goes to the
	// leader: this master's index may lag, and deciding from it would
	// answer a stopped for a peer whose started it has not applied yet
	// without removing the peer (or renew a peer the leader has already
	// removed). The harness's tracker workload caught exactly that under
	// partitions. Only a regular re-announce is judged here: if this
	// master lists the peer unchanged it is a renewal, which is soft state
	// anyway.
	change := req.Event != tracker.EventNone ||
		!present || cur.IP != ip || cur.Port != req.Addr.Port() || cur.Seeder != seeder
	if change {
		ev := fsm.SwarmUpdate
		switch req.Event {
		case tracker.EventStopped:
			ev = fsm.SwarmStopped
		case tracker.EventCompleted:
			ev = fsm.SwarmCompleted
		}
		fwd := &client.TrackerAnnounceRequest{
			InfoHash: req.InfoHash, Peer: req.PeerID, IP: ip, Port: req.Addr.Port(),
			Key: req.Key, HasKey: req.HasKey, Event: uint8(ev), Seeder: seeder,
		}
		if _, err := m.relayAnnounce(ctx, fwd); err != nil {
			return nil, err
		}
	} else if present {
		m.renewSwarmPeer(ih, pid)
	}
	if req.Event == tracker.EventStopped || req.NumWant <= 0 {
		complete, incomplete, _ := m.fsm.Scrape(ih)
		return &tracker.AnnounceReply{Complete: complete, Incomplete: incomplete}, nil
	}
	peers, complete, incomplete := m.fsm.SwarmPeers(ih, pid, req.NumWant, seeder, rand.Uint64())
	out := &tracker.AnnounceReply{Complete: complete, Incomplete: incomplete, Peers: make([]tracker.Peer, len(peers))}
	for i, p := range peers {
		out.Peers[i] = tracker.Peer{ID: tracker.PeerID(p.Peer), Addr: netip.AddrPortFrom(netip.AddrFrom16(p.IP).Unmap(), p.Port)}
	}
	return out, nil
}

// Scrape implements tracker.Backend.
func (b trackerBackend) Scrape(_ context.Context, hashes []tracker.InfoHash) ([]tracker.ScrapeEntry, error) {
	out := make([]tracker.ScrapeEntry, len(hashes))
	for i, h := range hashes {
		c, inc, d := b.m.fsm.Scrape(fsm.InfoHash(h))
		out[i] = tracker.ScrapeEntry{Complete: c, Incomplete: inc, Downloaded: d}
	}
	return out, nil
}

// relayAnnounce runs a membership change at the leader and returns once it
// has committed. Refusals come back as tracker.Refusal (a stranger sees
// their words); other errors are internal.
func (m *Master) relayAnnounce(ctx context.Context, req *client.TrackerAnnounceRequest) (*client.WriteReply, error) {
	out, err := route(m, ctx, client.MethodTrackerAnnounce, req, &req.Forwarded, func(ctx context.Context) (*client.WriteReply, error) {
		return m.applyAnnounce(ctx, req)
	})
	return out, trackerError(err)
}

// handleTrackerAnnounce serves a membership change relayed by another
// master. Only masters may relay: the request vouches for a BitTorrent
// client's source address.
func (m *Master) handleTrackerAnnounce(ctx context.Context, req *client.TrackerAnnounceRequest) (*client.WriteReply, error) {
	if err := transport.Require(ctx, transport.RoleMaster); err != nil {
		return nil, err
	}
	if !req.Forwarded {
		return nil, fmt.Errorf("%w: a tracker announce must be relayed by a master", fsm.ErrInvalid)
	}
	if !m.IsLeader() {
		return nil, m.notLeader()
	}
	if !m.leaderReady() {
		return nil, fmt.Errorf("%w: this master was just elected and is catching up", transport.ErrBusy)
	}
	out, err := m.applyAnnounce(ctx, req)
	if err != nil {
		return nil, err
	}
	out.SetLeader(m.advertise)
	return out, nil
}

// applyAnnounce is the leader's half of a membership change: check the
// policy and quotas against its own index, renew the lease, propose, and
// wait for the commit.
func (m *Master) applyAnnounce(ctx context.Context, req *client.TrackerAnnounceRequest) (*client.WriteReply, error) {
	ih, pid := fsm.InfoHash(req.InfoHash), fsm.SwarmPeerID(req.Peer)
	if !m.fsm.TrackerAllowed(ih) {
		return nil, fsm.ErrNotTracked
	}
	if _, present := m.fsm.SwarmPeer(ih, pid); !present && fsm.SwarmEvent(req.Event) != fsm.SwarmStopped {
		swarms, peers := m.fsm.SwarmStats()
		if peers >= m.cfg.Tracker.MaxPeers {
			return nil, errTrackerFull
		}
		if swarms >= m.cfg.Tracker.MaxSwarms && !m.fsm.SwarmExists(ih) {
			return nil, errTrackerFull
		}
		if m.fsm.SwarmEntriesFrom(req.IP) >= m.cfg.Tracker.MaxPeersPerIP {
			return nil, errTooManyFromIP
		}
	}
	data, err := fsm.Encode(fsm.Announce{
		InfoHash: ih, Peer: pid, IP: req.IP, Port: req.Port, Key: req.Key, HasKey: req.HasKey,
		Event: fsm.SwarmEvent(req.Event), Seeder: req.Seeder, Time: m.clock.next(),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", fsm.ErrInvalid, err)
	}
	resp, idx, err := m.batcher.submit(ctx, data)
	if err != nil {
		return nil, err
	}
	if resp.Err != nil {
		return nil, resp.Err
	}
	return &client.WriteReply{Index: idx, Duplicate: resp.Duplicate}, nil
}

// trackerError turns what the index says about an announce into words a
// BitTorrent client's user can act on; nil stays nil, and errors that are
// not the client's doing pass through (the front-end logs them and sends
// a generic reason).
func trackerError(err error) error {
	var r *tracker.Refusal
	switch {
	case err == nil, errors.As(err, &r):
		return err
	case errors.Is(err, fsm.ErrNotTracked):
		return errNotTracked
	case errors.Is(err, fsm.ErrUnauthorized):
		return errOtherAddress
	case errors.Is(err, fsm.ErrInvalid):
		return tracker.Refuse("the announce is malformed: " + err.Error())
	}
	return err
}

// renewSwarmPeer is a re-announce that changed nothing: mark the record
// seen here, and let the leader know.
func (m *Master) renewSwarmPeer(ih fsm.InfoHash, pid fsm.SwarmPeerID) {
	m.fsm.TouchSwarmPeer(ih, pid, m.clock.read())
	if !m.IsLeader() {
		m.renewals.add(client.SwarmRef{InfoHash: ih, Peer: pid})
	}
}

// renewQueue holds the renewals a follower has not yet passed to the
// leader. It is bounded: past maxPendingRenewals, renewals are dropped
// (the peer's next re-announce renews it again, and its lifetime spans
// two intervals).
type renewQueue struct {
	mu      sync.Mutex
	pending map[client.SwarmRef]struct{}
	dropped uint64
}

const (
	maxPendingRenewals = 1 << 18
	renewFlushEvery    = time.Second
	renewBatch         = 4096 // about 170 KB on the wire
)

func (q *renewQueue) add(r client.SwarmRef) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pending == nil {
		q.pending = make(map[client.SwarmRef]struct{})
	}
	if len(q.pending) >= maxPendingRenewals {
		q.dropped++
		return
	}
	q.pending[r] = struct{}{}
}

func (q *renewQueue) take() []client.SwarmRef {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return nil
	}
	out := make([]client.SwarmRef, 0, len(q.pending))
	for r := range q.pending {
		out = append(out, r)
	}
	clear(q.pending)
	return out
}

// runRenewals passes queued renewals to the leader once a second until ctx
// ends. A batch that fails is dropped, not retried: renewals are soft
// state, and the peers re-announce well within their lifetime.
func (m *Master) runRenewals(ctx context.Context) {
	t := time.NewTicker(renewFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		refs := m.renewals.take()
		if len(refs) == 0 || m.IsLeader() {
			continue
		}
		_, addr := m.Leader()
		if addr == "" || addr == m.advertise {
			continue
		}
		for len(refs) > 0 {
			n := min(len(refs), renewBatch)
			cctx, cancel := context.WithTimeout(ctx, forwardAttemptTimeout)
			err := m.client.Call(cctx, addr, client.MethodTrackerRenew, &client.TrackerRenewRequest{Entries: refs[:n], Forwarded: true}, &struct{}{})
			cancel()
			if err != nil {
				m.logger.Debug("passing tracker renewals to the leader failed", "leader", addr, "renewals", len(refs), "err", err)
				break
			}
			refs = refs[n:]
		}
	}
}

// handleTrackerRenew renews the listed swarm entries on the leader.
func (m *Master) handleTrackerRenew(ctx context.Context, req *client.TrackerRenewRequest) (*struct{}, error) {
	if err := transport.Require(ctx, transport.RoleMaster); err != nil {
		return nil, err
	}
	if len(req.Entries) > renewBatch {
		return nil, fmt.Errorf("%w: %d renewals in one call, over %d", fsm.ErrInvalid, len(req.Entries), renewBatch)
	}
	if !m.IsLeader() {
		return nil, m.notLeader()
	}
	now := m.clock.read()
	for _, r := range req.Entries {
		m.fsm.TouchSwarmPeer(fsm.InfoHash(r.InfoHash), fsm.SwarmPeerID(r.Peer), now)
	}
	return &struct{}{}, nil
}

// expireSwarms runs while this master leads (ctx ends with the term): it
// proposes the expiry of swarm entries nobody has seen for PeerLifetime.
// since is when leadership began (monotonic): until a full lifetime has
// passed from then, nothing expires, because renewals went to the previous
// leader. Seen times and the expiry bound are on m.clock (clock.go).
func (m *Master) expireSwarms(ctx context.Context, since time.Time) {
	life := m.cfg.Tracker.PeerLifetime
	t := time.NewTicker(min(max(life/8, time.Second), 30*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(since) < life {
			continue
		}
		// Entries changed (by a committed announce) after before are
		// skipped by the FSM, so a peer that re-joined after the scan is
		// never dropped. A renewal that lands between the scan and the
		// commit is lost; that peer's next announce adds it back.
		before := m.clock.read() - int64(life)
		for ctx.Err() == nil {
			refs := m.fsm.SilentSwarmPeers(before, renewBatch)
			if len(refs) == 0 {
				break
			}
			data, err := fsm.Encode(fsm.ExpireSwarmPeers{Entries: refs, Time: before})
			if err != nil {
				m.logger.Error("encode swarm expiry", "err", err)
				return
			}
			resp, _, err := m.batcher.submit(ctx, data)
			if err == nil {
				err = resp.Err
			}
			if err != nil {
				m.logger.Warn("swarm expiry failed; retrying at the next tick", "entries", len(refs), "err", err)
				break
			}
			m.logger.Debug("expired silent swarm entries", "entries", resp.ExpiredSwarmPeers)
			if len(refs) < renewBatch {
				break
			}
		}
	}
}

// handleTrackerPolicy changes the tracker's replicated policy.
func (m *Master) handleTrackerPolicy(ctx context.Context, req *client.TrackerPolicyRequest) (*client.TrackerPolicyReply, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	cmd := fsm.TrackerPolicy{RequestID: req.RequestID}
	switch req.Mode {
	case "":
	case "open":
		cmd.SetMode, cmd.Mode = true, fsm.TrackerOpen
	case "allowlist":
		cmd.SetMode, cmd.Mode = true, fsm.TrackerAllowlist
	default:
		return nil, fmt.Errorf("%w: tracker mode %q: use open or allowlist", fsm.ErrInvalid, req.Mode)
	}
	var err error
	if cmd.Allow, err = parseInfoHashes(req.Allow); err != nil {
		return nil, err
	}
	if cmd.Deny, err = parseInfoHashes(req.Deny); err != nil {
		return nil, err
	}
	data, err := fsm.Encode(cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", fsm.ErrInvalid, err)
	}
	return route(m, ctx, client.MethodTrackerPolicy, req, &req.Forwarded, func(ctx context.Context) (*client.TrackerPolicyReply, error) {
		resp, idx, err := m.batcher.submit(ctx, data)
		if err != nil {
			return nil, err
		}
		if resp.Err != nil {
			return nil, resp.Err
		}
		out := m.trackerPolicyReply()
		out.Index = idx
		return out, nil
	})
}

// handleTrackerList returns the tracker's policy.
func (m *Master) handleTrackerList(ctx context.Context, req *client.TrackerListRequest) (*client.TrackerPolicyReply, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	return routeRead(m, ctx, client.MethodTrackerList, req, &req.ReadHeader, func() (*client.TrackerPolicyReply, error) {
		out := m.trackerPolicyReply()
		out.Index = m.fsm.AppliedIndex()
		return out, nil
	})
}

func (m *Master) trackerPolicyReply() *client.TrackerPolicyReply {
	mode, allow, deny := m.fsm.TrackerPolicyState()
	out := &client.TrackerPolicyReply{Mode: "open", Allow: hexHashes(allow), Deny: hexHashes(deny)}
	if mode == fsm.TrackerAllowlist {
		out.Mode = "allowlist"
	}
	out.Swarms, out.Peers = m.fsm.SwarmStats()
	return out
}

// ParseInfoHash parses 40 hex digits (either case) into an info-hash.
func ParseInfoHash(s string) (fsm.InfoHash, error) {
	var h fsm.InfoHash
	if len(s) != hex.EncodedLen(len(h)) {
		return h, fmt.Errorf("%w: info-hash %.50q is not 40 hex digits", fsm.ErrInvalid, s)
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("%w: info-hash %.50q is not 40 hex digits", fsm.ErrInvalid, s)
	}
	return h, nil
}

func parseInfoHashes(ss []string) ([]fsm.InfoHash, error) {
	out := make([]fsm.InfoHash, 0, len(ss))
	for _, s := range ss {
		h, err := ParseInfoHash(s)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

func hexHashes(hs []fsm.InfoHash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = hex.EncodeToString(h[:])
	}
	return out
}
