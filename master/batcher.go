package master

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/fsm"
	"fileshare/transport"
)

// Group commit at the leader. Raft already packs up to MaxAppendEntries
// queued entries into one AppendEntries round and one fsync; the batcher
// goes further and packs concurrent commands into one log entry (an
// fsm.Batch), so a burst of registrations costs one entry, one FSM call and
// one future instead of hundreds.
//
// Group commit needs back-pressure to work: if every queued command went
// to raft at once, batches would stay tiny under load. So at most
// maxInflight batches are between raft.Apply and their commit; while they
// are, new commands queue up and leave together as the next batch.
//
// A batch closes as soon as it holds maxBatchCommands commands or at least
// maxBatchBytes bytes, so it exceeds maxBatchBytes by less than its last
// command.
const (
	maxBatchCommands = 1024      // at most fsm.MaxBatchCommands
	maxBatchBytes    = 256 << 10 // well under raft's SuggestedMaxDataSize
	maxInflight      = 2
	maxQueued        = 4096 // commands waiting for a batch
)

// applier is the one raft call the batcher makes. *raft.Raft implements
// it; tests pass a fake whose futures they complete by hand.
//
// Apply must return at once or after at most timeout (raft blocks only
// while its own queue is full), and every future it returns must be
// answered eventually: the batcher holds an inflight slot until it is.
type applier interface {
	Apply(cmd []byte, timeout time.Duration) raft.ApplyFuture
}

type writeResult struct {
	resp  fsm.Response
	index uint64
	err   error
}

type pendingWrite struct {
	data []byte
	done chan writeResult // buffered(1); receives exactly one result
}

// batcher packs concurrent writes into log entries. submit may be called
// from any goroutine; run must be running (on one goroutine) for submitted
// writes to make progress.
type batcher struct {
	r       applier
	timeout time.Duration // passed to Apply: how long to wait to enter raft's queue
	// ackBeforeCommit is FaultAckBeforeCommit: acknowledge on Apply.
	ackBeforeCommit bool
	// raftError maps an error from a raft future to the error callers
	// see (not leader, unknown outcome, busy, shutting down).
	raftError func(error) error

	queue    chan *pendingWrite
	inflight chan struct{} // one token per batch awaiting its commit

	// observe, if set before run starts, is told about every batch handed
	// to raft (see batchObserver). Nil observes nothing.
	observe batchObserver
}

// batchObserver receives the batcher's measurements (metrics.go). Both
// methods run on batcher goroutines, must be cheap and must not block.
type batchObserver interface {
	// batchProposed: a batch of commands totalling bytes went to raft.
	batchProposed(commands, bytes int)
	// batchApplied: raft answered a batch's future after d, successfully
	// or not (err is raft's error).
	batchApplied(d time.Duration, err error)
}

// newBatcher returns a batcher that proposes through r. Its run loop is
// not started.
func newBatcher(r applier, applyTimeout time.Duration, fault Fault, raftError func(error) error) *batcher {
	return &batcher{
		r:               r,
		timeout:         applyTimeout,
		ackBeforeCommit: fault == FaultAckBeforeCommit,
		raftError:       raftError,
		queue:           make(chan *pendingWrite, maxQueued),
		inflight:        make(chan struct{}, maxInflight),
	}
}

// submit queues an encoded command and blocks until its outcome: the
// command's own fsm.Response and log index once its entry is applied, or
// the error that stopped it (mapped by raftError, or ErrShuttingDown if
// run ended first). Each caller receives only its own command's outcome.
//
// If ctx ends before the command is queued, submit returns ErrBusy wrapped
// with ctx's error (the command certainly did not apply); if ctx ends
// after, ErrUnknownOutcome wrapped with ctx's error (it may still commit).
func (b *batcher) submit(ctx context.Context, data []byte) (fsm.Response, uint64, error) {
	p := &pendingWrite{data: data, done: make(chan writeResult, 1)}
	select {
	case b.queue <- p:
	case <-ctx.Done():
		return fsm.Response{}, 0, fmt.Errorf("%w: %w", transport.ErrBusy, ctx.Err())
	}
	select {
	case r := <-p.done:
		return r.resp, r.index, r.err
	case <-ctx.Done():
		return fsm.Response{}, 0, fmt.Errorf("%w: %w", transport.ErrUnknownOutcome, ctx.Err())
	}
}

// run is the batcher's loop: it forms a batch whenever an inflight slot is
// free and a command is queued, and hands it to raft. It returns when ctx
// ends, failing whatever is still queued with ErrShuttingDown. Batches
// already handed to raft are answered by their waiters (see apply).
func (b *batcher) run(ctx context.Context) {
	for {
		size := 0
		batch, ok := nextBatch(ctx, b.inflight, b.queue, func(batch []*pendingWrite) bool {
			size += len(batch[len(batch)-1].data)
			return len(batch) < maxBatchCommands && size < maxBatchBytes
		})
		if !ok {
			b.drain()
			return
		}
		b.apply(batch)
	}
}

// nextBatch forms the next batch of a group-commit queue (batcher and
// announceQueue). It waits for a free slot, taking it by a send on slots
// (the batch gives it back when it is done), then for the first queued
// item; then it adds the items already queued, without waiting, while
// room says the batch has room for more. room is called each time an
// item joins, the first included, with the batch so far. ok is false if
// ctx ended first; a slot it took then stays taken, as the queue is
// shutting down.
func nextBatch[T any](ctx context.Context, slots chan<- struct{}, queue <-chan T, room func(batch []T) bool) (batch []T, ok bool) {
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return nil, false
	}
	select {
	case first := <-queue:
		batch = []T{first}
	case <-ctx.Done():
		return nil, false
	}
	for room(batch) {
		select {
		case p := <-queue:
			batch = append(batch, p)
		default:
			return batch, true
		}
	}
	return batch, true
}

func (b *batcher) drain() {
	for {
		select {
		case p := <-b.queue:
			p.done <- writeResult{err: transport.ErrShuttingDown}
		default:
			return
		}
	}
}

// apply hands one batch, holding one inflight token, to raft. A lone
// command enters the log as itself; several enter as one fsm.Batch.
// raft.Apply blocks only while raft's own queue is full; the wait for the
// commit happens on a separate goroutine so the next batch can form
// meanwhile.
func (b *batcher) apply(batch []*pendingWrite) {
	data := batch[0].data
	if len(batch) > 1 {
		cmds := make([][]byte, len(batch))
		for i, p := range batch {
			cmds[i] = p.data
		}
		var err error
		data, err = fsm.Encode(fsm.Batch{Commands: cmds})
		if err != nil {
			<-b.inflight
			for _, p := range batch {
				p.done <- writeResult{err: fmt.Errorf("encode batch: %w", err)}
			}
			return
		}
	}
	if b.observe != nil {
		b.observe.batchProposed(len(batch), len(data))
	}
	start := time.Now()
	f := b.r.Apply(data, b.timeout)
	if b.ackBeforeCommit {
		// Deliberately broken: acknowledge before the commit.
		for _, p := range batch {
			p.done <- writeResult{}
		}
		// Owned by the batcher: returns the inflight token once raft
		// answers the future.
		go func() { f.Error(); <-b.inflight }()
		return
	}
	// Owned by the batcher, one per batch in flight (at most
	// maxInflight): it ends when raft answers the future. Raft answers
	// every future it accepted, except one still queued inside raft when
	// raft shuts down; such a waiter then blocks on that future forever,
	// holding only its batch, whose callers have returned on their ctx.
	go b.wait(f, batch, start)
}

// wait delivers one batch's outcome to each of its callers and returns
// the batch's inflight token.
func (b *batcher) wait(f raft.ApplyFuture, batch []*pendingWrite, start time.Time) {
	defer func() { <-b.inflight }()
	err := f.Error()
	if b.observe != nil {
		b.observe.batchApplied(time.Since(start), err)
	}
	if err != nil {
		err = b.raftError(err)
		for _, p := range batch {
			p.done <- writeResult{err: err}
		}
		return
	}
	resp, ok := f.Response().(fsm.Response)
	if !ok {
		err := fmt.Errorf("%w: unexpected apply response %T", transport.ErrInternal, f.Response())
		for _, p := range batch {
			p.done <- writeResult{err: err}
		}
		return
	}
	idx := f.Index()
	if len(batch) == 1 {
		batch[0].done <- writeResult{resp: resp, index: idx}
		return
	}
	for i, p := range batch {
		if i >= len(resp.Results) {
			p.done <- writeResult{err: fmt.Errorf("%w: batch response has %d results for %d commands", transport.ErrInternal, len(resp.Results), len(batch))}
			continue
		}
		p.done <- writeResult{resp: resp.Results[i], index: idx}
	}
}
