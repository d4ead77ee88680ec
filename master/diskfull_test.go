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

	"github.com/hashicorp/raft"

	"fileshare/client"
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
