package master

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"fileshare/fsm"
	"fileshare/internal/poll"
	"fileshare/transport"
)

// Changes that arrive while the queue's batches are out leave together:
// a hundred changes queued behind one batch in flight form one batch, and
// each caller gets its own change's outcome.
func TestAnnounceQueueBatchesWhatWaits(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var sizes []int
	q := newAnnounceQueue(fsm.MaxAnnouncesPerBatch, 1, func(_ context.Context, batch []*pendingAnnounce) {
		mu.Lock()
		sizes = append(sizes, len(batch))
		mu.Unlock()
		<-release
		for _, p := range batch {
			p.answer(uint64(p.a.Port), nil)
		}
	})
	ctx, cancel := context.WithCancel(t.Context())
	var run sync.WaitGroup
	run.Go(func() { q.run(ctx) })
	defer func() { cancel(); run.Wait() }()

	first, err := q.enqueue(ctx, fsm.Announce{Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the first batch to be out", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(sizes) == 1
	})
	var pending []*pendingAnnounce
	for i := range 100 {
		p, err := q.enqueue(ctx, fsm.Announce{Port: uint16(i + 2)})
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p)
	}
	close(release)
	if idx, err := first.wait(ctx); idx != 1 || err != nil {
		t.Fatalf("first: got %d, %v", idx, err)
	}
	for i, p := range pending {
		if idx, err := p.wait(ctx); idx != uint64(i+2) || err != nil {
			t.Fatalf("change %d: got %d, %v; want its own outcome", i, idx, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 2 || sizes[1] != 100 {
		t.Fatalf("batch sizes %v, want [1 100]", sizes)
	}
}

// A queue that stops fails what is still queued with ErrShuttingDown, and
// a caller whose context ends while it waits learns that the outcome is
// unknown.
func TestAnnounceQueueShutdownAndUnknownOutcome(t *testing.T) {
	q := newAnnounceQueue(10, 1, func(ctx context.Context, batch []*pendingAnnounce) {
		<-ctx.Done()
		for _, p := range batch {
			p.answer(0, transport.ErrShuttingDown)
		}
	})
	ctx, cancel := context.WithCancel(t.Context())
	var run sync.WaitGroup
	run.Go(func() { q.run(ctx) })
	wctx, wcancel := context.WithCancel(t.Context())
	wcancel()
	if _, err := q.submit(wctx, fsm.Announce{}, nil); !errors.Is(err, transport.ErrBusy) && !errors.Is(err, transport.ErrUnknownOutcome) {
		t.Fatalf("submit with an ended context: %v", err)
	}
	var ps []*pendingAnnounce
	for range 3 {
		p, err := q.enqueue(t.Context(), fsm.Announce{})
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	cancel()
	run.Wait()
	for _, p := range ps {
		if _, err := p.wait(t.Context()); !errors.Is(err, transport.ErrShuttingDown) {
			t.Fatalf("after shutdown: %v, want ErrShuttingDown", err)
		}
	}
}
