package master

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"fileshare/fsm"
)

// leaseTable is the leader's soft state of peer liveness: when each peer
// was last heard from. It never enters the Raft log; a new leader starts
// it afresh and so gives every peer a full lease. It reads no clock: every
// method takes the time. Safe for concurrent use.
type leaseTable struct {
	mu    sync.Mutex
	start time.Time // when this leadership's table began
	seen  map[fsm.PeerID]time.Time
}

func newLeaseTable() *leaseTable { return &leaseTable{seen: make(map[fsm.PeerID]time.Time)} }

// reset starts a new leadership's table at now: every peer's lease runs
// from now, whatever was heard before.
func (t *leaseTable) reset(now time.Time) {
	t.mu.Lock()
	t.start = now
	t.seen = make(map[fsm.PeerID]time.Time)
	t.mu.Unlock()
}

// touch records a sign of life from p at now (a heartbeat or a write).
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

// forget drops the entries of peers that have left the index.
func (t *leaseTable) forget(ids []fsm.PeerID) {
	t.mu.Lock()
	for _, id := range ids {
		delete(t.seen, id)
	}
	t.mu.Unlock()
}

// maxExpirePerCommand bounds the peers one ExpirePeers command names
// (fsm.MaxPeersPerExpire is the FSM's limit).
const maxExpirePerCommand = 4096

// expirer is the leader's expiry loop: it turns a lease table and the
// index's peer list into ExpirePeers proposals. Its dependencies are
// functions so a test can run it alone.
type expirer struct {
	leases *leaseTable
	// peers lists the peers in the local index.
	peers func() []fsm.PeerInfo
	// propose commits one encoded command and returns its response; it
	// must return once ctx ends.
	propose func(ctx context.Context, data []byte) (fsm.Response, error)
	// now is the monotonic clock lease ages are measured on (time.Now);
	// cmdTime gives each ExpirePeers its Time (cmdClock.next).
	now     func() time.Time
	cmdTime func() int64
	lease   time.Duration // how long a silent peer keeps its place
	timeout time.Duration // bounds each proposal
	logger  *slog.Logger
}

// run proposes, a few times per lease, one batched ExpirePeers command (or
// several of at most maxExpirePerCommand peers) for every peer silent
// longer than the lease. A proposal that fails is retried at the next
// tick. It blocks until ctx ends; the leader session calls it after
// resetting the lease table.
func (e *expirer) run(ctx context.Context) {
	every := max(e.lease/4, 50*time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for nextTick(ctx, tick) {
		if err := e.expire(ctx, e.now()); err != nil {
			e.logger.Error("encode expire command; expiry stops until the next leadership", "err", err)
			return
		}
	}
}

// expire proposes expiry of every peer silent at now, stopping at the
// first proposal that fails (the next tick retries). It returns an error
// only if it cannot encode a command, which no later tick would fix.
func (e *expirer) expire(ctx context.Context, now time.Time) error {
	silent := e.leases.silent(e.peers(), now, e.lease)
	for len(silent) > 0 {
		n := min(len(silent), maxExpirePerCommand)
		batch := silent[:n]
		silent = silent[n:]
		data, err := fsm.Encode(fsm.ExpirePeers{Peers: batch, Time: e.cmdTime()})
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, e.timeout)
		resp, err := e.propose(wctx, data)
		cancel()
		if err != nil {
			e.logger.Warn("expire silent peers failed; will retry", "peers", len(batch), "err", err)
			return nil
		}
		e.leases.forget(resp.Expired)
		e.logger.Info("expired silent peers", "peers", resp.Expired, "lease", e.lease)
	}
	return nil
}
