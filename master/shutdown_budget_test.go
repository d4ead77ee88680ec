package master

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/client"
	"fileshare/internal/poll"
)

// blockingLogStore blocks StoreLogs, once armed, until released: raft's
// leader loop then hangs inside it, and raft.Shutdown never returns.
type blockingLogStore struct {
	raft.LogStore
	mu      sync.Mutex
	armed   bool
	blocked chan struct{} // closed when a StoreLogs call blocks
	release chan struct{}
	once    sync.Once
}

func (s *blockingLogStore) StoreLogs(logs []*raft.Log) error {
	s.mu.Lock()
	armed := s.armed
	s.mu.Unlock()
	if armed {
		s.once.Do(func() { close(s.blocked) })
		<-s.release
	}
	return s.LogStore.StoreLogs(logs)
}

func (s *blockingLogStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// One shutdown budget: a raft that will not stop is abandoned when
// Shutdown's context ends, not raftStuckGrace later, so a caller's
// timeout (the CLI's --shutdown-timeout) is the whole budget.
func TestShutdownAbandonsAStuckRaftWhenItsContextEnds(t *testing.T) {
	store := &blockingLogStore{blocked: make(chan struct{}), release: make(chan struct{})}
	cfg := soloConfig(t)
	cfg.Storage.WrapLogStore = func(ls raft.LogStore) raft.LogStore { store.LogStore = ls; return store }
	m := startSolo(t, cfg)
	t.Cleanup(func() { close(store.release) }) // after the test's CloseNow: let raft's goroutine end

	store.mu.Lock()
	store.armed = true
	store.mu.Unlock()
	cl, err := client.New(client.Config{Masters: []string{m.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	id, err := client.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer wcancel()
	go func() { _, _ = cl.Join(wctx, id, "127.0.0.1:9100") }() // ends with wctx
	poll.Until(t, 10*time.Second, "raft to block writing the log", func() bool {
		select {
		case <-store.blocked:
			return true
		default:
			return false
		}
	})

	const budget = 2 * time.Second
	ctx, cancel := context.WithTimeout(t.Context(), budget)
	defer cancel()
	start := time.Now()
	err = m.Shutdown(ctx)
	took := time.Since(start)
	if !errors.Is(err, errRaftStuck) {
		t.Fatalf("Shutdown with raft stuck in the log store returned %v; want errRaftStuck", err)
	}
	if took > budget+time.Second {
		t.Fatalf("Shutdown took %v with a %v budget; want it to abandon raft when the budget ends (not after raftStuckGrace, %v)", took, budget, raftStuckGrace)
	}
	t.Logf("Shutdown with a %v budget returned after %v: %v", budget, took, err)
}
