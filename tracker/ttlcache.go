package tracker

import (
	"context"
	"sync/atomic"
	"time"
)

// ttlCache holds one value, built by at most one caller at a time and
// served for ttl after it was built: a page that costs a scan of the
// index is built once per ttl however many clients ask. Make it with
// newTTLCache; it is safe for concurrent use.
type ttlCache[T any] struct {
	ttl time.Duration
	sem chan struct{} // one builder at a time
	cur atomic.Pointer[cached[T]]
}

type cached[T any] struct {
	at  time.Time
	val *T
}

func newTTLCache[T any](ttl time.Duration) *ttlCache[T] {
	return &ttlCache[T]{ttl: ttl, sem: make(chan struct{}, 1)}
}

// get returns the cached value if it was built less than ttl ago.
// Otherwise it waits for its turn to build (returning ctx.Err() if ctx
// ends first), returns the value another caller built meanwhile if there
// is one, or calls build with the time now and caches what it returns. A
// value build returns with an error is not cached, and get returns only
// the error.
func (c *ttlCache[T]) get(ctx context.Context, build func(at time.Time) (*T, error)) (*T, error) {
	if v := c.fresh(); v != nil {
		return v, nil
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.sem }()
	if v := c.fresh(); v != nil {
		return v, nil
	}
	at := time.Now()
	v, err := build(at)
	if err != nil {
		return nil, err
	}
	c.cur.Store(&cached[T]{at: at, val: v})
	return v, nil
}

// fresh returns the cached value if it is younger than ttl, else nil.
func (c *ttlCache[T]) fresh() *T {
	if e := c.cur.Load(); e != nil && time.Since(e.at) < c.ttl {
		return e.val
	}
	return nil
}
