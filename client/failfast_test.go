package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"fileshare/internal/freeport"
	"fileshare/transport"
)

// failFastBudget is how long a call may take to give up on addresses where
// nothing (or the wrong thing) listens; without fail-fast it would wait
// for its whole deadline.
const failFastBudget = 900 * time.Millisecond

// liveMaster serves MethodPeers on a plaintext Mux: enough of a master for
// Call to succeed against it.
func liveMaster(t *testing.T) string {
	t.Helper()
	m, err := transport.Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := transport.NewServer(nil)
	transport.Handle(s, MethodPeers, func(ctx context.Context, _ *PeersRequest) (*PeersReply, error) {
		return &PeersReply{}, nil
	})
	go s.Serve(m.Listener(transport.StreamRPC))
	t.Cleanup(func() { s.Close(); m.Close() })
	return m.Addr().String()
}

func newTestClient(t *testing.T, masters ...string) *Client {
	t.Helper()
	c, err := New(Config{Masters: masters, AttemptTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// When every master refuses the connection, a call fails at once with an
// error that names every address, not after its deadline.
func TestACallWhereNothingListensFailsAtOnce(t *testing.T) {
	addrs := []string{freeport.Loopback(t), freeport.Loopback(t), freeport.Loopback(t)}
	c := newTestClient(t, addrs...)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.Peers(ctx, ReadLinearizable)
	if took := time.Since(start); took > failFastBudget {
		t.Fatalf("took %v to give up on refusing masters, want under %v", took, failFastBudget)
	}
	if !errors.Is(err, ErrNothingListens) {
		t.Fatalf("got %v; want ErrNothingListens", err)
	}
	for _, a := range addrs {
		if !strings.Contains(err.Error(), a) {
			t.Fatalf("error %q does not name %s", err, a)
		}
	}
}

// One master down (refusing) does not fail a call another master serves.
func TestARefusingMasterIsSkippedForALiveOne(t *testing.T) {
	c := newTestClient(t, freeport.Loopback(t), liveMaster(t), freeport.Loopback(t))
	for range 5 { // the client starts at a random master
		if _, err := c.Peers(t.Context(), ReadLinearizable); err != nil {
			t.Fatalf("a live master was listed but the call failed: %v", err)
		}
	}
}

// A master that accepts but does not answer (paused, or busy) may yet
// answer, so a call keeps retrying it until the deadline even when the
// others refuse: only a pass in which every master refused fails fast.
func TestASilentMasterIsRetriedUntilTheDeadline(t *testing.T) {
	c := newTestClient(t, freeport.Loopback(t), freeport.Silent(t))
	ctx, cancel := context.WithTimeout(t.Context(), 700*time.Millisecond)
	defer cancel()
	_, err := c.Peers(ctx, ReadLinearizable)
	if errors.Is(err, ErrNothingListens) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v; want the deadline, not ErrNothingListens", err)
	}
}

// A master's HTTP port given as its cluster port fails the call at once
// with transport.ErrNotFileShare, which says to use the cluster port.
func TestAnHTTPPortInMastersFailsAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := newTestClient(t, ln.Addr().String())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = c.Peers(ctx, ReadLinearizable)
	if took := time.Since(start); took > failFastBudget {
		t.Fatalf("took %v to recognise an HTTP port, want under %v", took, failFastBudget)
	}
	if !errors.Is(err, transport.ErrNotFileShare) || !strings.Contains(err.Error(), "cluster port") {
		t.Fatalf("got %v; want ErrNotFileShare naming the cluster port", err)
	}
}
