package master

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/fsm"
	"fileshare/transport"
)

// fakeFuture is a raft.ApplyFuture the test completes by hand.
type fakeFuture struct {
	done  chan struct{}
	err   error
	resp  any
	index uint64
}

func (f *fakeFuture) Error() error     { <-f.done; return f.err }
func (f *fakeFuture) Index() uint64    { <-f.done; return f.index }
func (f *fakeFuture) Response() any    { <-f.done; return f.resp }
func (f *fakeFuture) finish(err error) { f.err = err; close(f.done) }

// entry is one Apply call: the log entry's data, the commands it holds,
// and its future.
type entry struct {
	data []byte
	cmds [][]byte
	f    *fakeFuture
}

// fakeApplier records every Apply and answers nothing until the test says.
type fakeApplier struct {
	mu      sync.Mutex
	entries []*entry
}

func (a *fakeApplier) Apply(data []byte, _ time.Duration) raft.ApplyFuture {
	e := &entry{data: data, cmds: [][]byte{data}, f: &fakeFuture{done: make(chan struct{})}}
	if fsm.CommandType(data[0]) == fsm.CmdBatch {
		c, err := fsm.Decode(data)
		if err != nil {
			panic(fmt.Sprintf("batcher proposed an undecodable batch: %v", err))
		}
		e.cmds = c.(fsm.Batch).Commands
	}
	a.mu.Lock()
	a.entries = append(a.entries, e)
	a.mu.Unlock()
	return e.f
}

func (a *fakeApplier) snapshot() []*entry {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*entry(nil), a.entries...)
}

// commit answers entry e as the FSM would, calling result for each of its
// commands.
func (e *entry) commit(index uint64, result func(cmd []byte) fsm.Response) {
	if len(e.cmds) == 1 && fsm.CommandType(e.data[0]) != fsm.CmdBatch {
		e.f.resp = result(e.cmds[0])
	} else {
		var resp fsm.Response
		for _, c := range e.cmds {
			resp.Results = append(resp.Results, result(c))
		}
		e.f.resp = resp
	}
	e.f.index = index
	e.f.finish(nil)
}

// testCmd is a batchable command of size bytes that carries n.
func testCmd(n, size int) []byte {
	b := make([]byte, max(size, 6))
	b[0], b[1] = byte(fsm.CmdLeavePeer), 1
	binary.BigEndian.PutUint32(b[2:], uint32(n))
	return b
}

func cmdNum(c []byte) int { return int(binary.BigEndian.Uint32(c[2:])) }

// startBatcher runs a batcher over a fake applier until the test ends,
// then answers every unanswered entry with raft.ErrRaftShutdown so that no
// waiter outlives the bubble.
func startBatcher(t *testing.T, fault Fault) (*batcher, *fakeApplier, context.CancelFunc) {
	a := &fakeApplier{}
	b := newBatcher(a, time.Second, fault, func(err error) error { return fmt.Errorf("mapped: %w", err) })
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { b.run(ctx); close(stopped) }()
	t.Cleanup(func() {
		cancel()
		<-stopped
		for _, e := range a.snapshot() {
			select {
			case <-e.f.done:
			default:
				e.f.finish(raft.ErrRaftShutdown)
			}
		}
		synctest.Wait()
	})
	return b, a, cancel
}

type submitted struct {
	resp  fsm.Response
	index uint64
	err   error
}

func submitAsync(ctx context.Context, b *batcher, data []byte) <-chan submitted {
	out := make(chan submitted, 1)
	go func() {
		resp, idx, err := b.submit(ctx, data)
		out <- submitted{resp, idx, err}
	}()
	return out
}

func TestAtMostMaxInflightBatchesAwaitCommitAndTheRestLeaveTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, a, _ := startBatcher(t, NoFault)
		var results []<-chan submitted
		// One at a time, so the first two batches hold one command each.
		for i := range maxInflight {
			results = append(results, submitAsync(t.Context(), b, testCmd(i, 8)))
			synctest.Wait()
		}
		const queued = 50
		for i := range queued {
			results = append(results, submitAsync(t.Context(), b, testCmd(maxInflight+i, 8)))
		}
		synctest.Wait()
		entries := a.snapshot()
		if len(entries) != maxInflight {
			t.Fatalf("%d batches were handed to raft with none committed; want at most %d", len(entries), maxInflight)
		}
		entries[0].commit(1, func([]byte) fsm.Response { return fsm.Response{} })
		synctest.Wait()
		entries = a.snapshot()
		if len(entries) != maxInflight+1 {
			t.Fatalf("after one commit, %d batches were handed to raft; want %d", len(entries), maxInflight+1)
		}
		if got := len(entries[maxInflight].cmds); got != queued {
			t.Fatalf("the commands queued behind full inflight slots left in a batch of %d; want all %d together", got, queued)
		}
		for i, e := range entries[1:] {
			e.commit(uint64(i+2), func([]byte) fsm.Response { return fsm.Response{} })
		}
		for i, r := range results {
			if got := <-r; got.err != nil {
				t.Errorf("write %d: %v", i, got.err)
			}
		}
	})
}

func TestABatchClosesAtItsByteAndCommandCaps(t *testing.T) {
	for _, tc := range []struct {
		name      string
		n, size   int
		wantFirst int // commands in the first batch
	}{
		// 100 KiB commands: the third reaches 256 KiB, so the batch closes
		// with 300 KiB, over the cap by less than its last command.
		{name: "bytes", n: 10, size: 100 << 10, wantFirst: 3},
		{name: "commands", n: maxBatchCommands + 10, size: 8, wantFirst: maxBatchCommands},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b, a, _ := startBatcher(t, NoFault)
				// Hold both inflight slots so everything queues first.
				var results []<-chan submitted
				for i := range maxInflight {
					results = append(results, submitAsync(t.Context(), b, testCmd(-1-i, 8)))
					synctest.Wait()
				}
				for i := range tc.n {
					results = append(results, submitAsync(t.Context(), b, testCmd(i, tc.size)))
				}
				synctest.Wait()
				// Each commit frees a slot, and the next batch forms from
				// the queue.
				for i, seen := 0, 0; seen < tc.n; i++ {
					a.snapshot()[i].commit(uint64(i+1), func([]byte) fsm.Response { return fsm.Response{} })
					synctest.Wait()
					next := a.snapshot()[i+maxInflight]
					size := 0
					for _, c := range next.cmds[:len(next.cmds)-1] {
						size += len(c)
					}
					if size >= maxBatchBytes {
						t.Fatalf("batch %d held %d bytes before its last command; it should have closed at %d", i+maxInflight, size, maxBatchBytes)
					}
					if len(next.cmds) > maxBatchCommands {
						t.Fatalf("batch %d holds %d commands; the cap is %d", i+maxInflight, len(next.cmds), maxBatchCommands)
					}
					if i == 0 && len(next.cmds) != tc.wantFirst {
						t.Fatalf("the first full batch holds %d commands; want %d", len(next.cmds), tc.wantFirst)
					}
					seen += len(next.cmds)
				}
				for _, e := range a.snapshot() {
					select {
					case <-e.f.done:
					default:
						e.commit(99, func([]byte) fsm.Response { return fsm.Response{} })
					}
				}
				for i, r := range results {
					if got := <-r; got.err != nil {
						t.Errorf("write %d: %v", i, got.err)
					}
				}
			})
		})
	}
}

func TestALoneCommandEntersTheLogAsItself(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, a, _ := startBatcher(t, NoFault)
		cmd := testCmd(7, 32)
		r := submitAsync(t.Context(), b, cmd)
		synctest.Wait()
		e := a.snapshot()[0]
		if string(e.data) != string(cmd) {
			t.Fatalf("a lone command entered the log as %x; want the command itself %x", e.data, cmd)
		}
		e.commit(42, func([]byte) fsm.Response { return fsm.Response{Duplicate: true} })
		got := <-r
		if got.err != nil || got.index != 42 || !got.resp.Duplicate {
			t.Fatalf("got (%+v, %d, %v); want the FSM's response at index 42", got.resp, got.index, got.err)
		}
	})
}

func TestAWritesOutcomeReachesExactlyItsCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, a, _ := startBatcher(t, NoFault)
		for i := range maxInflight {
			_ = submitAsync(t.Context(), b, testCmd(-1-i, 8))
			synctest.Wait()
		}
		const n = 20
		results := make([]<-chan submitted, n)
		for i := range n {
			results[i] = submitAsync(t.Context(), b, testCmd(i, 8))
		}
		synctest.Wait()
		// The held batches fail as a whole; the next one commits, and the
		// FSM rejects the odd commands only.
		held := a.snapshot()
		held[0].f.finish(raft.ErrLeadershipLost)
		synctest.Wait()
		batch := a.snapshot()[maxInflight]
		if len(batch.cmds) != n {
			t.Fatalf("the queued writes left in a batch of %d; want %d", len(batch.cmds), n)
		}
		errOdd := errors.New("rejected")
		batch.commit(5, func(c []byte) fsm.Response {
			if cmdNum(c)%2 == 1 {
				return fsm.Response{Err: fmt.Errorf("command %d: %w", cmdNum(c), errOdd)}
			}
			return fsm.Response{Duplicate: cmdNum(c) == 4}
		})
		for i, r := range results {
			got := <-r
			switch {
			case i%2 == 1:
				want := fmt.Sprintf("command %d: rejected", i)
				if got.err != nil || got.resp.Err == nil || got.resp.Err.Error() != want {
					t.Errorf("write %d got (%v, %v); want its own rejection %q", i, got.resp.Err, got.err, want)
				}
			default:
				if got.err != nil || got.resp.Err != nil || got.resp.Duplicate != (i == 4) || got.index != 5 {
					t.Errorf("write %d got (%+v, %d, %v); want success at index 5, duplicate=%v", i, got.resp, got.index, got.err, i == 4)
				}
			}
		}
		held[1].commit(2, func([]byte) fsm.Response { return fsm.Response{} })
	})
}

func TestARaftErrorReachesEveryCallerOfItsBatchAndNoOther(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, a, _ := startBatcher(t, NoFault)
		first := submitAsync(t.Context(), b, testCmd(0, 8))
		synctest.Wait()
		second := submitAsync(t.Context(), b, testCmd(1, 8))
		synctest.Wait()
		entries := a.snapshot()
		if len(entries) != 2 {
			t.Fatalf("%d batches; want 2", len(entries))
		}
		entries[0].f.finish(raft.ErrLeadershipLost)
		got := <-first
		if !errors.Is(got.err, raft.ErrLeadershipLost) || got.err.Error() != "mapped: "+raft.ErrLeadershipLost.Error() {
			t.Fatalf("write in the failed batch got %v; want raft's error through raftError", got.err)
		}
		select {
		case r := <-second:
			t.Fatalf("a write in another batch got %+v before its own batch was answered", r)
		default:
		}
		entries[1].commit(3, func([]byte) fsm.Response { return fsm.Response{} })
		if r := <-second; r.err != nil || r.index != 3 {
			t.Fatalf("write in the committed batch got (%d, %v); want index 3", r.index, r.err)
		}
	})
}

func TestABatchResponseShortOfResultsFailsTheUnansweredWritesAsInternal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, a, _ := startBatcher(t, NoFault)
		for i := range maxInflight {
			_ = submitAsync(t.Context(), b, testCmd(-1-i, 8))
			synctest.Wait()
		}
		r0 := submitAsync(t.Context(), b, testCmd(0, 8))
		r1 := submitAsync(t.Context(), b, testCmd(1, 8))
		synctest.Wait()
		held := a.snapshot()
		held[0].commit(1, func([]byte) fsm.Response { return fsm.Response{} })
		synctest.Wait()
		batch := a.snapshot()[maxInflight]
		if len(batch.cmds) != 2 {
			t.Fatalf("batch of %d; want 2", len(batch.cmds))
		}
		batch.f.resp = fsm.Response{Results: []fsm.Response{{}}}
		batch.f.index = 9
		batch.f.finish(nil)
		// The two were submitted concurrently: the batch's order decides
		// which one the lone result answers.
		byNum := map[int]<-chan submitted{0: r0, 1: r1}
		got := []submitted{<-byNum[cmdNum(batch.cmds[0])], <-byNum[cmdNum(batch.cmds[1])]}
		if got[0].err != nil {
			t.Errorf("the answered write got %v; want success", got[0].err)
		}
		if !errors.Is(got[1].err, transport.ErrInternal) {
			t.Errorf("the unanswered write got %v; want ErrInternal", got[1].err)
		}
		held[1].commit(2, func([]byte) fsm.Response { return fsm.Response{} })
	})
}

func TestAWriteWhoseCallerGivesUpAfterQueueingHasAnUnknownOutcome(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _, _ := startBatcher(t, NoFault)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, _, err := b.submit(ctx, testCmd(0, 8))
		if !errors.Is(err, transport.ErrUnknownOutcome) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v; want ErrUnknownOutcome wrapping the deadline", err)
		}
	})
}

func TestShutdownFailsEveryQueuedWriteWithShuttingDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _, stop := startBatcher(t, NoFault)
		for i := range maxInflight {
			_ = submitAsync(t.Context(), b, testCmd(-1-i, 8))
			synctest.Wait()
		}
		var queued []<-chan submitted
		for i := range 5 {
			queued = append(queued, submitAsync(t.Context(), b, testCmd(i, 8)))
		}
		synctest.Wait()
		stop()
		for i, r := range queued {
			if got := <-r; !errors.Is(got.err, transport.ErrShuttingDown) {
				t.Errorf("queued write %d got %v; want ErrShuttingDown", i, got.err)
			}
		}
	})
}

func TestFaultAckBeforeCommitAcknowledgesUncommittedWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, a, _ := startBatcher(t, FaultAckBeforeCommit)
		_, _, err := b.submit(t.Context(), testCmd(0, 8))
		if err != nil {
			t.Fatalf("got %v; the fault acknowledges at once", err)
		}
		if e := a.snapshot()[0]; func() bool {
			select {
			case <-e.f.done:
				return true
			default:
				return false
			}
		}() {
			t.Fatal("the entry was committed; the test needs it pending")
		}
	})
}
