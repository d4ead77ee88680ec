package master

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/transport"
)

// Batched membership changes, end to end.
//
// A follower queues the changes its BitTorrent clients send (relay) and
// passes them to the leader many per call (MethodTrackerAnnounceBatch); the
// leader queues them with its own clients' changes (announcer) and packs
// every pending change into one fsm.AnnounceBatch, so one log entry, one
// fsync on a majority and one pass of Apply acknowledge hundreds of
// clients. Each client is still answered only after its own change
// committed, with its own result.
//
// Both queues work like the group commit of batcher.go: a few batches are
// out at once, and while they are, new changes queue up and leave together
// as the next batch. The relay allows more batches out than the announcer:
// each of its calls waits for a commit, and a change that waits for a free
// call adds that wait to its latency; the leader's batcher packs what the
// announcer proposes concurrently into one entry anyway.
//
// Before proposing, the leader asks its FSM what each change would do
// (fsm.AnnounceChanges): a refusal is answered at once, and a change that
// changes nothing (a stopped for a peer that is not there, a started the
// swarm already holds) is answered without a log entry, after a
// VerifyLeader round that began after it arrived, so that a deposed leader
// never acknowledges from a stale index.

const (
	announcerInflight = 8    // the leader's AnnounceBatch proposals out at once
	relayInflight     = 16   // a follower's relay calls out at once
	announceQueued    = 8192 // changes waiting for a batch, per queue
)

// pendingAnnounce is one change waiting for its outcome.
type pendingAnnounce struct {
	a    fsm.Announce
	priv *privReport         // set for an announce to a private tracker (private_tracker.go)
	done chan announceResult // buffered(1); receives exactly one result
}

type announceResult struct {
	index uint64 // 0: committed nothing (refused, or nothing to change)
	err   error
}

func (p *pendingAnnounce) answer(idx uint64, err error) { p.done <- announceResult{idx, err} }

// wait returns p's outcome, or ErrUnknownOutcome if ctx ends first.
func (p *pendingAnnounce) wait(ctx context.Context) (uint64, error) {
	select {
	case r := <-p.done:
		return r.index, r.err
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: %w", transport.ErrUnknownOutcome, ctx.Err())
	}
}

// announceQueue collects changes into batches for handle, which must
// answer every change of its batch. run must be running for submitted
// changes to make progress.
type announceQueue struct {
	q      chan *pendingAnnounce
	tokens chan struct{}
	max    int
	handle func(ctx context.Context, batch []*pendingAnnounce)
}

func newAnnounceQueue(max, inflight int, handle func(context.Context, []*pendingAnnounce)) *announceQueue {
	return &announceQueue{
		q:      make(chan *pendingAnnounce, announceQueued),
		tokens: make(chan struct{}, inflight),
		max:    max,
		handle: handle,
	}
}

// enqueue queues a; ErrBusy if ctx ends before there is room.
func (q *announceQueue) enqueue(ctx context.Context, a fsm.Announce) (*pendingAnnounce, error) {
	return q.enqueuePriv(ctx, a, nil)
}

// enqueuePriv is enqueue for an announce that may carry a private report.
func (q *announceQueue) enqueuePriv(ctx context.Context, a fsm.Announce, priv *privReport) (*pendingAnnounce, error) {
	p := &pendingAnnounce{a: a, priv: priv, done: make(chan announceResult, 1)}
	select {
	case q.q <- p:
		return p, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", transport.ErrBusy, ctx.Err())
	}
}

// submit queues a and waits for its outcome.
func (q *announceQueue) submit(ctx context.Context, a fsm.Announce, priv *privReport) (uint64, error) {
	p, err := q.enqueuePriv(ctx, a, priv)
	if err != nil {
		return 0, err
	}
	return p.wait(ctx)
}

// run forms batches until ctx ends, then fails what is still queued with
// ErrShuttingDown and waits for the batches it handed out.
func (q *announceQueue) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		batch, ok := nextBatch(ctx, q.tokens, q.q, func(batch []*pendingAnnounce) bool { return len(batch) < q.max })
		if !ok {
			q.drain()
			return
		}
		// Owned by run, which waits for it; handle answers every change
		// and returns once the batch's outcome is known (or ctx ended).
		wg.Go(func() {
			defer func() { <-q.tokens }()
			q.handle(ctx, batch)
		})
	}
}

func (q *announceQueue) drain() {
	for {
		select {
		case p := <-q.q:
			p.answer(0, transport.ErrShuttingDown)
		default:
			return
		}
	}
}

// proposeAnnounces is the leader's announcer: it answers refusals and
// no-ops, and proposes the rest as one AnnounceBatch.
func (m *Master) proposeAnnounces(ctx context.Context, batch []*pendingAnnounce) {
	if !m.leaderReady() {
		err := m.notLeader()
		for _, p := range batch {
			p.answer(0, err)
		}
		return
	}
	// The limits travel in the command and the FSM enforces them exactly,
	// in log order, whatever else is in flight: no announce goes over
	// them, and none that fits when it applies is refused. The check
	// here, on the applied index, refuses only announces that arrive at a
	// tracker already at a limit (one racing a stop still in flight is
	// refused as it would have been a moment earlier), so that a full
	// tracker costs no log entries.
	lim := m.cfg.Tracker.swarmLimits()
	var changes, noops []*pendingAnnounce
	for _, p := range batch {
		change, err := m.fsm.AnnounceChanges(p.a, &lim)
		switch {
		case err != nil:
			p.answer(0, err)
		case change:
			changes = append(changes, p)
		default:
			noops = append(noops, p)
		}
	}
	var wg sync.WaitGroup
	changes, private := splitPrivate(changes)
	if len(private) > 0 {
		// Owned by this call, which waits for it below.
		wg.Go(func() { m.commitPrivate(ctx, private, lim) })
	}
	if len(noops) > 0 {
		// Owned by this call, which waits for it below.
		wg.Go(func() { m.answerNoops(ctx, noops) })
	}
	if len(changes) > 0 {
		m.commitAnnounces(ctx, changes, lim)
	}
	wg.Wait()
}

// commitAnnounces proposes changes as one AnnounceBatch and answers each
// with its own result once it applied.
func (m *Master) commitAnnounces(ctx context.Context, changes []*pendingAnnounce, lim fsm.SwarmLimits) {
	cmd := fsm.AnnounceBatch{Limits: lim, Announces: make([]fsm.Announce, len(changes))}
	for i, p := range changes {
		cmd.Announces[i] = p.a
	}
	cmd.Time = m.clock.next()
	m.proposeChanges(ctx, cmd, changes, 0, nil)
}

// proposeChanges proposes cmd and answers each of changes with its own
// result: cmd's results from first on are theirs, in order (the ones
// before are reports credited in the same entry). failed, if not nil, is
// called with the error before a whole failed batch is answered.
func (m *Master) proposeChanges(ctx context.Context, cmd fsm.Command, changes []*pendingAnnounce, first int, failed func(error)) {
	fail := func(err error) {
		if failed != nil {
			failed(err)
		}
		for _, p := range changes {
			p.answer(0, err)
		}
	}
	data, err := fsm.Encode(cmd)
	if err != nil {
		fail(fmt.Errorf("%w: %v", fsm.ErrInvalid, err))
		return
	}
	resp, idx, err := m.batcher.submit(ctx, data)
	switch {
	case err != nil:
		fail(err)
	case resp.Err != nil:
		fail(resp.Err)
	case m.batcher.ackBeforeCommit && len(resp.Results) == 0:
		// The deliberate fault (FaultAckBeforeCommit) acknowledges a write
		// before raft applies it, so there are no results yet: acknowledge
		// every change, as it does for every other write, for the harness
		// to catch.
		for _, p := range changes {
			p.answer(idx, nil)
		}
	case len(resp.Results) != first+len(changes):
		fail(fmt.Errorf("%w: %s response has %d results for %d announces", transport.ErrInternal, cmd.Type(), len(resp.Results), first+len(changes)))
	default:
		for i, p := range changes {
			if err := resp.Results[first+i].Err; err != nil {
				p.answer(0, err)
			} else {
				p.answer(idx, nil)
			}
		}
	}
}

// answerNoops answers changes that change nothing, once a VerifyLeader
// round that began after they arrived confirmed this master still leads:
// then every change acknowledged before they arrived is in this index, and
// "nothing to change" is a linearizable answer. A change that became one
// meanwhile is answered ErrBusy, and its client's master retries it.
func (m *Master) answerNoops(ctx context.Context, noops []*pendingAnnounce) {
	err := m.reads.readAt(ctx, client.ReadLinearizable)
	now := m.clock.read()
	privateMode := m.fsm.TrackerModeNow() == fsm.TrackerPrivate
	for _, p := range noops {
		if err != nil {
			p.answer(0, err)
			continue
		}
		if change, cerr := m.fsm.AnnounceChanges(p.a, nil); cerr != nil || change {
			p.answer(0, fmt.Errorf("%w: the swarm changed while the announce waited; retry", transport.ErrBusy))
			continue
		}
		if p.a.Event != fsm.SwarmStopped {
			m.fsm.TouchSwarmPeer(p.a.InfoHash, p.a.Peer, p.a.IP, now)
			if p.priv != nil && privateMode {
				m.credits.add(p.a, p.priv) // nothing to change, but counters to credit
			}
		}
		p.answer(0, nil)
	}
}

// relayAnnounces is a follower's relay: it passes a batch of changes to
// the leader in one call and answers each with its own outcome. A failed
// call fails every change with its error; retryable ones are retried by
// their callers (relayAnnounce), against whichever master leads by then.
func (m *Master) relayAnnounces(ctx context.Context, batch []*pendingAnnounce) {
	fail := func(err error) {
		for _, p := range batch {
			p.answer(0, err)
		}
	}
	_, addr := m.Leader()
	if m.IsLeader() || addr == "" || addr == m.advertise {
		fail(transport.ErrNoLeader)
		return
	}
	req := &client.TrackerAnnounceBatchRequest{Announces: make([]client.TrackerAnnounceRequest, len(batch)), Forwarded: true}
	for i, p := range batch {
		req.Announces[i] = relayedOf(&p.a)
		req.Announces[i].Priv = p.priv.bytes()
	}
	var out client.TrackerAnnounceBatchReply
	cctx, cancel := context.WithTimeout(ctx, forwardAttemptTimeout)
	err := m.client.Call(cctx, addr, client.MethodTrackerAnnounceBatch, req, &out)
	cancel()
	switch {
	case err != nil:
		fail(err)
	case len(out.Results) != len(batch):
		fail(fmt.Errorf("%w: the leader answered %d of %d relayed announces", transport.ErrInternal, len(out.Results), len(batch)))
	default:
		for i, p := range batch {
			r := out.Results[i]
			if r.Code != "" {
				p.answer(0, &transport.RemoteError{WireCode: r.Code, Message: r.Message})
			} else {
				p.answer(r.Index, nil)
			}
		}
	}
}

// connIDCache holds a copy of the cluster's UDP connection-ID secrets for
// the per-packet path. A copy up to connIDRefresh old is harmless: a new
// secret is accepted for a whole rotation before any master signs with it
// (fsm.FSM.ConnIDSecrets).
type connIDCache struct {
	p atomic.Pointer[connIDCopy]
}

type connIDCopy struct {
	at      time.Time
	secrets [][]byte
}

// connIDRefresh is how stale the copy may be. Only when a cluster gets its
// first secret may IDs a master signed with its own process secret in
// that second be refused once; the client then connects again (BEP 15).
const connIDRefresh = time.Second

func (c *connIDCache) get(f *fsm.FSM) [][]byte {
	if cp := c.p.Load(); cp != nil && time.Since(cp.at) < connIDRefresh {
		return cp.secrets
	}
	s, _ := f.ConnIDSecrets()
	c.p.Store(&connIDCopy{at: time.Now(), secrets: s})
	return s
}

// connIDRotateEvery is how often the leader adds a connection-ID secret.
// Each secret is accepted for one rotation, signs for the next, and is
// accepted for one more: far longer than the two minutes BEP 15 lets a
// client use an ID.
const connIDRotateEvery = 6 * time.Hour

// maintainConnIDSecret runs while this master leads (ctx ends with the
// term): it proposes connection-ID secrets until the cluster has two (one
// to sign with, the next one), and a new one every connIDRotateEvery. The
// secret is random bytes carried in the command, so the FSM stays
// deterministic. A proposal that races another is ignored by the FSM
// (SetConnIDSecret.After).
func (m *Master) maintainConnIDSecret(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if have, newest := m.fsm.ConnIDSecrets(); len(have) < 2 || m.clock.read()-newest >= int64(connIDRotateEvery) {
			secret := make([]byte, fsm.ConnIDSecretSize)
			rand.Read(secret)
			data, err := fsm.Encode(fsm.SetConnIDSecret{Secret: secret, After: newest, Time: max(m.clock.next(), newest+1)})
			if err == nil {
				var resp fsm.Response
				resp, _, err = m.batcher.submit(ctx, data)
				if err == nil {
					err = resp.Err
				}
			}
			if err != nil && ctx.Err() == nil {
				m.logger.Warn("setting the UDP connection-ID secret failed; retrying in a minute", "err", err)
			} else if err == nil {
				m.logger.Info("UDP connection-ID secret added", "secrets_before", len(have))
				continue // check again at once: the first needs a next one
			}
		}
		if !nextTick(ctx, t) {
			return
		}
	}
}
