package peer

// This file owns the download rate limit. A rateLimiter is shared by all of
// one download's workers; its fields are guarded by its mu and touched only
// here.
//
// It is ours rather than golang.org/x/time/rate's because its contract is
// not a token bucket's: the first request is free, each later one waits
// until the previous ones' bytes have had their time at the rate (so there
// is no burst to size, and a request may be larger than any burst, up to
// a 16 MiB piece), and ready lets a worker that has requests in flight
// read them instead of queuing another.

import (
	"context"
	"sync"
	"time"
)

// rateLimiter paces requests to a rate in bytes per second, shared by all
// of a download's workers. Safe for concurrent use.
type rateLimiter struct {
	rate float64 // bytes per second; > 0

	mu   sync.Mutex
	next time.Time // when the next request may be sent
}

// newRateLimiter returns a limiter of bytesPerSecond (> 0).
func newRateLimiter(bytesPerSecond int64) *rateLimiter {
	return &rateLimiter{rate: float64(bytesPerSecond)}
}

// ready reports whether a request may be sent now without waiting.
func (l *rateLimiter) ready() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.next.After(time.Now())
}

// wait reserves n bytes and blocks until the request may be sent: at once
// if the reservations before it have had their time, else when they have.
// It returns ctx's error if ctx ends first; the reservation stands.
func (l *rateLimiter) wait(ctx context.Context, n int64) error {
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	at := l.next
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	l.mu.Unlock()
	wait := time.Until(at)
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
