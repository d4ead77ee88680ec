package jepsenlike

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"fileshare/internal/testenv"
)

// echoServer echoes every connection on addr until the test ends and
// counts the bytes it received.
type echoServer struct {
	ln       net.Listener
	mu       sync.Mutex
	received int
	wg       sync.WaitGroup
}

func startEcho(t *testing.T, addr string) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln}
	var conns sync.Map
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						e.mu.Lock()
						e.received += n
						e.mu.Unlock()
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
		e.wg.Wait()
	})
	return e
}

func (e *echoServer) got() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.received
}

// dialFrom connects to addr from a given local IP.
func dialFrom(ip, addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return d.Dial("tcp", addr)
}

// roundTrip writes msg and waits up to d for its echo.
func roundTrip(c net.Conn, msg string, d time.Duration) (string, error) {
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	return readFor(c, len(msg), d)
}

func readFor(c net.Conn, n int, d time.Duration) (string, error) {
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, n)
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

func needNodeIPs(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		if err := probeIP(nodeIP(i)); err != nil {
			t.Skipf("per-master loopback addresses do not work here (%v); they need Linux", err)
		}
	}
}

// A cut link holds bytes back (it does not close the connection), and the
// heal delivers them, as TCP retransmissions would.
func TestProxyCutHoldsBytesUntilTheHeal(t *testing.T) {
	needNodeIPs(t, 2)
	before := runtime.NumGoroutine()
	addrs, perNode, err := planAddrs(2, true)
	if err != nil || !perNode {
		t.Fatalf("planAddrs: %v (per-node IPs %v)", err, perNode)
	}
	echo := startEcho(t, addrs[1].Listen)
	p, err := newProxyNet(addrs, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	c, err := dialFrom(addrs[0].IP, addrs[1].Proxy, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "ping", time.Second); err != nil || got != "ping" {
		t.Fatalf("healthy link: got %q, %v", got, err)
	}

	// Symmetric cut: nothing reaches the master, nothing comes back.
	p.Set(ctx, NetFaults{Cut: cutBetween([]int{0}, []int{1})})
	base := echo.got()
	if _, err := roundTrip(c, "held", 300*time.Millisecond); err == nil {
		t.Fatal("bytes crossed a cut link")
	}
	if echo.got() != base {
		t.Fatal("the master received bytes over a cut link")
	}
	// A client (not a master's IP) is never cut.
	cl, err := net.DialTimeout("tcp", addrs[1].Proxy, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if got, err := roundTrip(cl, "client", time.Second); err != nil || got != "client" {
		t.Fatalf("a client's connection was faulted: %q, %v", got, err)
	}
	// A new connection over the cut link gets no answer until the heal.
	c2, err := dialFrom(addrs[0].IP, addrs[1].Proxy, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := roundTrip(c2, "new!", 300*time.Millisecond); err == nil {
		t.Fatal("a new connection over a cut link was served")
	}

	p.Set(ctx, NetFaults{})
	if got, err := readFor(c, 4, 2*time.Second); err != nil || got != "held" {
		t.Fatalf("after the heal the held bytes should arrive: got %q, %v", got, err)
	}
	if got, err := readFor(c2, 4, 2*time.Second); err != nil || got != "new!" {
		t.Fatalf("after the heal the new connection should work: got %q, %v", got, err)
	}

	// One-way cut of the replies: the master gets the bytes, the answer
	// is held.
	p.Set(ctx, NetFaults{Cut: []Link{{From: 1, To: 0}}})
	base = echo.got()
	if _, err := roundTrip(c, "oneway", 300*time.Millisecond); err == nil {
		t.Fatal("a reply crossed a cut direction")
	}
	if echo.got() != base+len("oneway") {
		t.Fatalf("the open direction did not deliver: the master got %d new bytes, want 6", echo.got()-base)
	}
	p.Set(ctx, NetFaults{})
	if got, err := readFor(c, 6, 2*time.Second); err != nil || got != "oneway" {
		t.Fatalf("after the heal the held reply should arrive: %q, %v", got, err)
	}

	// Delay applies to each direction.
	p.Set(ctx, NetFaults{Delay: 150 * time.Millisecond})
	start := time.Now()
	if got, err := roundTrip(c, "slow", 2*time.Second); err != nil || got != "slow" {
		t.Fatalf("delayed link: %q, %v", got, err)
	}
	if rtt := time.Since(start); rtt < 280*time.Millisecond {
		t.Fatalf("round trip took %v with 150 ms each way", rtt)
	}
	p.Set(ctx, NetFaults{})

	// Close ends every proxied connection and goroutine.
	p.Close()
	p.Close()
	if _, err := readFor(c, 1, 2*time.Second); err == nil {
		t.Fatal("a proxied connection survived Close")
	}
	c.Close()
	c2.Close()
	cl.Close()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before+3 { // the echo server's goroutines end at cleanup
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines left after Close: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIptablesRulesAreExactlyTheFaults(t *testing.T) {
	n := &iptablesNet{chain: "FILESHARE-JEPSEN-7", ips: []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}}
	got := n.rules(NetFaults{Cut: []Link{{0, 1}, {2, 1}}})
	want := "*filter\n:FILESHARE-JEPSEN-7 - [0:0]\n" +
		"-A FILESHARE-JEPSEN-7 -s 127.0.0.11 -d 127.0.0.12 -j DROP\n" +
		"-A FILESHARE-JEPSEN-7 -s 127.0.0.13 -d 127.0.0.12 -j DROP\n" +
		"COMMIT\n"
	if got != want {
		t.Fatalf("rules:\n%s\nwant:\n%s", got, want)
	}
	if healed := n.rules(NetFaults{}); healed != "*filter\n:FILESHARE-JEPSEN-7 - [0:0]\nCOMMIT\n" {
		t.Fatalf("a healthy network must flush the chain and add nothing:\n%s", healed)
	}
	if loss := n.rules(NetFaults{Loss: 0.2}); strings.Count(loss, "--probability 0.2000") != 6 {
		t.Fatalf("loss must apply to all 6 directed links:\n%s", loss)
	}
}

// requireRoot skips a test that needs root and iptables, or fails it when
// FILESHARE_REQUIRE_ROOT_TESTS=1 (CI sets it, so the kernel path is
// always tested there).
func requireRoot(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t, "dropping packets with iptables")
	testenv.NeedTool(t, "iptables", "iptables")
	testenv.NeedTool(t, "iptables-restore", "iptables")
}

// The kernel mechanism drops one direction of one link and nothing else,
// and removes exactly its own chain. It runs in a private network
// namespace (this test re-runs itself there), so the host never sees a
// rule.
func TestIptablesCutsOneDirectionInAPrivateNetns(t *testing.T) {
	if !InPrivateNetns() {
		requireRoot(t)
		var out bytes.Buffer
		code, err := RunInPrivateNetns(t.Context(), os.Args[0], []string{"-test.run=^TestIptablesCutsOneDirectionInAPrivateNetns$", "-test.v", "-test.count=1"}, &out, &out)
		if err != nil || code != 0 || !strings.Contains(out.String(), "--- PASS: TestIptablesCutsOneDirectionInAPrivateNetns") {
			t.Fatalf("in a private network namespace: exit %d, %v:\n%s", code, err, out.String())
		}
		return
	}
	if err := PrepareNetns(); err != nil {
		t.Fatal(err)
	}
	ips := []string{nodeIP(0), nodeIP(1), nodeIP(2)}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	n, err := newIptablesNet(ctx, ips, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	echo := startEcho(t, ips[1]+":0")
	target := echo.ln.Addr().String()

	c, err := dialFrom(ips[0], target, time.Second)
	if err != nil {
		t.Fatalf("healthy network: %v", err)
	}
	defer c.Close()
	if err := n.Set(ctx, NetFaults{Cut: []Link{{From: 0, To: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := dialFrom(ips[0], target, 500*time.Millisecond); err == nil {
		t.Fatal("connected over a cut link")
	}
	if _, err := roundTrip(c, "x", 300*time.Millisecond); err == nil {
		t.Fatal("an open connection still carried data over a cut link")
	}
	if c3, err := dialFrom(ips[2], target, time.Second); err != nil {
		t.Fatalf("the cut hit another link: %v", err)
	} else {
		c3.Close()
	}
	if err := n.Set(ctx, NetFaults{}); err != nil {
		t.Fatal(err)
	}
	if got, err := readFor(c, 1, 5*time.Second); err != nil || got != "x" {
		t.Fatalf("after the heal TCP should deliver the held byte: %q, %v", got, err)
	}
	if err := n.Supports(KindDelay); err != nil && !strings.Contains(err.Error(), "netem") {
		t.Fatalf("delay unsupported for an unexpected reason: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command("iptables", "-S")
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), n.chain) {
		t.Fatalf("the chain survived Close:\n%s", out.String())
	}
}
