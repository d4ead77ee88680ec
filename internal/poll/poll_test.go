package poll

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// Wait returns as soon as the condition holds, and ctx's error once ctx
// ends while it still does not.
func TestWaitStopsWhenTheConditionHoldsOrTheContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		calls := 0
		if err := Wait(t.Context(), func() bool { calls++; return time.Since(start) >= time.Second }); err != nil {
			t.Fatalf("Wait: %v, want nil", err)
		}
		if got := time.Since(start); got > time.Second+maxInterval {
			t.Fatalf("Wait returned %v after the condition held at 1s, want within %v", got, maxInterval)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		if err := Wait(ctx, func() bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait on a condition that never holds: %v, want DeadlineExceeded", err)
		}
	})
}
