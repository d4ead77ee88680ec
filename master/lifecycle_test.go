package master

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/freeport"
	"fileshare/internal/poll"
)

// soloConfig is a one-master cluster with HTTP on.
func soloConfig(t *testing.T) Config {
	addr := freeport.Loopback(t)
	return Config{
		ID: "solo", DataDir: t.TempDir(), Listen: addr, HTTP: "127.0.0.1:0",
		InitialCluster: []Member{{ID: "solo", Addr: addr}},
	}
}

// startSolo starts cfg's master and waits until it serves reads. The test
// stops it, if it has not.
func startSolo(t *testing.T, cfg Config) *Master {
	t.Helper()
	m, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.CloseNow() })
	poll.Until(t, 10*time.Second, "the lone master leads and has passed its barrier", m.leaderReady)
	return m
}

// exercise makes m run every kind of goroutine it has: a write through the
// batcher, a linearizable read through the verifier, an HTTP request.
func exercise(t *testing.T, m *Master) {
	t.Helper()
	cl, err := client.New(client.Config{Masters: []string{m.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	id, err := client.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Join(t.Context(), id, "127.0.0.1:9100"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Peers(t.Context(), client.ReadLinearizable); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + m.HTTPAddr() + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
}

// goroutineIDs returns the ID of every goroutine now running.
func goroutineIDs() map[int]bool {
	ids := map[int]bool{}
	for _, g := range goroutineStacks() {
		ids[goroutineID(g)] = true
	}
	return ids
}

func goroutineStacks() []string {
	buf := make([]byte, 8<<20)
	return strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n")
}

func goroutineID(stack string) int {
	f := strings.Fields(stack) // "goroutine 12 [running]:"
	if len(f) < 2 {
		return -1
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// masterGoroutines returns the stacks of goroutines not in before that run
// the master's code or the libraries it starts (raft, its transport, the
// log store), other than tests.
func masterGoroutines(before map[int]bool) []string {
	var out []string
	for _, g := range goroutineStacks() {
		if before[goroutineID(g)] || strings.Contains(g, "fileshare/master.Test") {
			continue
		}
		for _, code := range []string{"fileshare/master.", "fileshare/transport.", "hashicorp/raft", "bbolt", "net/http.(*conn)"} {
			if strings.Contains(g, code) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

func TestShutdownStopsEveryGoroutineTheMasterStarted(t *testing.T) {
	before := goroutineIDs()
	m := startSolo(t, soloConfig(t))
	exercise(t, m)
	if n := len(masterGoroutines(before)); n < 5 {
		t.Fatalf("only %d goroutines run master code while it serves; the check below would prove nothing", n)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// A goroutine that has signalled its WaitGroup may still be on its
	// way out; give it a moment, not a guess.
	wctx, wcancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer wcancel()
	if poll.Wait(wctx, func() bool { return len(masterGoroutines(before)) == 0 }) != nil {
		left := masterGoroutines(before)
		t.Fatalf("%d goroutines still run master code after Shutdown returned:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}

func TestCloseIsSafeTwiceAndEveryLaterCallReturnsTheFirstResult(t *testing.T) {
	m := startSolo(t, soloConfig(t))
	if err := m.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v, want the first call's nil", err)
	}
	if err := m.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown after Close: %v, want the first call's nil", err)
	}
	if err := m.CloseNow(); err != nil {
		t.Fatalf("CloseNow after Close: %v, want the first call's nil", err)
	}
}

func TestShutdownWithAnEndedContextStillReleasesTheDataDirAndPorts(t *testing.T) {
	cfg := soloConfig(t)
	cfg.HTTP = freeport.Loopback(t)
	m := startSolo(t, cfg)
	exercise(t, m)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := m.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with an ended context: %v; want nil or context.Canceled", err)
	}
	// The same data dir (its lock) and the same ports are free again, and
	// the acknowledged join survived.
	m2 := startSolo(t, cfg)
	poll.Until(t, 10*time.Second, "the restarted master's index holds the joined peer", func() bool {
		return m2.fsm.Counts().Peers == 1
	})
}

func TestShutdownCutShortByItsContextClosesHungHTTPConnectionsAndSaysSo(t *testing.T) {
	before := goroutineIDs()
	m := startSolo(t, soloConfig(t))
	// A client that sends half a request keeps its connection from going
	// idle, so a graceful HTTP drain waits for it.
	conn, err := net.Dial("tcp", m.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /v1/status HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "the HTTP server to take the connection", func() bool {
		for _, g := range masterGoroutines(before) {
			if strings.Contains(g, "net/http.(*conn).serve") {
				return true
			}
		}
		return false
	})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err = m.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown whose context ended during the HTTP drain returned %v; want it to wrap context.DeadlineExceeded", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second)) // well before the server's own ReadHeaderTimeout
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("reading the hung HTTP connection after Shutdown: %v; want EOF (closed by the master)", err)
	}
}
