package master_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/master"
	"fileshare/master/mastertest"
)

// The tests of this package are external: they run masters through
// mastertest and observe them only through the API (Status, LeaderReady,
// Block), as peers and operators do. This file holds the shared helpers
// and the durability tests.

// newCluster starts n masters, each on its own loopback IP (127.0.0.1x)
// so a test can cut the links of one, with real boltdb logs in temporary
// directories. tweak, if not nil, adjusts each master's Config.
func newCluster(t *testing.T, n int, tweak func(*master.Config)) *mastertest.T {
	t.Helper()
	return mastertest.New(t, n, mastertest.Options{OwnIPs: true, Config: tweak})
}

// identity returns the peer identity whose key is derived from name, so a
// test's peers are the same in every run.
func identity(name string) client.Identity {
	seed := sha256.Sum256([]byte("test peer " + name))
	return client.IdentityFromKey(ed25519.NewKeyFromSeed(seed[:]))
}

func fileID(name string) string {
	sum := sha256.Sum256([]byte(name))
	return fmt.Sprintf("%x", sum)
}

func fileEntry(name string) client.FileEntry {
	return client.FileEntry{ID: fileID(name), Name: name, Size: 1 << 20, PieceSize: 1 << 18}
}

// registerMany registers n files named prefix-i from one peer with 8
// concurrent writers and returns the IDs whose registration was
// acknowledged.
func registerMany(t *testing.T, c *client.Client, id client.Identity, prefix string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				f := fileEntry(fmt.Sprintf("%s-%d.bin", prefix, i))
				if _, err := c.Register(ctx, id, []client.FileEntry{f}); err != nil {
					t.Errorf("register %s: %v", f.Name, err)
					continue
				}
				mu.Lock()
				acked = append(acked, f.ID)
				mu.Unlock()
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	return acked
}

// requirePresent fails t unless a linearizable lookup finds every one of
// ids.
func requirePresent(t *testing.T, c *client.Client, ids []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, id := range ids {
		r, err := c.Lookup(ctx, id, client.ReadLinearizable)
		if err != nil {
			t.Fatalf("lookup %s: %v", id, err)
		}
		if !r.Found {
			t.Fatalf("acknowledged registration of %s is lost", id)
		}
	}
}

func TestAcknowledgedRegistrationsSurviveLeaderLossAndFullRestart(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.Leader()
	follower := c.Follower(leader)

	// Writes go through a follower, which forwards them to the leader.
	viaFollower := c.Client(c.Addr(follower))
	alice := identity("alice")
	if _, err := viaFollower.Join(t.Context(), alice, "127.0.0.1:9001"); err != nil {
		t.Fatalf("join through follower: %v", err)
	}
	acked := registerMany(t, viaFollower, alice, "before", 200)
	if len(acked) != 200 {
		t.Fatalf("got %d acknowledged registrations, want 200", len(acked))
	}

	// Abruptly stop the leader: every acknowledged registration is on the new one.
	c.Kill(leader)
	newLeader := c.Leader()
	if newLeader == leader {
		t.Fatalf("leader %d still leads after being stopped", leader)
	}
	all := c.Client()
	requirePresent(t, all, acked)
	acked = append(acked, registerMany(t, all, alice, "during", 50)...)

	// The old leader restarts from its data dir and catches up.
	c.Restart(leader)
	digest := c.Converge()
	if got := c.Status(leader).Files; got != len(acked) {
		t.Fatalf("restarted master has %d files, want %d", got, len(acked))
	}

	// Stop and restart all three: nothing is lost.
	for i := range c.Len() {
		c.Kill(i)
	}
	for i := range c.Len() {
		c.Restart(i)
	}
	c.Leader()
	if got := c.Converge(); got != digest {
		t.Fatalf("digest after full restart is %s, want %s", got, digest)
	}
	requirePresent(t, all, acked)
}

func TestFiveMastersSurviveLosingTwo(t *testing.T) {
	c := newCluster(t, 5, nil)
	leader := c.Leader()
	cl := c.Client()
	bob := identity("bob")
	if _, err := cl.Join(t.Context(), bob, "127.0.0.1:9002"); err != nil {
		t.Fatal(err)
	}
	acked := registerMany(t, cl, bob, "five", 100)

	// Lose the leader and one follower.
	c.Kill(leader)
	c.Kill(c.Follower(leader))
	c.Leader()
	acked = append(acked, registerMany(t, cl, bob, "three-left", 50)...)
	requirePresent(t, cl, acked)
	c.Converge()
}

func TestRestartWithSameFlagsDoesNotReBootstrap(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.Leader()
	cl := c.Client()
	erin := identity("erin")
	if _, err := cl.Join(t.Context(), erin, "127.0.0.1:9007"); err != nil {
		t.Fatal(err)
	}
	acked := registerMany(t, cl, erin, "boot", 10)
	term := c.Status(0).Term
	c.Kill(0)
	c.Restart(0) // same Config, including InitialCluster
	c.Converge()
	if got := c.Status(0).Term; got < term {
		t.Fatalf("restarted master is at term %d, below %d: it re-bootstrapped", got, term)
	}
	requirePresent(t, cl, acked)
}
