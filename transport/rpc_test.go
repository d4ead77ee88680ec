package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

type echoReq struct {
	Msg   string
	Sleep time.Duration
}
type echoResp struct{ Msg string }

var errTestSentinel = NewError("test_sentinel", "test sentinel")

// startServer runs an RPC server on a fresh Mux and returns its address.
func startServer(t *testing.T) (*Mux, string) {
	t.Helper()
	m, err := Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(nil)
	Handle(s, "Echo", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		if r.Sleep > 0 {
			select {
			case <-time.After(r.Sleep):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return &echoResp{Msg: r.Msg}, nil
	})
	Handle(s, "Fail", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		return nil, errTestSentinel
	})
	Handle(s, "NotLeader", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		return nil, &NotLeaderError{LeaderID: "m2", LeaderAddr: "127.0.0.1:7002"}
	})
	Handle(s, "Panic", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		panic("boom")
	})
	go s.Serve(m.Listener(StreamRPC))
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, m.Addr().String()
}

func TestCallRoundTripAndErrors(t *testing.T) {
	_, addr := startServer(t)
	c := NewClient(ClientConfig{})
	defer c.Close()
	ctx := t.Context()

	var out echoResp
	if err := c.Call(ctx, addr, "Echo", &echoReq{Msg: "hi"}, &out); err != nil || out.Msg != "hi" {
		t.Fatalf("Echo: got %q, %v; want hi, nil", out.Msg, err)
	}
	if err := c.Call(ctx, addr, "Fail", &echoReq{}, &out); !errors.Is(err, errTestSentinel) {
		t.Fatalf("Fail: got %v; want an error matching errTestSentinel", err)
	}
	err := c.Call(ctx, addr, "NotLeader", &echoReq{}, &out)
	var nl *NotLeaderError
	if !errors.As(err, &nl) || nl.LeaderID != "m2" || nl.LeaderAddr != "127.0.0.1:7002" || !errors.Is(err, ErrNotLeader) {
		t.Fatalf("NotLeader: got %#v; want NotLeaderError{m2, 127.0.0.1:7002}", err)
	}
	if err := c.Call(ctx, addr, "Nope", &echoReq{}, &out); !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("unknown method: got %v; want ErrUnknownMethod", err)
	}
	if err := c.Call(ctx, addr, "Panic", &echoReq{}, &out); !errors.Is(err, ErrInternal) {
		t.Fatalf("panicking handler: got %v; want ErrInternal", err)
	}
	// The server survived the panic.
	if err := c.Call(ctx, addr, "Echo", &echoReq{Msg: "still here"}, &out); err != nil {
		t.Fatalf("after panic: %v", err)
	}
}

func TestCallDeadlineReachesServer(t *testing.T) {
	_, addr := startServer(t)
	c := NewClient(ClientConfig{})
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err := c.Call(ctx, addr, "Echo", &echoReq{Msg: "slow", Sleep: time.Minute}, nil)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v; want ErrTimeout and context.DeadlineExceeded", err)
	}
}

func TestConcurrentCallsShareOneConnection(t *testing.T) {
	_, addr := startServer(t)
	c := NewClient(ClientConfig{})
	defer c.Close()
	errs := make(chan error, 200)
	for i := range 200 {
		go func() {
			var out echoResp
			msg := string(rune('a' + i%26))
			err := c.Call(t.Context(), addr, "Echo", &echoReq{Msg: msg}, &out)
			if err == nil && out.Msg != msg {
				err = errors.New("reply mixed up: got " + out.Msg + " want " + msg)
			}
			errs <- err
		}()
	}
	for range 200 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.conns); n != 1 {
		t.Fatalf("got %d connections, want 1", n)
	}
}

func TestDialNowhereIsConnectionError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := NewClient(ClientConfig{})
	defer c.Close()
	if err := c.Call(t.Context(), addr, "Echo", &echoReq{}, nil); !errors.Is(err, ErrConnection) {
		t.Fatalf("got %v; want ErrConnection", err)
	}
}

// A hostile client that announces a huge frame is disconnected without the
// server allocating it, and the server keeps serving others.
func TestOversizedAndMalformedFramesAreRejected(t *testing.T) {
	m, addr := startServer(t)
	for name, payload := range map[string][]byte{
		"oversized": binary.BigEndian.AppendUint32(nil, 1<<31),
		"garbage":   append(binary.BigEndian.AppendUint32(nil, 4), 0xc1, 0xff, 0x00, 0x13),
	} {
		t.Run(name, func(t *testing.T) {
			conn, err := m.DialStream(addr, StreamRPC, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write(payload)
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(conn); err != nil {
				t.Fatalf("want the server to close the connection, got %v", err)
			}
		})
	}
	c := NewClient(ClientConfig{})
	defer c.Close()
	if err := c.Call(t.Context(), addr, "Echo", &echoReq{Msg: "x"}, nil); err != nil {
		t.Fatalf("server stopped serving: %v", err)
	}
}

func TestMuxRoutesByFirstByte(t *testing.T) {
	m, err := Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	piece := m.Listener(StreamPiece)
	got := make(chan []byte, 1)
	go func() {
		c, err := piece.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b := make([]byte, 5)
		io.ReadFull(c, b)
		got <- b
	}()
	conn, err := m.DialStream(m.Addr().String(), StreamPiece, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("hello"))
	if b := <-got; !bytes.Equal(b, []byte("hello")) {
		t.Fatalf("piece listener got %q, want hello", b)
	}
	// An unknown kind is closed.
	c2, err := m.DialStream(m.Addr().String(), 0x7f, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatalf("unknown stream kind: read %d bytes, want the connection closed", n)
	}
}

func FuzzUnmarshalRequest(f *testing.F) {
	for _, r := range []any{
		&request{ID: 1, Method: "Echo", Timeout: 5, Body: []byte{0x80}},
		&response{ID: 3, Err: &wireError{Code: "not_leader", LeaderID: "m1"}},
	} {
		b, err := Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req request
		_ = Unmarshal(b, &req)
		var resp response
		_ = Unmarshal(b, &resp)
	})
}

// Tracked connections keep io.ReaderFrom, so io.Copy from a file to a peer
// connection can still use sendfile.
func TestTrackedConnKeepsReaderFrom(t *testing.T) {
	m, err := Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ln := m.Listener(StreamPiece)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	conn, err := m.DialStream(m.Addr().String(), StreamPiece, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rf, ok := conn.(io.ReaderFrom)
	if !ok {
		t.Fatalf("%T does not implement io.ReaderFrom", conn)
	}
	if n, err := rf.ReadFrom(bytes.NewReader(make([]byte, 1000))); err != nil || n != 1000 {
		t.Fatalf("ReadFrom: %d, %v; want 1000, nil", n, err)
	}
}

// Closing one stream's listener (as the RPC server does when it stops)
// leaves the other streams served: Raft must outlive RPC at shutdown.
func TestClosingOneStreamLeavesOthersOpen(t *testing.T) {
	m, err := Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rpcLn, raftLn := m.Listener(StreamRPC), m.Listener(StreamRaft)
	rpcLn.Close()
	if _, err := rpcLn.Accept(); !errors.Is(err, ErrMuxClosed) {
		t.Fatalf("Accept on a closed stream: got %v, want ErrMuxClosed", err)
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := raftLn.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	conn, err := m.DialStream(m.Addr().String(), StreamRaft, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := <-accepted; err != nil {
		t.Fatalf("raft stream after closing the rpc stream: %v", err)
	}
}
