package transport

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type recordedCall struct{ method, code string }

type callRecorder struct {
	mu    sync.Mutex
	calls []recordedCall
}

func (r *callRecorder) ObserveCall(method, code string, d time.Duration) {
	if d < 0 {
		panic("negative duration")
	}
	r.mu.Lock()
	r.calls = append(r.calls, recordedCall{method, code})
	r.mu.Unlock()
}

// The observer sees every answered call with its method and wire code, and
// an unregistered method name collapses into one label value, so a
// stranger sending random names cannot grow the metrics without bound.
func TestObserverSeesEveryCallWithBoundedLabels(t *testing.T) {
	m, err := Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(nil)
	Handle(s, "Echo", func(ctx context.Context, r *echoReq) (*echoResp, error) { return &echoResp{Msg: r.Msg}, nil })
	Handle(s, "Fail", func(ctx context.Context, r *echoReq) (*echoResp, error) { return nil, errTestSentinel })
	rec := &callRecorder{}
	s.SetObserver(rec)
	go s.Serve(m.Listener(StreamRPC))
	t.Cleanup(func() { s.Close(); m.Close() })

	c := NewClient(ClientConfig{})
	defer c.Close()
	var out echoResp
	if err := c.Call(t.Context(), m.Addr().String(), "Echo", &echoReq{Msg: "hi"}, &out); err != nil {
		t.Fatal(err)
	}
	if err := c.Call(t.Context(), m.Addr().String(), "Fail", &echoReq{}, &out); !errors.Is(err, errTestSentinel) {
		t.Fatalf("Fail: got %v, want the sentinel", err)
	}
	if err := c.Call(t.Context(), m.Addr().String(), "No.Such.Method.x7", &echoReq{}, &out); !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("unknown method: got %v, want ErrUnknownMethod", err)
	}
	s.SetObserver(nil)
	if err := c.Call(t.Context(), m.Addr().String(), "Echo", &echoReq{}, &out); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := []recordedCall{{"Echo", CodeOK}, {"Fail", "test_sentinel"}, {UnknownMethodLabel, "unknown_method"}}
	if len(rec.calls) != len(want) {
		t.Fatalf("observed %v, want %v (nothing after SetObserver(nil))", rec.calls, want)
	}
	for i := range want {
		if rec.calls[i] != want[i] {
			t.Errorf("call %d: got %v, want %v", i, rec.calls[i], want[i])
		}
	}
}
