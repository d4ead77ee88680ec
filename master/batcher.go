package master

import (
	"context"
	"fmt"

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
const (
	maxBatchCommands = 1024
	maxBatchBytes    = 256 << 10 // well under raft's SuggestedMaxDataSize
	maxInflight      = 2
)

type writeResult struct {
	resp  fsm.Response
	index uint64
	err   error
}

type pendingWrite struct {
	data []byte
	done chan writeResult // buffered(1)
}

type batcher struct {
	m        *Master
	queue    chan *pendingWrite
	inflight chan struct{} // one token per batch awaiting its commit
}

func newBatcher(m *Master) *batcher {
	return &batcher{m: m, queue: make(chan *pendingWrite, 4096), inflight: make(chan struct{}, maxInflight)}
}

// submit queues an encoded command and waits for its outcome. It returns
// ErrUnknownOutcome wrapped with ctx's error if ctx ends after the command
// was queued (it may still commit).
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

// run is the batcher's loop; it owns no state beyond the queue and returns
// when ctx ends, failing whatever is still queued.
func (b *batcher) run(ctx context.Context) {
	for {
		select {
		case b.inflight <- struct{}{}:
		case <-ctx.Done():
			b.drain()
			return
		}
		var first *pendingWrite
		select {
		case first = <-b.queue:
		case <-ctx.Done():
			b.drain()
			return
		}
		batch := []*pendingWrite{first}
		size := len(first.data)
	fill:
		for len(batch) < maxBatchCommands && size < maxBatchBytes {
			select {
			case p := <-b.queue:
				batch = append(batch, p)
				size += len(p.data)
			default:
				break fill
			}
		}
		b.apply(batch)
	}
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

// apply hands one batch to raft. raft.Apply blocks only while raft's own
// queue is full; the wait for the commit happens on a separate goroutine so
// the next batch can form meanwhile.
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
	f := b.m.raft.Apply(data, b.m.cfg.ApplyTimeout)
	if b.m.cfg.Fault == FaultAckBeforeCommit {
		// Deliberately broken: acknowledge before the commit.
		for _, p := range batch {
			p.done <- writeResult{}
		}
		go func() { f.Error(); <-b.inflight }()
		return
	}
	go b.wait(f, batch)
}

func (b *batcher) wait(f raft.ApplyFuture, batch []*pendingWrite) {
	defer func() { <-b.inflight }()
	if err := f.Error(); err != nil {
		err = b.m.raftError(err)
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
