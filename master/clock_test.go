package master_test

import (
	"sync"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/master/mastertest"
)

// skew is a wall-clock offset per master, for Config.Now: what the unsafe
// clock hook does in a fault run.
type skew struct {
	mu  sync.Mutex
	off map[string]time.Duration
}

func (s *skew) set(id string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.off == nil {
		s.off = map[string]time.Duration{}
	}
	s.off[id] = d
}

func (s *skew) clock(id string) func() time.Time {
	return func() time.Time {
		s.mu.Lock()
		d := s.off[id]
		s.mu.Unlock()
		return time.Unix(0, time.Now().UnixNano()+int64(d))
	}
}

const (
	clockTestLease    = 600 * time.Millisecond
	clockTestLifetime = 3 * time.Second
)

// Leases and swarm lifetimes are judged on the monotonic clock, and times
// in commands never go backwards, so a master whose wall clock jumps
// neither drops live peers nor keeps dead ones: after each jump, a peer
// that stopped heartbeating and a swarm entry that stopped re-announcing
// expire within about a lease (a lifetime) of the jump, while a
// heartbeating peer and a re-announcing entry stay.
func TestClockJumpsNeitherDropLivePeersNorKeepDeadOnes(t *testing.T) {
	for _, tc := range []struct {
		name string
		jump func(c *mastertest.T, s *skew, leader int)
	}{
		{"leader clock jumps 1h forward", func(c *mastertest.T, s *skew, leader int) { s.set(c.ID(leader), time.Hour) }},
		{"leader clock jumps 1h back", func(c *mastertest.T, s *skew, leader int) { s.set(c.ID(leader), -time.Hour) }},
		{"new leader's clock is 1h behind", func(c *mastertest.T, s *skew, leader int) {
			for i := range c.Len() {
				if i != leader {
					s.set(c.ID(i), -time.Hour)
				}
			}
			c.Kill(leader)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &skew{}
			c := mastertest.New(t, 3, mastertest.Options{Config: func(cfg *master.Config) {
				cfg.PeerLease = clockTestLease
				cfg.Tracker.HTTP = "127.0.0.1:0"
				cfg.Tracker.Interval = time.Second
				cfg.Tracker.PeerLifetime = clockTestLifetime
				cfg.Now = s.clock(cfg.ID)
			}})
			leader := c.Leader()
			cl := c.Client()
			live, dead := identity("clock-live-"+tc.name), identity("clock-dead-"+tc.name)
			for _, p := range []client.Identity{live, dead} {
				if _, err := cl.Join(t.Context(), p, "127.0.0.1:9401"); err != nil {
					t.Fatal(err)
				}
				if _, err := cl.Register(t.Context(), p, []client.FileEntry{fileEntry(p.PeerID + ".txt")}); err != nil {
					t.Fatal(err)
				}
			}
			ih := randomHash()
			liveBT, deadBT, watcher := newBTPeer(7401), newBTPeer(7402), newBTPeer(7403)
			watcher.local = "127.0.0.3"
			trackerAt := func() string { // a running follower's tracker
				for i := range c.Len() {
					if m := c.Master(i); m != nil && !m.IsLeader() {
						return m.TrackerHTTPAddr()
					}
				}
				return c.Master(c.Leader()).TrackerHTTPAddr()
			}
			announce(t, trackerAt(), ih, liveBT, "started", 10)
			announce(t, trackerAt(), ih, deadBT, "started", 10)

			heartbeatInBackground(t, cl, live)
			// Let the leader hear from the live peer before the jump.
			poll.Until(t, 5*time.Second, "a heartbeat of the live peer", func() bool {
				_, err := cl.Heartbeat(t.Context(), live)
				return err == nil
			})

			jumped := time.Now()
			tc.jump(c, s, leader)
			found := func(p client.Identity) bool {
				r, err := cl.Lookup(t.Context(), fileID(p.PeerID+".txt"), client.ReadLinearizable)
				return err == nil && r.Found
			}
			var peerGone, entryGone time.Duration
			var peers []int
			poll.Until(t, 30*time.Second, "the dead peer and the dead swarm entry expire", func() bool {
				addr := trackerAt()
				announce(t, addr, ih, liveBT, "", 10) // renew through a follower
				peers = announce(t, addr, ih, watcher, "", 10).peers
				if peerGone == 0 && !found(dead) {
					peerGone = time.Since(jumped)
				}
				if entryGone == 0 && !hasPort(peers, deadBT.port) {
					entryGone = time.Since(jumped)
				}
				if !found(live) {
					t.Fatalf("the heartbeating peer expired %v after the jump", time.Since(jumped))
				}
				if !hasPort(peers, liveBT.port) {
					t.Fatalf("the re-announcing swarm entry expired %v after the jump: peers %v", time.Since(jumped), peers)
				}
				// Watch the live ones for a whole lifetime after the jump.
				return peerGone > 0 && entryGone > 0 && time.Since(jumped) > clockTestLifetime+time.Second
			})
			t.Logf("after the jump: the dead peer expired in %v (lease %v), the dead swarm entry in %v (lifetime %v)",
				peerGone.Round(time.Millisecond), clockTestLease, entryGone.Round(time.Millisecond), clockTestLifetime)
			// A new leader gives a full lease first; then expiry takes a
			// sweep. Anything near an hour means the jump decided it.
			if limit := 5 * clockTestLease; peerGone > limit+2*time.Second {
				t.Errorf("the dead peer took %v to expire, over %v", peerGone, limit)
			}
			if limit := 2*clockTestLifetime + 2*time.Second; entryGone > limit {
				t.Errorf("the dead swarm entry took %v to expire, over %v", entryGone, limit)
			}
		})
	}
}
