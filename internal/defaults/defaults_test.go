package defaults

import (
	"testing"
	"time"
)

func TestFill(t *testing.T) {
	var d time.Duration
	Fill(&d, time.Second)
	if d != time.Second {
		t.Fatalf("a zero duration: %v, want the default 1s", d)
	}
	Fill(&d, time.Minute)
	if d != time.Second {
		t.Fatalf("a set duration: %v, want it kept (1s)", d)
	}
	s := ""
	Fill(&s, "udp")
	if s != "udp" {
		t.Fatalf("an empty string: %q, want the default", s)
	}
	n := -1
	Fill(&n, 5)
	if n != -1 {
		t.Fatalf("a negative number is not zero: %d, want it kept", n)
	}
}
