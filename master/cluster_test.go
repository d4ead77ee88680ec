package master

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/fsm"
)

// testCluster runs N masters in this process over real TCP on loopback,
// each on its own IP (127.0.0.1x) so a test can cut the links of one node,
// with real boltdb logs in temporary directories.
type testCluster struct {
	t       *testing.T
	cfgs    []Config
	masters []*Master // nil while stopped
}

// testLogger returns a logger writing to the test's output if -v, else
// discarding (set FILESHARE_TEST_LOG=1 to see raft's chatter).
func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("FILESHARE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// freeAddr returns host:port with a port that was free a moment ago.
func freeAddr(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func newTestCluster(t *testing.T, n int, tweak func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, masters: make([]*Master, n)}
	var members []Member
	for i := range n {
		addr := freeAddr(t, fmt.Sprintf("127.0.0.%d", 11+i))
		members = append(members, Member{ID: fmt.Sprintf("m%d", i+1), Addr: addr})
	}
	for i := range n {
		cfg := Config{
			ID:             members[i].ID,
			DataDir:        t.TempDir(),
			Listen:         members[i].Addr,
			InitialCluster: members,
			Logger:         testLogger(t).With("node", members[i].ID),
		}
		if tweak != nil {
			tweak(&cfg)
		}
		c.cfgs = append(c.cfgs, cfg)
	}
	for i := range n {
		c.start(i)
	}
	t.Cleanup(func() {
		for i := range c.masters {
			c.stop(i)
		}
	})
	return c
}

func (c *testCluster) start(i int) {
	c.t.Helper()
	var m *Master
	var err error
	// The port was free when chosen; after a stop the OS may need a moment.
	waitFor(c.t, 10*time.Second, fmt.Sprintf("master %s starts", c.cfgs[i].ID), func() bool {
		m, err = New(c.t.Context(), c.cfgs[i])
		return err == nil
	})
	c.masters[i] = m
}

func (c *testCluster) stop(i int) {
	if c.masters[i] != nil {
		c.masters[i].CloseNow()
		c.masters[i] = nil
	}
}

func (c *testCluster) addrs() []string {
	var out []string
	for _, cfg := range c.cfgs {
		out = append(out, cfg.Listen)
	}
	return out
}

// leader waits until exactly one running master leads and is ready, and
// returns its index.
func (c *testCluster) leader() int {
	c.t.Helper()
	idx := -1
	waitFor(c.t, 15*time.Second, "one ready leader", func() bool {
		idx = -1
		for i, m := range c.masters {
			if m != nil && m.leaderReady() {
				if idx >= 0 {
					return false
				}
				idx = i
			}
		}
		return idx >= 0
	})
	return idx
}

// follower returns the index of a running master that is not the leader.
func (c *testCluster) follower(leader int) int {
	for i, m := range c.masters {
		if m != nil && i != leader {
			return i
		}
	}
	c.t.Fatal("no running follower")
	return -1
}

// converge waits until every running master has the same digest and
// applied index as the leader.
func (c *testCluster) converge() string {
	c.t.Helper()
	var digest string
	waitFor(c.t, 20*time.Second, "all masters hold the same index", func() bool {
		digest = ""
		for _, m := range c.masters {
			if m == nil {
				continue
			}
			d := m.fsm.Digest()
			if digest == "" {
				digest = d
			} else if d != digest {
				return false
			}
		}
		return true
	})
	return digest
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for d := time.Millisecond; !cond(); d = min(2*d, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", timeout, what)
		}
		time.Sleep(d)
	}
}

func testClient(t *testing.T, addrs ...string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Masters: addrs, AttemptTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func identity(name string) client.Identity {
	return client.Identity{PeerID: name, Secret: []byte("secret-of-" + name + "-0123456789")}
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
		wg.Add(1)
		go func() {
			defer wg.Done()
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
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	return acked
}

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
	c := newTestCluster(t, 3, nil)
	leader := c.leader()
	follower := c.follower(leader)

	// Writes go through a follower, which forwards them to the leader.
	viaFollower := testClient(t, c.cfgs[follower].Listen)
	alice := identity("alice")
	if _, err := viaFollower.Join(t.Context(), alice, "127.0.0.1:9001"); err != nil {
		t.Fatalf("join through follower: %v", err)
	}
	acked := registerMany(t, viaFollower, alice, "before", 200)
	if len(acked) != 200 {
		t.Fatalf("got %d acknowledged registrations, want 200", len(acked))
	}

	// Abruptly stop the leader: every acknowledged registration is on the new one.
	c.stop(leader)
	newLeader := c.leader()
	if newLeader == leader {
		t.Fatalf("leader %d still leads after being stopped", leader)
	}
	all := testClient(t, c.addrs()...)
	requirePresent(t, all, acked)
	acked = append(acked, registerMany(t, all, alice, "during", 50)...)

	// The old leader restarts from its data dir and catches up.
	c.start(leader)
	digest := c.converge()
	if got := c.masters[leader].fsm.Counts().Files; got != len(acked) {
		t.Fatalf("restarted master has %d files, want %d", got, len(acked))
	}

	// Stop and restart all three: nothing is lost.
	for i := range c.masters {
		c.stop(i)
	}
	for i := range c.masters {
		c.start(i)
	}
	c.leader()
	if got := c.converge(); got != digest {
		t.Fatalf("digest after full restart is %s, want %s", got, digest)
	}
	requirePresent(t, all, acked)
}

func TestFiveMastersSurviveLosingTwo(t *testing.T) {
	c := newTestCluster(t, 5, nil)
	leader := c.leader()
	cl := testClient(t, c.addrs()...)
	bob := identity("bob")
	if _, err := cl.Join(t.Context(), bob, "127.0.0.1:9002"); err != nil {
		t.Fatal(err)
	}
	acked := registerMany(t, cl, bob, "five", 100)

	// Lose the leader and one follower.
	c.stop(leader)
	c.stop(c.follower(leader))
	c.leader()
	acked = append(acked, registerMany(t, cl, bob, "three-left", 50)...)
	requirePresent(t, cl, acked)
	c.converge()
}

// isolate cuts every link between master i and the others.
func (c *testCluster) isolate(i int) {
	self := strings.Split(c.cfgs[i].Listen, ":")[0]
	var others []string
	for j, cfg := range c.cfgs {
		if j == i {
			continue
		}
		ip := strings.Split(cfg.Listen, ":")[0]
		others = append(others, ip)
		if c.masters[j] != nil {
			c.masters[j].mux.Block(self)
		}
	}
	c.masters[i].mux.Block(others...)
}

func (c *testCluster) heal() {
	for _, m := range c.masters {
		if m != nil {
			m.mux.Unblock()
		}
	}
}

func TestMinorityAcceptsNoWritesAndServesNoLinearizableReads(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	old := c.leader()
	cl := testClient(t, c.addrs()...)
	carol := identity("carol")
	if _, err := cl.Join(t.Context(), carol, "127.0.0.1:9003"); err != nil {
		t.Fatal(err)
	}
	before := registerMany(t, cl, carol, "pre-partition", 10)

	c.isolate(old)
	// The majority elects a new leader.
	waitFor(t, 15*time.Second, "a leader on the majority side", func() bool {
		for i, m := range c.masters {
			if i != old && m.leaderReady() {
				return true
			}
		}
		return false
	})

	// The isolated master accepts no write: it can neither commit one
	// nor reach a leader, so the call fails when its deadline passes.
	minority := testClient(t, c.cfgs[old].Listen)
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
	for i, cfg := range c.cfgs {
		if i != old {
			majority = append(majority, cfg.Listen)
		}
	}
	after := registerMany(t, testClient(t, majority...), carol, "majority", 10)

	c.heal()
	c.converge()
	requirePresent(t, cl, append(before, after...))
	r, err := cl.Lookup(t.Context(), lost.ID, client.ReadLinearizable)
	if err != nil {
		t.Fatal(err)
	}
	if r.Found {
		t.Fatal("a write that failed on the minority appeared after the partition healed")
	}
}

func TestOnlyTheOwnerCanRemoveRegistrations(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.leader()
	cl := testClient(t, c.addrs()...)
	alice, mallory := identity("alice"), identity("mallory")
	for _, p := range []client.Identity{alice, mallory} {
		if _, err := cl.Join(t.Context(), p, "127.0.0.1:9004"); err != nil {
			t.Fatal(err)
		}
	}
	f := fileEntry("alice-only.txt")
	if _, err := cl.Register(t.Context(), alice, []client.FileEntry{f}); err != nil {
		t.Fatal(err)
	}
	// Mallory claims to be alice with the wrong secret.
	fake := client.Identity{PeerID: "alice", Secret: mallory.Secret}
	if _, err := cl.Unregister(t.Context(), fake, []string{f.ID}); !errors.Is(err, fsm.ErrUnauthorized) {
		t.Fatalf("unregister with a wrong secret: got %v, want ErrUnauthorized", err)
	}
	if _, err := cl.Leave(t.Context(), fake); !errors.Is(err, fsm.ErrUnauthorized) {
		t.Fatalf("leave with a wrong secret: got %v, want ErrUnauthorized", err)
	}
	// Unregistering as herself only affects mallory's own holdings.
	if _, err := cl.Unregister(t.Context(), mallory, []string{f.ID}); err != nil {
		t.Fatal(err)
	}
	r, err := cl.Lookup(t.Context(), f.ID, client.ReadLinearizable)
	if err != nil || !r.Found || len(r.Holders) != 1 || r.Holders[0].PeerID != "alice" {
		t.Fatalf("lookup after attacks: %+v, %v; want alice still holding", r, err)
	}
}

func TestSilentPeersExpireAndHeartbeatingPeersStay(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.PeerLease = 600 * time.Millisecond })
	c.leader()
	cl := testClient(t, c.addrs()...)
	quiet, chatty := identity("quiet"), identity("chatty")
	for _, p := range []client.Identity{quiet, chatty} {
		if _, err := cl.Join(t.Context(), p, "127.0.0.1:9005"); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Register(t.Context(), p, []client.FileEntry{fileEntry(p.PeerID + ".txt")}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			cl.Heartbeat(ctx, chatty)
			time.Sleep(100 * time.Millisecond)
		}
	}()
	waitFor(t, 10*time.Second, "the silent peer expires", func() bool {
		r, err := cl.Lookup(t.Context(), fileID("quiet.txt"), client.ReadLinearizable)
		return err == nil && !r.Found
	})
	r, err := cl.Lookup(t.Context(), fileID("chatty.txt"), client.ReadLinearizable)
	if err != nil || !r.Found {
		t.Fatalf("heartbeating peer's file: found=%v err=%v; want found", r.Found, err)
	}
	// The expired peer's heartbeat says it is unknown, so it knows to re-join.
	if _, err := cl.Heartbeat(t.Context(), quiet); !errors.Is(err, fsm.ErrUnknownPeer) {
		t.Fatalf("heartbeat of an expired peer: got %v, want ErrUnknownPeer", err)
	}
}

func TestMembershipJoinTransferRemove(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.leader()
	cl := testClient(t, c.addrs()...)
	dave := identity("dave")
	if _, err := cl.Join(t.Context(), dave, "127.0.0.1:9006"); err != nil {
		t.Fatal(err)
	}
	acked := registerMany(t, cl, dave, "pre-join", 20)

	// A fourth master joins through any member and catches up.
	cfg := Config{ID: "m4", DataDir: t.TempDir(), Listen: freeAddr(t, "127.0.0.14"), Join: []string{c.cfgs[1].Listen}, Logger: testLogger(t)}
	m4, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	defer m4.CloseNow()
	waitFor(t, 10*time.Second, "m4 catches up", func() bool { return m4.fsm.Counts().Files == len(acked) })

	// A second master claiming the ID m4 at another address is refused.
	dup := Config{ID: "m4", DataDir: t.TempDir(), Listen: freeAddr(t, "127.0.0.15"), Join: []string{c.cfgs[0].Listen}, JoinTimeout: 5 * time.Second}
	if _, err := New(t.Context(), dup); !errors.Is(err, ErrJoinFailed) || !strings.Contains(err.Error(), "already a member") {
		t.Fatalf("joining with a clashing ID: got %v, want ErrJoinFailed naming the clash", err)
	}

	// Hand leadership to m4.
	out, err := cl.TransferLeader(t.Context(), "m4")
	if err != nil || out.LeaderID != "m4" {
		t.Fatalf("transfer to m4: got %+v, %v", out, err)
	}
	waitFor(t, 10*time.Second, "m4 leads", m4.leaderReady)

	// Remove m1; the rest carry on.
	if err := cl.RemoveMember(t.Context(), "m1"); err != nil {
		t.Fatalf("remove m1: %v", err)
	}
	if err := cl.RemoveMember(t.Context(), "nobody"); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("remove unknown member: got %v, want ErrUnknownMember", err)
	}
	st := m4.Status(t.Context(), false)
	for _, mem := range st.Members {
		if mem.ID == "m1" {
			t.Fatalf("m1 still in the configuration: %+v", st.Members)
		}
	}
	acked = append(acked, registerMany(t, cl, dave, "after-remove", 10)...)
	requirePresent(t, cl, acked)
}

func TestNewRejectsImpossibleConfigs(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	notADir := t.TempDir() + "/file"
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	free := freeAddr(t, "127.0.0.1")
	nowhere := freeAddr(t, "127.0.0.1")
	self := []Member{{ID: "m1", Addr: free}}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no id", Config{DataDir: t.TempDir(), Listen: free, InitialCluster: self}, "--id"},
		{"initial cluster without self", Config{ID: "m9", DataDir: t.TempDir(), Listen: free, InitialCluster: self}, "does not contain this master's own ID"},
		{"duplicate member", Config{ID: "m1", DataDir: t.TempDir(), Listen: free, InitialCluster: append(self, Member{ID: "m1", Addr: nowhere})}, "names m1 twice"},
		{"port in use", Config{ID: "m1", DataDir: t.TempDir(), Listen: busy.Addr().String(), InitialCluster: []Member{{ID: "m1", Addr: busy.Addr().String()}}}, "already in use"},
		{"data dir not a directory", Config{ID: "m1", DataDir: notADir + "/sub", Listen: free, InitialCluster: self}, "data dir"},
		{"join where no master listens", Config{ID: "m1", DataDir: t.TempDir(), Listen: free, Join: []string{nowhere}, JoinTimeout: time.Second}, "check that a master listens"},
		{"both bootstrap and join", Config{ID: "m1", DataDir: t.TempDir(), Listen: free, InitialCluster: self, Join: []string{nowhere}}, "not both"},
		{"wildcard listen without advertise", Config{ID: "m1", DataDir: t.TempDir(), Listen: "0.0.0.0:0", Join: []string{nowhere}}, "--advertise"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(t.Context(), tc.cfg)
			if err == nil {
				m.CloseNow()
				t.Fatalf("New succeeded; want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %q; want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestRestartWithSameFlagsDoesNotReBootstrap(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.leader()
	cl := testClient(t, c.addrs()...)
	erin := identity("erin")
	if _, err := cl.Join(t.Context(), erin, "127.0.0.1:9007"); err != nil {
		t.Fatal(err)
	}
	acked := registerMany(t, cl, erin, "boot", 10)
	term := c.masters[0].raft.CurrentTerm()
	c.stop(0)
	c.start(0) // same Config, including InitialCluster
	c.converge()
	if got := c.masters[0].raft.CurrentTerm(); got < term {
		t.Fatalf("restarted master is at term %d, below %d: it re-bootstrapped", got, term)
	}
	requirePresent(t, cl, acked)
}

// Group commit: concurrent registrations share log entries.
func TestConcurrentRegistrationsShareLogEntries(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	leader := c.leader()
	cl := testClient(t, c.cfgs[leader].Listen)
	ids := make([]client.Identity, 64)
	for i := range ids {
		ids[i] = identity(fmt.Sprintf("batch-%d", i))
		if _, err := cl.Join(t.Context(), ids[i], "127.0.0.1:9008"); err != nil {
			t.Fatal(err)
		}
	}
	before := c.masters[leader].raft.LastIndex()
	const perClient = 10
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perClient {
				f := fileEntry(fmt.Sprintf("batched-%d-%d", i, j))
				if _, err := cl.Register(t.Context(), ids[i], []client.FileEntry{f}); err != nil {
					t.Errorf("register: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	entries := c.masters[leader].raft.LastIndex() - before
	total := uint64(len(ids) * perClient)
	t.Logf("%d registrations took %d log entries", total, entries)
	if entries > total/2 {
		t.Fatalf("%d concurrent registrations took %d log entries; want at most %d (batching)", total, entries, total/2)
	}
	if got := c.masters[leader].fsm.Counts().Files; got != int(total) {
		t.Fatalf("index holds %d files, want %d", got, total)
	}
}
