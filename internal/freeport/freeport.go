// Package freeport picks TCP ports on loopback addresses for tests, the
// demo, benchmarks and the fault harness, and, for tests, holds one with a
// listener that never answers (Silent).
//
// A port is free only at the moment it is checked: whoever takes it must
// retry if it has been taken since. Ports are chosen below the kernel's
// ephemeral range, so a master that keeps its port across a restart does
// not lose it to an outgoing connection that the kernel handed the same
// number while the master was down.
package freeport

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// handedOut holds every ip:port Port has returned in this process, so it
// never returns one twice: a caller that asks for three ports before it
// binds any would otherwise get the same free port twice now and then
// (seen: a demo whose m1 and m2 were given one port).
var handedOut struct {
	sync.Mutex
	m map[string]bool
}

// claim records addr as handed out, reporting false if it already was.
func claim(addr string) bool {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.m == nil {
		handedOut.m = make(map[string]bool)
	}
	if handedOut.m[addr] {
		return false
	}
	handedOut.m[addr] = true
	return true
}

// Port returns a port that was free on ip a moment ago, below the
// ephemeral range where one is free, else one the kernel chooses. It
// never returns the same port on the same ip twice in one process.
func Port(ip string) (string, error) {
	low := ephemeralLow()
	for range 100 {
		port := 10000 + rand.IntN(max(low-10000, 1))
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			if claim(addr) {
				return strconv.Itoa(port), nil
			}
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), nil
}

// Addr returns ip:port with a port that was free on ip a moment ago.
func Addr(ip string) (string, error) {
	port, err := Port(ip)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(ip, port), nil
}

// Loopback returns 127.0.0.1:port with a free port, failing tb if none can
// be found.
func Loopback(tb testing.TB) string { return On(tb, "127.0.0.1") }

// On returns ip:port with a free port, failing tb if none can be found.
func On(tb testing.TB, ip string) string {
	tb.Helper()
	a, err := Addr(ip)
	if err != nil {
		tb.Fatalf("find a free port on %s: %v", ip, err)
	}
	return a
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux;
// elsewhere the IANA default).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= 10000 {
		return 32768
	}
	return n
}

// Silent returns the address of a loopback listener that accepts
// connections and never answers, like a paused master: a call to it waits
// until its caller gives up (where nothing listens, a call fails at once).
// The listener and its connections close at tb's cleanup.
func Silent(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen on 127.0.0.1: %v", err)
	}
	done := make(chan struct{})
	go func() { // owned by the cleanup below, which waits for it
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	tb.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}
