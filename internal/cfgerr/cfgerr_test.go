package cfgerr

import (
	"errors"
	"fmt"
	"testing"
)

var errBase = errors.New("invalid configuration")

func TestErrorNamesFieldsAndKeepsIdentity(t *testing.T) {
	e := New(errBase, "Tracker.PeerLifetime", "{Tracker.PeerLifetime} 1m must exceed {Tracker.Interval} 2m")
	wrapped := fmt.Errorf("start: %w", e)
	if !errors.Is(wrapped, errBase) {
		t.Fatal("errors.Is(wrapped, errBase) = false, want true")
	}
	var ce *Error
	if !errors.As(wrapped, &ce) || ce.Field != "Tracker.PeerLifetime" {
		t.Fatalf("errors.As: got %+v, want Field Tracker.PeerLifetime", ce)
	}
	if got, want := e.Error(), "invalid configuration: Tracker.PeerLifetime 1m must exceed Tracker.Interval 2m"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	flags := map[string]string{"Tracker.PeerLifetime": "--tracker-peer-lifetime"}
	got := e.Format(func(f string) string { return flags[f] })
	if want := "invalid configuration: --tracker-peer-lifetime 1m must exceed Tracker.Interval 2m"; got != want {
		t.Errorf("Format = %q, want %q", got, want)
	}
}
