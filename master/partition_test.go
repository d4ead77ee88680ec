package master_test

import (
	"context"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/poll"
)

func TestMinorityAcceptsNoWritesAndServesNoLinearizableReads(t *testing.T) {
	c := newCluster(t, 3, nil)
	old := c.Leader()
	cl := c.Client()
	carol := identity("carol")
	if _, err := cl.Join(t.Context(), carol, "127.0.0.1:9003"); err != nil {
		t.Fatal(err)
	}
	before := registerMany(t, cl, carol, "pre-partition", 10)

	c.Isolate(old)
	// The majority elects a new leader. (The isolated one may still
	// believe it leads for a moment, so Leader, which wants exactly one,
	// would wait for it to step down.)
	poll.Until(t, 15*time.Second, "a leader on the majority side", func() bool {
		for i := range c.Len() {
			if m := c.Master(i); i != old && m != nil && m.LeaderReady() {
				return true
			}
		}
		return false
	})

	// The isolated master accepts no write: it can neither commit one
	// nor reach a leader, so the call fails when its deadline passes.
	minority := c.Client(c.Addr(old))
	lost := fileEntry("written-to-minority.bin")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	_, err := minority.Register(ctx, carol, []client.FileEntry{lost})
	cancel()
	if err == nil {
		t.Fatal("a write to the isolated minority was acknowledged")
	}
	// Nor does it serve a linearizable read, though a stale one is fine.
	ctx, cancel = context.WithTimeout(t.Context(), time.Second)
	_, err = minority.Lookup(ctx, before[0], client.ReadLinearizable)
	cancel()
	if err == nil {
		t.Fatal("the isolated minority served a linearizable read")
	}
	if r, err := minority.Lookup(t.Context(), before[0], client.ReadStale); err != nil || !r.Found {
		t.Fatalf("stale read on the minority: found=%v err=%v; want found", r.Found, err)
	}

	// The majority keeps accepting writes.
	var majority []string
	for i := range c.Len() {
		if i != old {
			majority = append(majority, c.Addr(i))
		}
	}
	after := registerMany(t, c.Client(majority...), carol, "majority", 10)

	c.Heal()
	c.Converge()
	requirePresent(t, cl, append(before, after...))
	r, err := cl.Lookup(t.Context(), lost.ID, client.ReadLinearizable)
	if err != nil {
		t.Fatal(err)
	}
	if r.Found {
		t.Fatal("a write that failed on the minority appeared after the partition healed")
	}
}
