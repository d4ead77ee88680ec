package master

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"fileshare/fsm"
)

// proposal is one ExpirePeers the expirer proposed, and when.
type proposal struct {
	at  time.Time
	cmd fsm.ExpirePeers
}

// fakeIndex is the part of the FSM the expirer sees: a peer list that an
// accepted ExpirePeers shrinks.
type fakeIndex struct {
	mu        sync.Mutex
	peers     map[fsm.PeerID]bool
	proposals []proposal
	failNext  int // proposals to fail before accepting
}

func newFakeIndex(ids ...fsm.PeerID) *fakeIndex {
	x := &fakeIndex{peers: map[fsm.PeerID]bool{}}
	for _, id := range ids {
		x.peers[id] = true
	}
	return x
}

func (x *fakeIndex) list() []fsm.PeerInfo {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []fsm.PeerInfo
	for id := range x.peers {
		out = append(out, fsm.PeerInfo{ID: id})
	}
	return out
}

var errProposeFailed = errors.New("propose failed (test)")

func (x *fakeIndex) propose(_ context.Context, data []byte) (fsm.Response, error) {
	c, err := fsm.Decode(data)
	if err != nil {
		return fsm.Response{}, err
	}
	cmd := c.(fsm.ExpirePeers)
	x.mu.Lock()
	defer x.mu.Unlock()
	x.proposals = append(x.proposals, proposal{at: time.Now(), cmd: cmd})
	if x.failNext > 0 {
		x.failNext--
		return fsm.Response{}, errProposeFailed
	}
	var resp fsm.Response
	for _, id := range cmd.Peers {
		if x.peers[id] {
			delete(x.peers, id)
			resp.Expired = append(resp.Expired, id)
		}
	}
	slices.Sort(resp.Expired)
	return resp, nil
}

func (x *fakeIndex) proposed() []proposal {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.proposals)
}

// proposalsNaming returns the proposals that named id.
func proposalsNaming(ps []proposal, id fsm.PeerID) []proposal {
	var out []proposal
	for _, p := range ps {
		if slices.Contains(p.cmd.Peers, id) {
			out = append(out, p)
		}
	}
	return out
}

const testLease = time.Second

// startExpirer runs an expirer over x, as a leader session would: the
// lease table is reset first. It stops when the test ends.
func startExpirer(t *testing.T, x *fakeIndex, leases *leaseTable) (stop func()) {
	e := &expirer{
		leases:  leases,
		peers:   x.list,
		propose: x.propose,
		now:     time.Now,
		cmdTime: func() int64 { return time.Now().UnixNano() },
		lease:   testLease,
		timeout: time.Second,
		logger:  slog.New(slog.DiscardHandler),
	}
	leases.reset(time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.run(ctx); close(done) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func TestASilentPeerIsProposedForExpiryOnceAndAHeartbeatRenewsIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		x := newFakeIndex("silent", "beating")
		leases := newLeaseTable()
		start := time.Now()
		stop := startExpirer(t, x, leases)
		for range 20 { // 10 leases, a heartbeat every half lease
			time.Sleep(testLease / 2)
			leases.touch("beating", time.Now())
		}
		stop()
		ps := x.proposed()
		if got := proposalsNaming(ps, "beating"); len(got) != 0 {
			t.Fatalf("a peer that heartbeats every half lease was proposed for expiry %d times", len(got))
		}
		got := proposalsNaming(ps, "silent")
		if len(got) != 1 {
			t.Fatalf("a silent peer was proposed for expiry %d times; want once", len(got))
		}
		every := testLease / 4
		if at := got[0].at.Sub(start); at <= testLease || at > testLease+every {
			t.Fatalf("the silent peer was proposed %v after the lease began; want within (%v, %v]", at, testLease, testLease+every)
		}
		if got[0].cmd.Time != got[0].at.UnixNano() {
			t.Fatalf("the command carries time %d; want the leader's clock when it decided, %d", got[0].cmd.Time, got[0].at.UnixNano())
		}
		leases.mu.Lock()
		_, kept := leases.seen["silent"]
		leases.mu.Unlock()
		if kept {
			t.Fatal("the lease table still holds an entry for an expired peer")
		}
	})
}

func TestANewLeaderGivesEveryPeerAFullLease(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	peers := []fsm.PeerInfo{{ID: "old"}, {ID: "never"}}
	leases := newLeaseTable()
	leases.reset(t0)
	leases.touch("old", t0) // heard in an earlier leadership, long ago
	t1 := t0.Add(10 * testLease)
	leases.reset(t1) // a new leadership begins
	if got := leases.silent(peers, t1.Add(testLease), testLease); len(got) != 0 {
		t.Fatalf("peers %v counted silent exactly one lease into a new leadership; want none", got)
	}
	got := leases.silent(peers, t1.Add(testLease+time.Nanosecond), testLease)
	slices.Sort(got)
	if want := []fsm.PeerID{"never", "old"}; !slices.Equal(got, want) {
		t.Fatalf("silent just past a full lease: got %v, want %v", got, want)
	}
}

func TestANewLeaderExpiresNoPeerBeforeAFullLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		x := newFakeIndex("p1", "p2", "p3")
		leases := newLeaseTable()
		leases.touch("p1", time.Now()) // last heard by an earlier leader
		time.Sleep(10 * testLease)
		start := time.Now()
		stop := startExpirer(t, x, leases)
		time.Sleep(2 * testLease)
		stop()
		ps := x.proposed()
		if len(ps) == 0 {
			t.Fatal("no peer was expired two leases into the leadership")
		}
		for _, p := range ps {
			if at := p.at.Sub(start); at <= testLease {
				t.Fatalf("peers %v were proposed for expiry %v into a new leadership; want none before a full lease (%v)", p.cmd.Peers, at, testLease)
			}
		}
	})
}

func TestAFailedExpiryIsRetriedAtTheNextTick(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		x := newFakeIndex("p")
		x.failNext = 2
		stop := startExpirer(t, x, newLeaseTable())
		time.Sleep(3 * testLease)
		stop()
		ps := proposalsNaming(x.proposed(), "p")
		if len(ps) != 3 {
			t.Fatalf("a peer whose expiry failed twice was proposed %d times; want 3 (two failures, one success)", len(ps))
		}
		if gap := ps[1].at.Sub(ps[0].at); gap != testLease/4 {
			t.Fatalf("retry came %v after the failure; want the next tick, %v", gap, testLease/4)
		}
	})
}

func TestExpiryOfManyPeersIsSplitIntoCommandsTheFSMAccepts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 2*maxExpirePerCommand + 100
		ids := make([]fsm.PeerID, n)
		for i := range ids {
			ids[i] = fsm.PeerID(fmt.Sprintf("peer-%05d", i))
		}
		x := newFakeIndex(ids...)
		stop := startExpirer(t, x, newLeaseTable())
		time.Sleep(2 * testLease)
		stop()
		ps := x.proposed()
		if len(ps) != 3 {
			t.Fatalf("%d silent peers took %d commands; want 3", n, len(ps))
		}
		seen := map[fsm.PeerID]bool{}
		for _, p := range ps {
			if len(p.cmd.Peers) > maxExpirePerCommand || len(p.cmd.Peers) > fsm.MaxPeersPerExpire {
				t.Fatalf("one command names %d peers; want at most %d", len(p.cmd.Peers), maxExpirePerCommand)
			}
			for _, id := range p.cmd.Peers {
				seen[id] = true
			}
		}
		if len(seen) != n {
			t.Fatalf("the commands named %d distinct peers; want all %d", len(seen), n)
		}
	})
}
