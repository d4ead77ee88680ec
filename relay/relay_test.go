package relay

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"
)

func FuzzParseRequest(f *testing.F) {
	f.Add(Request{Role: RoleDialer}.Append(nil))
	f.Add([]byte{1, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(r.Append(nil), b) {
			t.Fatalf("%x decodes to %+v, which encodes differently", b, r)
		}
	})
}

// serve starts a relay on a loopback listener and returns its address.
func serve(t *testing.T, lim Limits) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(lim, nil)
	done := make(chan struct{})
	go func() { s.Serve(ln); close(done) }()
	t.Cleanup(func() { ln.Close(); <-done; s.Close() })
	return s, ln.Addr().String()
}

func join(t *testing.T, addr string, role byte, tok byte, errc chan<- error) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		errc <- Join(ctx, c, Request{Role: role, Token: [TokenLen]byte{tok}})
	}()
	return c
}

// Two sides with the same token are spliced; a circuit is closed when it
// has carried MaxBytes; a third side for a full relay is refused.
func TestCircuitsPairCarryAndStopAtTheirLimits(t *testing.T) {
	s, addr := serve(t, Limits{MaxCircuits: 1, MaxBytes: 1000})
	errc := make(chan error, 3)
	a := join(t, addr, RoleDialer, 1, errc)
	b := join(t, addr, RoleListener, 1, errc)
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	a.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("relayed %q, %v", buf, err)
	}
	// The relay is full (one circuit): another is refused at once.
	c := join(t, addr, RoleDialer, 2, errc)
	if err := <-errc; err == nil {
		t.Fatal("a second circuit on a relay limited to one was accepted")
	}
	c.Close()
	// Past MaxBytes the circuit closes.
	a.Write(make([]byte, 2000))
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := io.Copy(io.Discard, b)
	if n > 1000 {
		t.Fatalf("the circuit carried %d bytes past its limit of 1000", n+5)
	}
	if s.Circuits.Load() != 1 {
		t.Fatalf("circuits = %d, want 1", s.Circuits.Load())
	}
}

// Limits.Rate caps the bytes per second of the whole relay.
func TestRateCapsTheRelay(t *testing.T) {
	_, addr := serve(t, Limits{Rate: 1 << 20})
	errc := make(chan error, 2)
	a := join(t, addr, RoleDialer, 1, errc)
	b := join(t, addr, RoleListener, 1, errc)
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	go a.Write(make([]byte, 1<<20))
	if _, err := io.ReadFull(b, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	// 1 MiB at 1 MiB/s with a 0.1 s burst: at least 0.9 s.
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Fatalf("1 MiB crossed a 1 MiB/s relay in %v", d)
	}
}
