package peer

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// The limiter paces requests at its rate: the first is free, each later
// one waits until the earlier ones' bytes have had their time, idling
// builds up no burst, and ready says whether a request would wait.
func TestRateLimiterPacesRequestsAtItsRate(t *testing.T) {
	const rate = 1 << 20 // bytes per second
	for _, tc := range []struct {
		name  string
		idle  time.Duration // before the requests
		sizes []int64
		want  []time.Duration // when each request may go, from the first
	}{
		{"one request is free", 0, []int64{4 << 20}, []time.Duration{0}},
		{"each waits for the one before", 0, []int64{1 << 20, 1 << 19, 1 << 20}, []time.Duration{0, time.Second, 1500 * time.Millisecond}},
		{"idling builds no burst", 10 * time.Second, []int64{1 << 20, 1 << 20}, []time.Duration{0, time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newRateLimiter(rate)
				time.Sleep(tc.idle)
				start := time.Now()
				for k, n := range tc.sizes {
					if got, want := l.ready(), tc.want[k] <= time.Since(start); got != want {
						t.Fatalf("request %d: ready() = %v at %v, want %v", k, got, time.Since(start), want)
					}
					if err := l.wait(t.Context(), n); err != nil {
						t.Fatal(err)
					}
					if got := time.Since(start); got != tc.want[k] {
						t.Fatalf("request %d of %d bytes went at %v, want %v", k, n, got, tc.want[k])
					}
				}
			})
		})
	}
}

// Workers sharing one limiter share its rate: three concurrent requests of
// a second's bytes each go at 0, 1 and 2 s, in some order.
func TestRateLimiterIsSharedByConcurrentWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newRateLimiter(1 << 20)
		start := time.Now()
		went := make(chan time.Duration, 3)
		for range 3 {
			go func() {
				if err := l.wait(t.Context(), 1<<20); err != nil {
					t.Error(err)
				}
				went <- time.Since(start)
			}()
		}
		seen := map[time.Duration]bool{}
		for range 3 {
			seen[<-went] = true
		}
		for _, want := range []time.Duration{0, time.Second, 2 * time.Second} {
			if !seen[want] {
				t.Fatalf("requests went at %v, want at 0, 1 s and 2 s", seen)
			}
		}
	})
}

// A request waiting for its turn gives up when its context ends.
func TestRateLimiterWaitEndsWithTheContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newRateLimiter(1 << 20)
		if err := l.wait(t.Context(), 10<<20); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start := time.Now()
		if err := l.wait(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("wait past the context's deadline: %v, want context.DeadlineExceeded", err)
		}
		if got := time.Since(start); got != time.Second {
			t.Fatalf("wait returned after %v, want the context's 1 s", got)
		}
	})
}
