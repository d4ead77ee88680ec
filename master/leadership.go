package master

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// watchLeadership drains raft's NotifyCh (an unread NotifyCh would block
// raft) and runs a leader session for each term this master leads. It owns
// the sessions: each is cancelled when leadership changes, and it waits for
// all of them before it returns, once m.ctx ends.
func (m *Master) watchLeadership() {
	var sessions sync.WaitGroup
	defer sessions.Wait()
	var cancel context.CancelFunc
	stop := func() {
		if cancel != nil {
			cancel()
			cancel = nil
		}
	}
	defer stop()
	for {
		select {
		case isLeader := <-m.notifyCh:
			stop()
			if isLeader {
				ctx, c := context.WithCancel(m.ctx)
				cancel = c
				// Only this goroutine calls sessions.Go, and it calls
				// sessions.Wait only after its last Go.
				sessions.Go(func() { m.leaderSession(ctx) })
			}
		case <-m.ctx.Done():
			return
		}
	}
}

// leaderSession runs while this master leads, until ctx ends: it waits for
// a Barrier so the FSM holds every entry of earlier terms (only then may
// reads be served here), gives every peer a full lease, and expires silent
// peers.
func (m *Master) leaderSession(ctx context.Context) {
	m.logger.Info("became leader; waiting for barrier before serving reads")
	var term uint64
	for {
		term = m.raft.CurrentTerm()
		err := m.barrier(ctx)
		if err == nil && m.raft.CurrentTerm() == term {
			break
		}
		if ctx.Err() != nil || m.raft.State() != raft.Leader {
			return
		}
		m.logger.Warn("barrier failed; retrying", "err", err)
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return
		}
	}
	if ctx.Err() != nil {
		return // leadership moved on while the barrier completed
	}
	// Re-anchor the command clock on this master's wall clock, never
	// before what the FSM has applied, and give every swarm record a full
	// lifetime on it (clock.go). Lease ages are monotonic.
	m.clock.anchor()
	m.fsm.TouchAllSwarmPeers(m.clock.read())
	since := time.Now()
	m.leases.reset(since)
	m.reads.markReady(term)
	m.logger.Info("leader ready", "applied_index", m.fsm.AppliedIndex())
	// Owned by this session, which waits for it; it ends with ctx.
	var ap sync.WaitGroup
	defer ap.Wait()
	ap.Go(func() { m.runAutopilot(ctx) })
	var expiries sync.WaitGroup
	defer expiries.Wait()
	expiries.Go(func() { m.expireSwarms(ctx, since) })
	m.expirer.run(ctx)
}

// barrier runs a raft Barrier and waits for it to apply, or for ctx to end.
// A barrier future carries no shutdown channel, so one that raft never
// answers (seen once under load, as raft stopped) would otherwise hold the
// leader session, and with it Close, for good. The goroutine waiting on the
// future ends when raft answers it.
func (m *Master) barrier(ctx context.Context) error {
	f := m.raft.Barrier(m.cfg.ApplyTimeout)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// leaderReady reports whether this master leads and its FSM has caught up
// with its term's barrier.
func (m *Master) leaderReady() bool { return m.reads.leaderReady() }
