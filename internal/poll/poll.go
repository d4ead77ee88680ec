// Package poll waits for a condition by checking it again and again, with
// a short backoff, instead of sleeping for a guessed time.
package poll

import (
	"context"
	"testing"
	"time"
)

// maxInterval caps the backoff between checks.
const maxInterval = 50 * time.Millisecond

// Until checks cond until it returns true, failing tb with "timed out
// after TIMEOUT waiting for: WHAT" if timeout passes first.
func Until(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if Wait(ctx, cond) != nil {
		tb.Fatalf("timed out after %v waiting for: %s", timeout, what)
	}
}

// Wait checks cond until it returns true (nil) or ctx ends (ctx's error).
// Checks start 1 ms apart and back off to 50 ms.
func Wait(ctx context.Context, cond func() bool) error {
	for d := time.Millisecond; !cond(); d = min(2*d, maxInterval) {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
