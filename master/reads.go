package master

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"fileshare/client"
)

// leaderVerifier is the raft call the verifier makes. *raft.Raft
// implements it. VerifyLeader must return at once; its future is answered
// once a quorum round has confirmed (or refuted) this node's leadership.
type leaderVerifier interface {
	VerifyLeader() raft.Future
}

// readRaft is what read gating needs from raft. *raft.Raft implements it.
type readRaft interface {
	leaderVerifier
	State() raft.RaftState
	CurrentTerm() uint64
}

// verifier coalesces VerifyLeader rounds for linearizable reads.
//
// A read must be confirmed by a quorum round that *starts after the read
// arrived*; otherwise a deposed leader could answer from a confirmation
// older than the write that deposed it. So a read joins the next round that
// has not started yet: while one round is in flight, every arriving read
// waits for the single round queued behind it. However many reads arrive,
// at most two rounds exist at once and each costs one heartbeat exchange.
type verifier struct {
	r    leaderVerifier
	mu   sync.Mutex
	busy bool         // a round is in flight
	next *verifyRound // the round not yet started, if any read waits for it
}

type verifyRound struct {
	done chan struct{} // closed when err is set
	err  error
}

func newVerifier(r leaderVerifier) *verifier { return &verifier{r: r} }

// confirm waits for a quorum round that began after the call: if it
// succeeds, this node was the leader at some instant after confirm was
// called. It returns the round's error (raft's, unmapped), or ctx's error
// if ctx ends first. Safe for concurrent use.
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

// startLocked starts v.next as the round in flight. v.mu must be held.
func (v *verifier) startLocked() {
	round := v.next
	v.next = nil
	v.busy = true
	// Owned by the verifier; at most one exists at a time (busy). It ends
	// when raft answers VerifyLeader, after starting the round queued
	// behind it, if any. A round still queued inside raft when raft shuts
	// down is never answered; its goroutine then blocks forever, and its
	// readers return on their ctx.
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

// readGate decides whether this master may serve a read at a given level.
// It owns the leader's readiness: the term in which this master, as
// leader, saw its Barrier complete. Its methods are safe for concurrent
// use.
type readGate struct {
	r        readRaft
	verifier *verifier
	// notLeader returns the error for "not the leader" (naming the
	// leader if known); raftError maps an error from a raft future.
	notLeader func() error
	raftError func(error) error

	// readyTerm is the term in which this master, as leader, saw its
	// Barrier complete: from then on its FSM holds every entry committed
	// before the term began. Leader reads are served only while the
	// current term equals readyTerm.
	readyTerm atomic.Uint64
}

func newReadGate(r readRaft, notLeader func() error, raftError func(error) error) *readGate {
	return &readGate{r: r, verifier: newVerifier(r), notLeader: notLeader, raftError: raftError}
}

// markReady records that this master's FSM has applied the barrier it
// issued as leader in term. readyTerm never moves backwards, so a late
// call for an older term (a leader session that lost the race with its
// successor) cannot un-ready a newer one.
func (g *readGate) markReady(term uint64) {
	for {
		cur := g.readyTerm.Load()
		if term <= cur || g.readyTerm.CompareAndSwap(cur, term) {
			return
		}
	}
}

// leaderReady reports whether this master leads and its FSM has caught up
// with its term's barrier.
func (g *readGate) leaderReady() bool {
	return g.r.State() == raft.Leader && g.readyTerm.Load() == g.r.CurrentTerm()
}

// readAt prepares a local read at level: nothing for stale; leader and
// linearizable reads must run on a leader that has passed its term's
// barrier; linearizable reads also wait for a quorum round that began after
// the read arrived, and fail if the term moved meanwhile. It blocks at most
// until ctx ends.
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
func (g *readGate) readAt(ctx context.Context, level client.ReadLevel) error {
	switch level {
	case client.ReadStale:
		return nil
	case client.ReadLeader:
		if !g.leaderReady() {
			return g.notLeader()
		}
		return nil
	case client.ReadLinearizable:
		if !g.leaderReady() {
			return g.notLeader()
		}
		term := g.r.CurrentTerm()
		if err := g.verifier.confirm(ctx); err != nil {
			return g.raftError(err)
		}
		if !g.leaderReady() || g.r.CurrentTerm() != term {
			return g.notLeader()
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
		if err := m.reads.readAt(ctx, level); err != nil {
			return nil, err
		}
		return local()
	})
}
