package netlab

import (
	"bufio"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func requireNATLab(t *testing.T) {
	t.Helper()
	requireLab(t)
	if err := NATAvailable(); err != nil {
		if os.Getenv("FILESHARE_REQUIRE_ROOT_TESTS") == "1" {
			t.Fatal(err.Error() + "; failing because FILESHARE_REQUIRE_ROOT_TESTS=1")
		}
		t.Skip(err.Error() + "; set FILESHARE_REQUIRE_ROOT_TESTS=1 to make this a failure")
	}
}

// udpReflector starts, in ns, a UDP server that answers each datagram with
// the source address it came from (a STUN server in one line) and returns
// its address.
func udpReflector(t *testing.T, ns NS, port string) string {
	t.Helper()
	addr := net.JoinHostPort(ns.Addr.String(), port)
	srv := ns.Command(t.Context(), os.Args[0], "-test.run=^TestHelperUDP$")
	srv.Env = append(os.Environ(), "NETLAB_UDP_SERVE="+addr)
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || !strings.HasPrefix(line, "listening") {
		t.Fatalf("UDP reflector in %s did not start: %q, %v", ns.Name, line, err)
	}
	return addr
}

// observe sends one datagram from local port lport in ns to the
// reflector at addr and returns the source address the reflector saw, or
// "" if no answer came.
func observe(t *testing.T, ns NS, lport, addr string) string {
	t.Helper()
	c := ns.Command(t.Context(), os.Args[0], "-test.run=^TestHelperUDP$")
	c.Env = append(os.Environ(), "NETLAB_UDP_ASK="+addr, "NETLAB_UDP_FROM=:"+lport)
	out, err := c.CombinedOutput()
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(l, "seen "); ok {
			return s
		}
	}
	return ""
}

// A home host reaches the public network from its router's public
// address; a port-preserving router keeps the source port and a
// port-random one does not; and nobody outside can open a connection into
// a home.
func TestNATLabMapsHomesBehindRouters(t *testing.T) {
	requireNATLab(t)
	lab, err := NewNAT(t.Context(), NATConfig{Public: 1, PublicAddrs: 1, Homes: []NATKind{PortPreserving, PortRandom}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	for _, a := range append([]netip.Addr{lab.Public.Hub.Addr, lab.Public.Hosts[0].Addr, lab.Homes[0].Router.Addr}, lab.Public.HubAddrs...) {
		if !netip.MustParsePrefix("203.0.113.0/24").Contains(a) {
			t.Fatalf("public address %v outside TEST-NET-3", a)
		}
	}
	if !netip.MustParsePrefix("192.0.2.0/24").Contains(lab.Homes[1].Host.Addr) {
		t.Fatalf("home address %v outside TEST-NET-1", lab.Homes[1].Host.Addr)
	}
	refl := udpReflector(t, lab.Public.Hosts[0], "3478")

	seen := observe(t, lab.Homes[0].Host, "40000", refl)
	if want := lab.Homes[0].Router.Addr.String() + ":40000"; seen != want {
		t.Fatalf("the reflector saw the port-preserving home as %q, want %q (its router's address, same port)", seen, want)
	}
	// --random-fully picks a random port: 40000 again would be a 1 in
	// ~28,000 chance per try, so two tries that both keep it mean the
	// rule is not there.
	kept := 0
	for range 2 {
		seen = observe(t, lab.Homes[1].Host, "40000", refl)
		host, port, _ := net.SplitHostPort(seen)
		if host != lab.Homes[1].Router.Addr.String() {
			t.Fatalf("the reflector saw the port-random home as %q, want its router's address %v", seen, lab.Homes[1].Router.Addr)
		}
		if port == "40000" {
			kept++
		}
	}
	if kept == 2 {
		t.Fatal("the port-random router kept the source port twice; is --random-fully in place?")
	}

	// Inbound: a public host can reach neither a home's private address
	// (no route) nor anything behind the router's public one.
	inner := udpReflector(t, lab.Homes[0].Host, "3478")
	if got := observe(t, lab.Public.Hosts[0], "40001", inner); got != "" {
		t.Fatalf("a public host reached a home's private address: %q", got)
	}
	if got := observe(t, lab.Public.Hosts[0], "40001", net.JoinHostPort(lab.Homes[0].Router.Addr.String(), "3478")); got != "" {
		t.Fatalf("a public host reached into a home through its router: %q", got)
	}

	// Flushing a router's mappings works (case: a mapping expires).
	if _, err := exec.LookPath("conntrack"); err == nil {
		if err := lab.FlushMappings(t.Context(), 0); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHelperUDP is not a test: run inside a lab namespace by the tests
// above, it is either a UDP reflector (NETLAB_UDP_SERVE) or asks one what
// it sees (NETLAB_UDP_ASK, from NETLAB_UDP_FROM).
func TestHelperUDP(t *testing.T) {
	if addr := os.Getenv("NETLAB_UDP_SERVE"); addr != "" {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("listening\n")
		buf := make([]byte, 64)
		for {
			_, from, err := c.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			c.WriteTo([]byte(from.String()), from)
		}
	}
	if addr := os.Getenv("NETLAB_UDP_ASK"); addr != "" {
		c, err := net.ListenPacket("udp", os.Getenv("NETLAB_UDP_FROM"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		to, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		for range 3 {
			c.WriteTo([]byte("?"), to)
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if n, _, err := c.ReadFrom(buf); err == nil {
				os.Stdout.WriteString("seen " + string(buf[:n]) + "\n")
				return
			}
		}
		t.Fatal("no answer")
	}
}
