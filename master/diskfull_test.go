package master_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/client"
	"fileshare/internal/poll"
	"fileshare/master"
)

// fullDisk is a log store whose writes fail with ENOSPC while full is set,
// as bolt's do when the data dir's filesystem is full.
type fullDisk struct {
	raft.LogStore
	full *atomic.Bool
}

func (d fullDisk) StoreLogs(logs []*raft.Log) error {
	if d.full.Load() {
		return &os.PathError{Op: "write", Path: "raft.db", Err: syscall.ENOSPC}
	}
	return d.LogStore.StoreLogs(logs)
}

func (d fullDisk) StoreLog(l *raft.Log) error { return d.StoreLogs([]*raft.Log{l}) }

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A follower whose disk is full does not stop the cluster: writes are
// acknowledged by the majority with room, the full master logs one error
// naming its data dir (not one per write), stays up, and catches up once
// there is space again.
func TestFullDiskOnAFollowerKeepsTheClusterServingAndCatchesUp(t *testing.T) {
	var full atomic.Bool
	var logs syncBuffer
	var victimID string
	c := newCluster(t, 3, func(cfg *master.Config) {
		if cfg.ID != "m3" {
			return
		}
		victimID = cfg.ID
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		cfg.Storage.WrapLogStore = func(s raft.LogStore) raft.LogStore { return fullDisk{LogStore: s, full: &full} }
	})
	leader := c.Leader()
	if c.ID(leader) == victimID {
		c.Stop(leader) // make the victim a follower: it rejoins as one
		c.Restart(leader)
		leader = c.Leader()
	}
	v := 2
	cl := c.Client()
	fred := identity("diskfull-fred")
	if _, err := cl.Join(t.Context(), fred, "127.0.0.1:9501"); err != nil {
		t.Fatal(err)
	}
	full.Store(true)
	for i := range 50 {
		if _, err := cl.Register(t.Context(), fred, []client.FileEntry{fileEntry(fmt.Sprintf("full-%d.bin", i))}); err != nil {
			t.Fatalf("a write with a majority that has room failed: %v", err)
		}
	}
	st := c.Status(v)
	if ref := c.Status(leader); st.LastIndex >= ref.LastIndex {
		t.Fatalf("the full master's log reached %d, the leader's %d: it stored what it could not", st.LastIndex, ref.LastIndex)
	}
	out := logs.String()
	if n := strings.Count(out, "disk is full"); n != 1 {
		t.Fatalf("the full master logged the full disk %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, c.Config(v).DataDir) {
		t.Fatalf("the full-disk error does not name the data dir %s:\n%s", c.Config(v).DataDir, out)
	}
	full.Store(false)
	got := waitVictimCaughtUp(t, c.Master(leader), func() *master.Master { return c.Master(v) })
	if want := c.Converge(); got != want {
		t.Fatalf("digest %s after catching up, want %s", got, want)
	}
	if !strings.Contains(logs.String(), "has room again") {
		t.Fatal("the master did not log that the disk has room again")
	}
}

// failOnce is a log store whose next write after armed is set fails with
// ENOSPC, once: a disk that was full for one append.
type failOnce struct {
	raft.LogStore
	armed, fired *atomic.Int32
}

func (d failOnce) StoreLogs(logs []*raft.Log) error {
	if d.armed.CompareAndSwap(1, 0) {
		// Slow, as a write that fills the disk can be: the leader
		// pipelines the next append meanwhile.
		time.Sleep(100 * time.Millisecond)
		d.fired.Add(1)
		return &os.PathError{Op: "write", Path: "raft.db", Err: syscall.ENOSPC}
	}
	return d.LogStore.StoreLogs(logs)
}

func (d failOnce) StoreLog(l *raft.Log) error { return d.StoreLogs([]*raft.Log{l}) }

// A follower that fails one append while the leader is busy catches up
// with the same leader: the rejection must not leave the leader sending
// heartbeats only (its pipeline to that follower wedged), which kept a
// follower behind until the next election.
func TestAFollowerThatFailsOneAppendUnderLoadCatchesUpWithTheSameLeader(t *testing.T) {
	var armed, fired atomic.Int32
	c := newCluster(t, 3, func(cfg *master.Config) {
		if cfg.ID == "m3" {
			cfg.Storage.WrapLogStore = func(s raft.LogStore) raft.LogStore { return failOnce{LogStore: s, armed: &armed, fired: &fired} }
		}
	})
	const v = 2 // m3
	leader := c.Leader()
	if leader == v {
		c.Stop(leader)
		c.Restart(leader)
		leader = c.Leader()
	}
	term := c.Status(leader).Term
	cl := c.Client()
	fred := identity("failonce-fred")
	if _, err := cl.Join(t.Context(), fred, "127.0.0.1:9502"); err != nil {
		t.Fatal(err)
	}
	// Writers keep the leader's replication busy, so it has more to send
	// when the rejection arrives (the case that wedged).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = cl.Register(t.Context(), fred, []client.FileEntry{fileEntry(fmt.Sprintf("once-%d-%d.bin", w, i))})
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	for round := range 8 {
		armed.Store(1)
		poll.Until(t, 10*time.Second, "the follower's disk rejected an append", func() bool { return fired.Load() == int32(round+1) })
		// Caught up: the follower has applied what the leader had
		// committed when the disk rejected the append.
		target := c.Status(leader).CommitIndex
		poll.Until(t, 10*time.Second, fmt.Sprintf("round %d: the follower applies index %d", round, target), func() bool {
			return c.Status(v).AppliedIndex >= target
		})
	}
	if got := c.Status(leader).Term; got != term || c.Leader() != leader {
		t.Logf("the leader changed during the test (term %d → %d); the rounds after it prove less", term, got)
	}
}
