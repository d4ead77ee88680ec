package master

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/hashicorp/raft"

	"fileshare/client"
)

// fakeReadRaft is a readRaft whose VerifyLeader rounds the test answers.
type fakeReadRaft struct {
	mu     sync.Mutex
	state  raft.RaftState
	term   uint64
	rounds []*fakeFuture
}

func (r *fakeReadRaft) VerifyLeader() raft.Future {
	f := &fakeFuture{done: make(chan struct{})}
	r.mu.Lock()
	r.rounds = append(r.rounds, f)
	r.mu.Unlock()
	return f
}

func (r *fakeReadRaft) State() raft.RaftState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

func (r *fakeReadRaft) CurrentTerm() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.term
}

func (r *fakeReadRaft) set(state raft.RaftState, term uint64) {
	r.mu.Lock()
	r.state, r.term = state, term
	r.mu.Unlock()
}

func (r *fakeReadRaft) round(i int) *fakeFuture {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rounds[i]
}

func (r *fakeReadRaft) roundCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.rounds)
}

var errTestNotLeader = errors.New("not leader (test)")

// newTestGate returns a gate over a fake raft that leads in term 1 and has
// passed its barrier.
func newTestGate() (*readGate, *fakeReadRaft) {
	r := &fakeReadRaft{state: raft.Leader, term: 1}
	g := newReadGate(r, func() error { return errTestNotLeader }, func(err error) error { return fmt.Errorf("mapped: %w", err) })
	g.markReady(1)
	return g, r
}

func readAsync(ctx context.Context, g *readGate, level client.ReadLevel) <-chan error {
	out := make(chan error, 1)
	go func() { out <- g.readAt(ctx, level) }()
	return out
}

func requirePending(t *testing.T, what string, chs ...<-chan error) {
	t.Helper()
	for i, ch := range chs {
		select {
		case err := <-ch:
			t.Fatalf("%s %d returned %v; it must still wait", what, i, err)
		default:
		}
	}
}

func TestReadsArrivingDuringARoundShareTheNextRoundNeverTheOneInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, r := newTestGate()
		first := readAsync(t.Context(), g, client.ReadLinearizable)
		synctest.Wait()
		if n := r.roundCount(); n != 1 {
			t.Fatalf("one read started %d rounds; want 1", n)
		}
		var later []<-chan error
		for range 10 {
			later = append(later, readAsync(t.Context(), g, client.ReadLinearizable))
		}
		synctest.Wait()
		if n := r.roundCount(); n != 1 {
			t.Fatalf("reads arriving during a round started %d rounds; want them to wait for the one in flight to end", n)
		}
		r.round(0).finish(nil)
		if err := <-first; err != nil {
			t.Fatalf("the read that started round 0 got %v; want nil", err)
		}
		synctest.Wait()
		requirePending(t, "a read that arrived during round 0", later...)
		if n := r.roundCount(); n != 2 {
			t.Fatalf("after round 0, %d rounds exist; want exactly one more for the waiting reads", n)
		}
		// A read arriving during round 1 waits for round 2.
		last := readAsync(t.Context(), g, client.ReadLinearizable)
		synctest.Wait()
		if n := r.roundCount(); n != 2 {
			t.Fatalf("%d rounds with round 1 in flight; want 2 (at most two at once)", n)
		}
		r.round(1).finish(nil)
		for i, ch := range later {
			if err := <-ch; err != nil {
				t.Fatalf("read %d confirmed by round 1 got %v; want nil", i, err)
			}
		}
		synctest.Wait()
		requirePending(t, "the read that arrived during round 1", last)
		r.round(2).finish(raft.ErrLeadershipLost)
		if err := <-last; !errors.Is(err, raft.ErrLeadershipLost) || err.Error() != "mapped: "+raft.ErrLeadershipLost.Error() {
			t.Fatalf("a read whose round failed got %v; want the round's error through raftError", err)
		}
		synctest.Wait()
		if n := r.roundCount(); n != 3 {
			t.Fatalf("%d rounds after the last read; want no round without a reader", n)
		}
	})
}

func TestAReadWhoseCallerGivesUpReturnsWithoutItsRound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, r := newTestGate()
		ctx, cancel := context.WithCancel(t.Context())
		read := readAsync(ctx, g, client.ReadLinearizable)
		synctest.Wait()
		cancel()
		if err := <-read; !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v; want context.Canceled", err)
		}
		r.round(0).finish(nil)
	})
}

func TestALinearizableReadFailsIfTheTermMovedDuringItsRound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, r := newTestGate()
		read := readAsync(t.Context(), g, client.ReadLinearizable)
		synctest.Wait()
		// Leadership is lost and regained in a later term, barrier and all,
		// while the round is in flight.
		r.set(raft.Leader, 2)
		g.markReady(2)
		r.round(0).finish(nil)
		if err := <-read; !errors.Is(err, errTestNotLeader) {
			t.Fatalf("got %v; want not-leader: the round confirmed a term the read did not start in", err)
		}
	})
}

func TestLeaderAndLinearizableReadsNeedTheTermsBarrierStaleReadsNothing(t *testing.T) {
	for _, tc := range []struct {
		name       string
		state      raft.RaftState
		term       uint64
		ready      uint64 // 0: no markReady
		wantServed bool   // leader and linearizable reads pass
	}{
		{"leader past its barrier", raft.Leader, 3, 3, true},
		{"leader before its barrier", raft.Leader, 3, 0, false},
		{"leader whose barrier was in an earlier term", raft.Leader, 4, 3, false},
		{"follower that once led", raft.Follower, 3, 3, false},
		{"candidate", raft.Candidate, 3, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := &fakeReadRaft{state: tc.state, term: tc.term}
				g := newReadGate(r, func() error { return errTestNotLeader }, func(err error) error { return err })
				if tc.ready != 0 {
					g.markReady(tc.ready)
				}
				if err := g.readAt(t.Context(), client.ReadStale); err != nil {
					t.Errorf("stale read got %v; want nil everywhere", err)
				}
				if got := g.leaderReady(); got != tc.wantServed {
					t.Errorf("leaderReady() = %v, want %v", got, tc.wantServed)
				}
				for _, level := range []client.ReadLevel{client.ReadLeader, client.ReadLinearizable} {
					done := readAsync(t.Context(), g, level)
					synctest.Wait()
					if tc.wantServed && level == client.ReadLinearizable {
						r.round(0).finish(nil)
					}
					err := <-done
					if tc.wantServed && err != nil {
						t.Errorf("%s read got %v; want nil", level, err)
					}
					if !tc.wantServed && !errors.Is(err, errTestNotLeader) {
						t.Errorf("%s read got %v; want not-leader", level, err)
					}
				}
				if !tc.wantServed && r.roundCount() != 0 {
					t.Errorf("a refused read started %d VerifyLeader rounds; want 0", r.roundCount())
				}
			})
		})
	}
}

func TestReadinessNeverMovesBackToAnOlderTerm(t *testing.T) {
	r := &fakeReadRaft{state: raft.Leader, term: 5}
	g := newReadGate(r, func() error { return errTestNotLeader }, func(err error) error { return err })
	g.markReady(5)
	g.markReady(3) // a session of term 3 that finished late
	if !g.leaderReady() {
		t.Fatalf("readyTerm = %d after markReady(5), markReady(3); want 5", g.readyTerm.Load())
	}
}

func TestAnUnknownReadLevelIsRejected(t *testing.T) {
	g, _ := newTestGate()
	if err := g.readAt(t.Context(), client.ReadLevel("sometimes")); !errors.Is(err, client.ErrBadReadLevel) {
		t.Fatalf("got %v; want ErrBadReadLevel", err)
	}
}
