package transport

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"fileshare/internal/poll"
)

// gatedConn records what is written to it; its first Write blocks until
// gate is closed, and every Write fails with failWith if set.
type gatedConn struct {
	net.Conn // nil: only the methods below are used
	gate     chan struct{}
	failWith error

	mu     sync.Mutex
	writes int
	buf    bytes.Buffer
	closed bool
}

func (c *gatedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	first := c.writes == 1
	c.mu.Unlock()
	if first {
		<-c.gate
	}
	if c.failWith != nil {
		return 0, c.failWith
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *gatedConn) SetWriteDeadline(time.Time) error { return nil }
func (c *gatedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *gatedConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

func (c *gatedConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

func frameOf(payload string) *[]byte {
	p := startFrame()
	*p = append(*p, payload...)
	return p
}

// Frames sent while a write is in progress go out together in the next
// one, whole and in order: concurrent replies on one connection share
// system calls.
func TestFramesQueuedDuringAWriteShareTheNext(t *testing.T) {
	conn := &gatedConn{gate: make(chan struct{})}
	fw := newFrameWriter(conn)
	first := make(chan error, 1)
	go func() { first <- fw.send(frameOf("first")) }()
	poll.Until(t, 5*time.Second, "the first write to begin", func() bool { return conn.count() == 1 })
	want := []string{"first"}
	for i := range 50 {
		msg := string(rune('a'+i%26)) + "-queued"
		want = append(want, msg)
		if err := fw.send(frameOf(msg)); err != nil {
			t.Fatal(err)
		}
	}
	close(conn.gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if n := conn.count(); n != 2 {
		t.Fatalf("51 frames took %d writes, want 2 (the first, then the 50 queued behind it)", n)
	}
	fr := newFrameReader(conn, 0)
	fr.r = bufio.NewReader(bytes.NewReader(conn.buf.Bytes()))
	for i, w := range want {
		p, err := fr.next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if string(*p) != w {
			t.Fatalf("frame %d is %q, want %q", i, *p, w)
		}
	}
}

// A failed write closes the connection (so its reader fails the calls in
// flight) and every later send fails with ErrConnection.
func TestAFailedWriteClosesTheConnection(t *testing.T) {
	conn := &gatedConn{gate: make(chan struct{}), failWith: errors.New("broken pipe")}
	close(conn.gate)
	fw := newFrameWriter(conn)
	if err := fw.send(frameOf("x")); err != nil {
		t.Fatalf("the failing send: %v (it only queues, so want nil)", err)
	}
	if !conn.closed {
		t.Fatal("the connection is still open after a failed write")
	}
	if err := fw.send(frameOf("y")); !errors.Is(err, ErrConnection) {
		t.Fatalf("send after a failed write: %v, want ErrConnection", err)
	}
	fw.stop(ErrShuttingDown)
	if err := fw.send(frameOf("z")); !errors.Is(err, ErrConnection) {
		t.Fatalf("the first error must stick: got %v", err)
	}
}

// A frame over MaxFrameSize is refused before anything is written.
func TestOversizedFrameIsNotSent(t *testing.T) {
	conn := &gatedConn{gate: make(chan struct{})}
	close(conn.gate)
	fw := newFrameWriter(conn)
	p := startFrame()
	*p = append(*p, make([]byte, MaxFrameSize+1)...)
	if err := fw.send(p); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v, want ErrFrameTooLarge", err)
	}
	if conn.count() != 0 {
		t.Fatal("an oversized frame reached the connection")
	}
}

// deadlineConn reads from a fixed buffer and counts deadline changes.
type deadlineConn struct {
	net.Conn // nil: only the methods below are used
	r        *bytes.Reader
	sets     int
}

func (c *deadlineConn) Read(p []byte) (int, error)      { return c.r.Read(p) }
func (c *deadlineConn) SetReadDeadline(time.Time) error { c.sets++; return nil }

// Frames that arrive together are read with one deadline set (before the
// read that may block), not three per frame; a client, which waits
// forever, sets none.
func TestBufferedFramesCostNoDeadlines(t *testing.T) {
	var wire []byte
	for _, m := range []string{"one", "two", "three"} {
		wire = append(wire, *frameOf(m)...)
		binaryPut(wire[len(wire)-len(m)-frameHeaderLen:], len(m))
	}
	for _, tc := range []struct {
		idle time.Duration
		want int
	}{{0, 0}, {time.Minute, 1}} {
		conn := &deadlineConn{r: bytes.NewReader(wire)}
		fr := newFrameReader(conn, tc.idle)
		for _, m := range []string{"one", "two", "three"} {
			p, err := fr.next()
			if err != nil || string(*p) != m {
				t.Fatalf("idle %v: got %q, %v; want %q", tc.idle, *p, err, m)
			}
		}
		if conn.sets != tc.want {
			t.Fatalf("idle %v: three buffered frames set the read deadline %d times, want %d", tc.idle, conn.sets, tc.want)
		}
	}
}

func binaryPut(b []byte, n int) {
	b[0], b[1], b[2], b[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
}
