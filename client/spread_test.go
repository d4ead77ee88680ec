package client

import (
	"context"
	"sync/atomic"
	"testing"

	"fileshare/transport"
)

// countingMaster serves MethodLookup, counting the calls it gets, and
// names leader as the leader in every reply.
func countingMaster(t *testing.T, leader *string, calls *atomic.Int64) string {
	t.Helper()
	m, err := transport.Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := transport.NewServer(nil)
	transport.Handle(s, MethodLookup, func(ctx context.Context, _ *LookupRequest) (*LookupReply, error) {
		calls.Add(1)
		r := &LookupReply{}
		r.SetLeader(*leader)
		return r, nil
	})
	go s.Serve(m.Listener(transport.StreamRPC))
	t.Cleanup(func() { s.Close(); m.Close() })
	return m.Addr().String()
}

// Stale reads are spread over every master even once clients know the
// leader, while the other read levels follow the leader hint.
func TestStaleReadsSpreadOverEveryMasterOthersFollowTheLeader(t *testing.T) {
	var leader string
	var calls [3]atomic.Int64
	addrs := make([]string, 3)
	for i := range addrs {
		addrs[i] = countingMaster(t, &leader, &calls[i])
	}
	leader = addrs[0]
	const clients, reads = 30, 5
	run := func(level ReadLevel) {
		for range clients {
			c := newTestClient(t, addrs...)
			for range reads {
				if _, err := c.Lookup(t.Context(), "x", level); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	run(ReadStale)
	// Each client sticks to its random first pick, so the followers
	// serve about 2/3 of the reads. Following the leader hint instead,
	// they would serve only each client's first read (about 20 of 150).
	// Under half of 2/3 means at most 9 of 30 clients picked a follower:
	// probability about 1e-5.
	if n := calls[1].Load() + calls[2].Load(); n < clients*reads/3 {
		t.Errorf("the followers served %d of %d stale reads; want them spread over every master (about 2/3 off the leader)", n, clients*reads)
	}
	for i := range calls {
		calls[i].Store(0)
	}
	run(ReadLinearizable)
	// Each client's first read may land anywhere; the rest follow the hint.
	if n, most := calls[0].Load(), int64(clients*reads); n < most-clients {
		t.Errorf("the leader served %d of %d linearizable reads; want at least %d (all but each client's first)", n, most, most-clients)
	}
}
