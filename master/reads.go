package master

import (
	"context"
	"fileshare/client"
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

// verifier coalesces VerifyLeader rounds for linearizable reads.
//
// A read must be confirmed by a quorum round that *starts after the read
// arrived*; otherwise a deposed leader could answer from a confirmation
// older than the write that deposed it. So a read joins the next round that
// has not started yet: while one round is in flight, every arriving read
// waits for the single round queued behind it. However many reads arrive,
// at most two rounds exist at once and each costs one heartbeat exchange.
type verifier struct {
	r    *raft.Raft
	mu   sync.Mutex
	busy bool
	next *verifyRound
}

type verifyRound struct {
	done chan struct{}
	err  error
}

func newVerifier(r *raft.Raft) *verifier { return &verifier{r: r} }

// confirm waits for a quorum round that began after the call: if it
// succeeds, this node was the leader at some instant after confirm was
// called.
func (v *verifier) confirm(ctx context.Context) error {
	v.mu.Lock()
	if v.next == nil {
		v.next = &verifyRound{done: make(chan struct{})}
	}
	round := v.next
	if !v.busy {
		v.startLocked()
	}
	v.mu.Unlock()
	select {
	case <-round.done:
		return round.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (v *verifier) startLocked() {
	round := v.next
	v.next = nil
	v.busy = true
	go func() {
		round.err = v.r.VerifyLeader().Error()
		close(round.done)
		v.mu.Lock()
		v.busy = false
		if v.next != nil {
			v.startLocked()
		}
		v.mu.Unlock()
	}()
}

// readAt prepares a local read at level: nothing for stale; leader and
// linearizable reads must run on a leader that has passed its term's
// barrier; linearizable reads also wait for a quorum round that began after
// the read arrived.
//
// Why no wait for the FSM to reach the read index: on a leader past its
// barrier, every write acknowledged before the read began is already in
// this FSM. A write acknowledged by an earlier leader committed before our
// barrier, which our FSM applied before the barrier completed; a write
// acknowledged in this term was acknowledged by this FSM's own Apply. The
// quorum round rules out a newer leader that acknowledged writes we lack.
// (Waiting on an index would also be unsound here: raft hands the FSM
// neither its no-op nor barrier entries, so the FSM's index can sit below
// the commit index forever on an idle cluster.)
func (m *Master) readAt(ctx context.Context, level client.ReadLevel) error {
	switch level {
	case client.ReadStale:
		return nil
	case client.ReadLeader:
		if !m.leaderReady() {
			return m.notLeader()
		}
		return nil
	case client.ReadLinearizable:
		if !m.leaderReady() {
			return m.notLeader()
		}
		term := m.raft.CurrentTerm()
		if err := m.verifier.confirm(ctx); err != nil {
			return m.raftError(err)
		}
		if !m.leaderReady() || m.raft.CurrentTerm() != term {
			return m.notLeader()
		}
		return nil
	}
	return fmt.Errorf("%w: %q", client.ErrBadReadLevel, level)
}

// routeRead runs a read at the requested level: stale reads locally on any
// master, the others on the leader (forwarded if need be).
func routeRead[Req, Resp any](m *Master, ctx context.Context, method string, req *Req, hdr *client.ReadHeader, local func() (*Resp, error)) (*Resp, error) {
	level, err := client.ParseReadLevel(string(hdr.Level))
	if err != nil {
		return nil, err
	}
	hdr.Level = level
	if level == client.ReadStale || m.cfg.Fault == FaultStaleReads {
		return local()
	}
	return route(m, ctx, method, req, &hdr.Forwarded, func(ctx context.Context) (*Resp, error) {
		if err := m.readAt(ctx, level); err != nil {
			return nil, err
		}
		return local()
	})
}
