package tracker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// deadlines hands out contexts that end about BackendTimeout after the
// call, shared by every call in the same tick, so a front-end bounds each
// Backend call without allocating a context and a timer per request. A
// call gets between BackendTimeout-tick and BackendTimeout; each tick
// costs one context (and its timer) while it lives, so about
// BackendTimeout/tick of them are alive at once.
type deadlines struct {
	parent context.Context
	tick   int64 // ns
	mu     sync.Mutex
	cur    atomic.Pointer[deadlineCtx]
}

type deadlineCtx struct {
	ctx    context.Context
	cancel context.CancelFunc // never called: the timer ends ctx
	made   int64              // ns
}

const deadlineTick = 250 * time.Millisecond

func newDeadlines(parent context.Context) *deadlines {
	return &deadlines{parent: parent, tick: int64(deadlineTick)}
}

// get returns a context that ends at most BackendTimeout after now (ns,
// wall clock) and at least BackendTimeout-tick, or when the parent ends.
func (d *deadlines) get(now int64) context.Context {
	if c := d.cur.Load(); c != nil && now-c.made < d.tick && now >= c.made {
		return c.ctx
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.cur.Load(); c != nil && now-c.made < d.tick && now >= c.made {
		return c.ctx
	}
	// The context's timer ends it (and frees it) at its deadline, at most
	// BackendTimeout from now, so its cancel func need not be called.
	ctx, cancel := context.WithTimeout(d.parent, BackendTimeout)
	d.cur.Store(&deadlineCtx{ctx: ctx, cancel: cancel, made: now})
	return ctx
}
