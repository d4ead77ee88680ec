package jepsenlike

import (
	"context"
	"testing"
	"time"
)

func TestNextSpeaker(t *testing.T) {
	now := time.Now()
	quiet := []time.Time{now.Add(time.Hour), now.Add(time.Hour), now.Add(-time.Second), now.Add(time.Hour)}
	at := func(i int) time.Time { return quiet[i] }
	ctx := context.Background()
	if s, ok := nextSpeaker(ctx, 2, 4, at); s != 2 || !ok {
		t.Fatalf("a peer that may speak: got %d, %t; want 2, true", s, ok)
	}
	if s, ok := nextSpeaker(ctx, 3, 4, at); s != 2 || !ok {
		t.Fatalf("a quiet peer: got %d, %t; want the next that may speak, 2", s, ok)
	}
	quiet[2] = now.Add(20 * time.Millisecond)
	if s, ok := nextSpeaker(ctx, 2, 4, at); s != 2 || !ok || time.Now().Before(quiet[2]) {
		t.Fatalf("all quiet: got %d, %t at %v; want 2, true after its quiet time", s, ok, time.Since(now))
	}
	quiet[2] = now.Add(time.Hour)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, ok := nextSpeaker(cctx, 0, 4, at); ok {
		t.Fatal("all quiet for an hour and the context ended: want false")
	}
}
