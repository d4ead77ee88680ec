package netlab

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"fileshare/internal/poll"
	"fileshare/internal/testenv"
)

// requireLab skips unless labs can be built, and fails instead when
// FILESHARE_REQUIRE_ROOT_TESTS=1 (CI runs as root, so there a skip would
// hide a broken machine).
func requireLab(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		testenv.Unavailable(t, err.Error())
	}
}

func rootLinks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	return names
}

func namespaces(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// Two hosts reach each other and the hub through the bridge, the root
// namespace gains no interface, and Close kills what runs inside and
// removes every namespace.
func TestLabConnectsHostsAndLeavesNoTrace(t *testing.T) {
	requireLab(t)
	before := rootLinks(t)
	lab, err := New(t.Context(), Config{Hosts: 2, HubAddrs: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	if after := rootLinks(t); !slices.Equal(before, after) {
		t.Fatalf("the root namespace's links changed: before %v, after %v", before, after)
	}
	if got := lab.Prefix.Bits(); got != 24 || !lab.Prefix.Contains(lab.Hosts[1].Addr) || !lab.Prefix.Contains(lab.HubAddrs[1]) {
		t.Fatalf("addresses outside the lab's /24: %+v", lab.Layout)
	}

	// An echo server in host 1: this test binary, re-executed there.
	srv := lab.Hosts[1].Command(t.Context(), os.Args[0], "-test.run=^TestHelperEcho$")
	srv.Env = append(os.Environ(), "NETLAB_ECHO_ADDR="+lab.Hosts[1].Addr.String()+":7000")
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listening") {
		t.Fatalf("echo server in %s did not start: %q, %v", lab.Hosts[1].Name, line, err)
	}
	pids, err := PIDs(lab.Hosts[1].Name)
	if err != nil || !slices.Contains(pids, srv.Process.Pid) {
		t.Fatalf("ip netns pids %s = %v, %v; want the server's PID %d (ip netns exec must exec it)", lab.Hosts[1].Name, pids, err, srv.Process.Pid)
	}

	// From host 0, through the bridge, to host 1.
	dial := lab.Hosts[0].Command(t.Context(), os.Args[0], "-test.run=^TestHelperEcho$")
	dial.Env = append(os.Environ(), "NETLAB_ECHO_DIAL="+lab.Hosts[1].Addr.String()+":7000")
	if out, err := dial.CombinedOutput(); err != nil || !strings.Contains(string(out), "echoed") {
		t.Fatalf("host 0 could not reach host 1 through the bridge: %v\n%s", err, out)
	}
	// A host knows no way out of the lab: its only route is the /24.
	routes, err := exec.Command("ip", "-n", lab.Hosts[0].Name, "-4", "route", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(routes)), lab.Prefix.String()+" dev eth0"; !strings.HasPrefix(got, want) || strings.Contains(got, "default") || strings.Count(got, "\n") != 0 {
		t.Fatalf("routes of %s:\n%s\nwant only %q", lab.Hosts[0].Name, got, want)
	}

	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Wait(); err == nil {
		t.Fatal("the server in the lab exited 0; Close should have SIGKILLed it")
	}
	ns := namespaces(t)
	for _, n := range append([]NS{lab.Hub}, lab.Hosts...) {
		if strings.Contains(ns, n.Name) {
			t.Fatalf("namespace %s still exists after Close:\n%s", n.Name, ns)
		}
	}
	if err := lab.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}

// TestHelperEcho is not a test: run by the test above inside a namespace,
// it is either a TCP echo server (NETLAB_ECHO_ADDR) or a client of one
// (NETLAB_ECHO_DIAL).
func TestHelperEcho(t *testing.T) {
	if addr := os.Getenv("NETLAB_ECHO_ADDR"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("listening\n")
		for {
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				n, _ := c.Read(buf)
				c.Write(buf[:n])
			}()
		}
	}
	if addr := os.Getenv("NETLAB_ECHO_DIAL"); addr != "" {
		var c net.Conn
		poll.Until(t, 10*time.Second, "a connection to "+addr, func() bool {
			var err error
			c, err = net.DialTimeout("tcp", addr, time.Second)
			return err == nil
		})
		defer c.Close()
		c.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := c.Read(buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo: %q, %v", buf, err)
		}
		os.Stdout.WriteString("echoed\n")
	}
}

func TestNewRejectsAnImpossiblePlan(t *testing.T) {
	requireLab(t)
	if _, err := New(t.Context(), Config{Hosts: 500}); err == nil || errors.Is(err, ErrNotRoot) {
		t.Fatalf("New with 500 hosts: %v, want an error saying they do not fit", err)
	}
}
