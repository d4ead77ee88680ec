package freeport

import (
	"net"
	"strconv"
	"testing"
)

// A chosen port can be listened on, and lies below the ephemeral range.
func TestAddrIsListenableBelowEphemeralRange(t *testing.T) {
	for range 20 {
		a := Loopback(t)
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := strconv.Atoi(p); n >= ephemeralLow() {
			t.Fatalf("port %d is in the ephemeral range (from %d)", n, ephemeralLow())
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("listen on chosen %s: %v", a, err)
		}
		ln.Close()
	}
}
