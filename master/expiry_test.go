package master_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/internal/poll"
	"fileshare/master"
)

func TestSilentPeersExpireAndHeartbeatingPeersStay(t *testing.T) {
	c := newCluster(t, 3, func(cfg *master.Config) { cfg.PeerLease = 600 * time.Millisecond })
	c.Leader()
	cl := c.Client()
	quiet, chatty := identity("quiet"), identity("chatty")
	for _, p := range []client.Identity{quiet, chatty} {
		if _, err := cl.Join(t.Context(), p, "127.0.0.1:9005"); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Register(t.Context(), p, []client.FileEntry{fileEntry(p.PeerID + ".txt")}); err != nil {
			t.Fatal(err)
		}
	}
	heartbeatInBackground(t, cl, chatty)
	poll.Until(t, 10*time.Second, "the silent peer expires", func() bool {
		r, err := cl.Lookup(t.Context(), fileID(quiet.PeerID+".txt"), client.ReadLinearizable)
		return err == nil && !r.Found
	})
	r, err := cl.Lookup(t.Context(), fileID(chatty.PeerID+".txt"), client.ReadLinearizable)
	if err != nil || !r.Found {
		t.Fatalf("heartbeating peer's file: found=%v err=%v; want found", r.Found, err)
	}
	// The expired peer's heartbeat says it is unknown, so it knows to re-join.
	if _, err := cl.Heartbeat(t.Context(), quiet); !errors.Is(err, fsm.ErrUnknownPeer) {
		t.Fatalf("heartbeat of an expired peer: got %v, want ErrUnknownPeer", err)
	}
}

// heartbeatInBackground heartbeats id through cl every 100 ms until the
// test ends.
func heartbeatInBackground(t *testing.T, cl *client.Client, id client.Identity) {
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			cl.Heartbeat(ctx, id)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
}
