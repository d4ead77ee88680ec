package master

import (
	"context"
	"sync"
	"time"

	"fileshare/fsm"
)

// leaseTable is the leader's soft state of peer liveness: when each peer
// was last heard from. It never enters the Raft log; a new leader starts
// it afresh and so gives every peer a full lease.
type leaseTable struct {
	mu    sync.Mutex
	start time.Time // when this leadership's table began
	seen  map[fsm.PeerID]time.Time
}

func newLeaseTable() *leaseTable { return &leaseTable{seen: make(map[fsm.PeerID]time.Time)} }

func (t *leaseTable) reset(now time.Time) {
	t.mu.Lock()
	t.start = now
	t.seen = make(map[fsm.PeerID]time.Time)
	t.mu.Unlock()
}

func (t *leaseTable) touch(p fsm.PeerID, now time.Time) {
	t.mu.Lock()
	t.seen[p] = now
	t.mu.Unlock()
}

// silent returns the peers among all whose last sign of life (or, if never
// heard from in this leadership, the leadership's start) is older than
// lease at now.
func (t *leaseTable) silent(all []fsm.PeerInfo, now time.Time, lease time.Duration) []fsm.PeerID {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []fsm.PeerID
	for _, p := range all {
		last, ok := t.seen[p.ID]
		if !ok {
			last = t.start
		}
		if now.Sub(last) > lease {
			out = append(out, p.ID)
		}
	}
	return out
}

func (t *leaseTable) forget(ids []fsm.PeerID) {
	t.mu.Lock()
	for _, id := range ids {
		delete(t.seen, id)
	}
	t.mu.Unlock()
}

// expireLoop runs on the leader: a few times per lease it proposes one
// batched ExpirePeers command for every peer silent longer than the lease.
func (m *Master) expireLoop(ctx context.Context) {
	every := max(m.cfg.PeerLease/4, 50*time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := m.cfg.Now()
		silent := m.leases.silent(m.fsm.Peers(), now, m.cfg.PeerLease)
		if len(silent) == 0 {
			continue
		}
		const maxPerCommand = 4096
		for len(silent) > 0 {
			n := min(len(silent), maxPerCommand)
			batch := silent[:n]
			silent = silent[n:]
			data, err := fsm.Encode(fsm.ExpirePeers{Peers: batch, Time: now.UnixNano()})
			if err != nil {
				m.logger.Error("encode expire command", "err", err)
				return
			}
			wctx, cancel := context.WithTimeout(ctx, m.cfg.ApplyTimeout)
			resp, _, err := m.batcher.submit(wctx, data)
			cancel()
			if err != nil {
				m.logger.Warn("expire silent peers failed; will retry", "peers", len(batch), "err", err)
				break
			}
			m.leases.forget(resp.Expired)
			m.logger.Info("expired silent peers", "peers", resp.Expired, "lease", m.cfg.PeerLease)
		}
	}
}
