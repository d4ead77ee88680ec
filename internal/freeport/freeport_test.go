package freeport

import (
	"errors"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
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

// A call to a Silent address connects and then waits for an answer that
// never comes.
func TestSilentAcceptsAndNeverAnswers(t *testing.T) {
	c, err := net.Dial("tcp", Silent(t))
	if err != nil {
		t.Fatalf("dial a silent address: %v", err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read from a silent address: %d bytes, %v; want a deadline", n, err)
	}
}
