package master

import (
	"sync"

	"github.com/hashicorp/raft"
)

// pipelineTransport is raft's NetworkTransport with append pipelines that
// cannot wedge a follower's replication.
//
// hashicorp/raft (v1.7.3, issue #612) stops reading a pipeline's
// responses as soon as a follower answers an append with Success=false —
// a follower whose disk is full (or whose log store fails for any other
// reason) does — and only then, on a later turn of its send loop, stops
// sending on it. With the transport's default of two appends in flight its
// channels are unbuffered, so the one or two appends it may still send
// park its response decoder and then its sender for good: the leader keeps
// heartbeating that follower (so it never starts an election) but never
// sends it another entry, and the follower stays behind until the leader
// changes. The pipelines here hand every response to a queue of their own,
// so nothing that raft no longer reads can hold the sender, and raft's send
// loop leaves the pipeline as it was meant to, replicating entry by entry
// from where the follower really is.
type pipelineTransport struct {
	*raft.NetworkTransport
}

// AppendEntriesPipeline implements raft.Transport.
func (t pipelineTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return newQueuedPipeline(p), nil
}

// maxQueuedResponses bounds the responses a pipeline keeps that raft has
// not read. Raft reads each at once while it uses the pipeline, and sends
// at most a few more after it stopped reading (each turn of its send loop
// leaves with even odds), so the bound is never reached; if it were, the
// pipeline would apply back-pressure again, as raft's own does.
const maxQueuedResponses = 1024

// queuedPipeline forwards the responses of the pipeline it wraps through
// a queue, so its decoder never waits for raft. One goroutine (forward)
// moves them; Close stops it and waits for it.
type queuedPipeline struct {
	raft.AppendPipeline
	out chan raft.AppendFuture

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func newQueuedPipeline(p raft.AppendPipeline) *queuedPipeline {
	q := &queuedPipeline{AppendPipeline: p, out: make(chan raft.AppendFuture), stop: make(chan struct{}), done: make(chan struct{})}
	go q.forward(p.Consumer())
	return q
}

func (q *queuedPipeline) forward(in <-chan raft.AppendFuture) {
	defer close(q.done)
	var queue []raft.AppendFuture
	for {
		var out chan raft.AppendFuture
		var next raft.AppendFuture
		if len(queue) > 0 {
			out, next = q.out, queue[0]
		}
		recv := in
		if len(queue) >= maxQueuedResponses {
			recv = nil
		}
		select {
		case f := <-recv:
			queue = append(queue, f)
		case out <- next:
			queue[0] = nil
			queue = queue[1:]
		case <-q.stop:
			return
		}
	}
}

// Consumer implements raft.AppendPipeline.
func (q *queuedPipeline) Consumer() <-chan raft.AppendFuture { return q.out }

// Close implements raft.AppendPipeline: it closes the wrapped pipeline and
// stops the forwarding goroutine. Safe to call twice.
func (q *queuedPipeline) Close() error {
	err := q.AppendPipeline.Close()
	q.stopOnce.Do(func() { close(q.stop) })
	<-q.done
	return err
}
