package master

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/transport"
)

// renewSwarmPeer is a re-announce that changed nothing: mark the record
// seen here, and let the leader know.
func (m *Master) renewSwarmPeer(ih fsm.InfoHash, pid fsm.SwarmPeerID, ip [16]byte) {
	m.fsm.TouchSwarmPeer(ih, pid, ip, m.clock.read())
	if !m.IsLeader() {
		m.renewals.add(client.SwarmRef{InfoHash: ih, Peer: pid, IP: ip})
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
	out := slices.Collect(maps.Keys(q.pending))
	clear(q.pending)
	return out
}

// runRenewals passes queued renewals to the leader once a second until ctx
// ends. A batch that fails is dropped, not retried: renewals are soft
// state, and the peers re-announce well within their lifetime.
//
// It also runs the announce queues (trackerbatch.go) until ctx ends.
func (m *Master) runRenewals(ctx context.Context) {
	announcer, relay := m.announceQueues()
	var queues sync.WaitGroup
	defer queues.Wait()
	queues.Go(func() { announcer.run(ctx) })
	queues.Go(func() { relay.run(ctx) })
	t := time.NewTicker(renewFlushEvery)
	defer t.Stop()
	for nextTick(ctx, t) {
		m.flushCredits(ctx)
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
	if len(req.Entries) > renewBatch || len(req.Credits) > renewBatch {
		return nil, fmt.Errorf("%w: %d renewals in one call, over %d", fsm.ErrInvalid, len(req.Entries), renewBatch)
	}
	if !m.IsLeader() {
		return nil, m.notLeader()
	}
	now := m.clock.read()
	for _, r := range req.Entries {
		m.fsm.TouchSwarmPeer(fsm.InfoHash(r.InfoHash), fsm.SwarmPeerID(r.Peer), r.IP, now)
	}
	m.credits.addRelayed(req.Credits)
	return &struct{}{}, nil
}

// expireSwarms runs while this master leads (ctx ends with the term): it
// proposes the expiry of swarm entries nobody has seen for PeerLifetime,
// and the end of swarms that stayed empty for EmptySwarmLifetime; it also
// keeps the UDP connection-ID secret (maintainConnIDSecret). since is when
// leadership began (monotonic): until a full lifetime has passed from
// then, no entry expires, because renewals went to the previous leader.
// Seen times and the expiry bound are on m.clock (clock.go).
func (m *Master) expireSwarms(ctx context.Context, since time.Time) {
	var secrets sync.WaitGroup
	defer secrets.Wait()
	// Owned by this call, which waits for it; it ends with ctx.
	secrets.Go(func() { m.maintainConnIDSecret(ctx) })
	life := m.cfg.Tracker.PeerLifetime
	t := time.NewTicker(min(max(life/8, time.Second), 30*time.Second))
	defer t.Stop()
	for nextTick(ctx, t) {
		m.expireEmptySwarms(ctx)
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
			if !m.proposeExpiry(ctx, fsm.ExpireSwarmPeers{Entries: refs, Time: before}) || len(refs) < renewBatch {
				break
			}
		}
	}
}

// expireEmptySwarms proposes the end of swarms that have had no entry for
// EmptySwarmLifetime. Their emptied time is replicated (a command's Time),
// so this needs no grace period after an election.
func (m *Master) expireEmptySwarms(ctx context.Context) {
	before := m.clock.read() - int64(m.cfg.Tracker.EmptySwarmLifetime)
	for ctx.Err() == nil {
		hs := m.fsm.EmptySwarms(before, renewBatch)
		if len(hs) == 0 || !m.proposeExpiry(ctx, fsm.ExpireSwarmPeers{Swarms: hs, Time: before}) || len(hs) < renewBatch {
			return
		}
	}
}

// proposeExpiry commits one swarm expiry and reports whether it did.
func (m *Master) proposeExpiry(ctx context.Context, c fsm.ExpireSwarmPeers) bool {
	data, err := fsm.Encode(c)
	if err != nil {
		m.logger.Error("encode swarm expiry", "err", err)
		return false
	}
	resp, _, err := m.batcher.submit(ctx, data)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		m.logger.Warn("swarm expiry failed; retrying at the next tick", "entries", len(c.Entries), "swarms", len(c.Swarms), "err", err)
		return false
	}
	m.logger.Debug("expired silent swarm entries and empty swarms", "removed", resp.ExpiredSwarmPeers)
	return true
}
