package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fileshare/internal/poll"
)

// fakeGate treats the masters it lists as members, revokes the serials
// it lists, and reserves capacity for one IP.
type fakeGate struct {
	mu       sync.Mutex
	members  map[string]bool
	revoked  map[string]bool
	reserved netip.Addr
	v        atomic.Uint64
}

func (g *fakeGate) Vet(c Caller) (Caller, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.revoked[c.Serial] {
		return c, ErrRevoked
	}
	if c.Role == RoleMaster {
		if g.members[c.Name] {
			c.Member = true
		} else {
			c.Outsider = true
		}
	}
	return c, nil
}

func (g *fakeGate) Version() uint64 { return g.v.Load() }

func (g *fakeGate) Reserved(ip netip.Addr) bool { return ip == g.reserved }

func (g *fakeGate) change(f func()) {
	g.mu.Lock()
	f()
	g.mu.Unlock()
	g.v.Add(1)
}

// dialFrom dials addr from the local IP from, completes TLS with cfg (nil:
// plaintext) and writes the stream kind.
func dialFrom(from, addr string, kind byte, cfg *tls.Config) (net.Conn, error) {
	d := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return handshakeStream(raw, addr, kind, 2*time.Second, cfg)
}

func startGatedServer(t *testing.T, p testPKI, gate Gate, maxConns int) (*Mux, *Server, string) {
	t.Helper()
	m, err := ListenMux(MuxConfig{Addr: "127.0.0.1:0", TLS: p.load(t, "m1"), Gate: gate, MaxConns: maxConns, MaxConnsPerIP: maxConns, HandshakeTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(nil)
	Handle(s, "Who", func(ctx context.Context, _ *echoReq) (*whoResp, error) {
		c := CallerFrom(ctx)
		return &whoResp{Role: int(c.Role), Name: c.Name}, nil
	})
	Handle(s, "Admin", func(ctx context.Context, _ *echoReq) (*echoResp, error) {
		if err := Require(ctx, RoleAdmin); err != nil {
			return nil, err
		}
		return &echoResp{Msg: "ok"}, nil
	})
	go s.Serve(m.Listener(StreamRPC))
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s, m.Addr().String()
}

// Capacity is kept for members: with every connection a stranger may have
// taken, a member still connects (from a member's address, authenticated
// as a member), while a stranger from that same address does not.
func TestMembersConnectWhileStrangersHoldTheCaps(t *testing.T) {
	p := newTestPKI(t)
	gate := &fakeGate{members: map[string]bool{"m2": true}, reserved: netip.MustParseAddr("127.0.0.3")}
	m, _, addr := startGatedServer(t, p, gate, 4)
	anon := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for range 4 {
		c, err := dialFrom("127.0.0.2", addr, StreamRPC, anon)
		if err != nil {
			t.Skipf("cannot dial from 127.0.0.2: %v", err)
		}
		held = append(held, c)
	}
	poll.Until(t, 5*time.Second, "the stranger holds every connection strangers may have", func() bool {
		_, n := m.strangers.usedBy(Source{})
		return n == 4
	})
	call := func(from string, creds *TLS) error {
		var cfg *tls.Config
		if creds != nil {
			cfg = creds.MasterClientConfig()
		} else {
			cfg = p.ca(t).MasterClientConfig()
		}
		c := NewClient(ClientConfig{Dial: func(a string, kind byte, _ time.Duration) (net.Conn, error) {
			return dialFrom(from, a, kind, cfg)
		}})
		defer c.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		var out whoResp
		return c.Call(ctx, addr, "Who", &echoReq{}, &out)
	}
	if err := call("127.0.0.3", p.load(t, "m2")); err != nil {
		t.Fatalf("a member could not connect while strangers held the caps: %v", err)
	}
	if err := call("127.0.0.3", nil); err == nil {
		t.Fatal("a stranger from a member's address got past the strangers' cap")
	}
	if err := call("127.0.0.2", p.load(t, "m2")); err == nil {
		t.Fatal("a connection from a stranger's address got past the full cap before authenticating")
	}
}

// A revoked certificate is refused at the handshake, and a connection
// that presented it before the revocation is closed; a master that stops
// being a member loses its rights on its open connection too.
func TestRevokedCertificatesAndLostMembershipCloseOpenConnections(t *testing.T) {
	p := newTestPKI(t)
	gate := &fakeGate{members: map[string]bool{"m2": true}}
	m, _, addr := startGatedServer(t, p, gate, 100)
	admin := p.load(t, "admin")
	leaf, err := admin.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	serial := serialOfDER(t, leaf.Certificate[0])

	open := func(creds *TLS) net.Conn {
		c, err := DialStreamTLS(addr, StreamRPC, 2*time.Second, creds.MasterClientConfig())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	adminConn := open(admin)
	memberConn := open(p.load(t, "m2"))
	poll.Until(t, 5*time.Second, "both connections are handed to the server", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.routed) == 2
	})

	gate.change(func() { gate.revoked = map[string]bool{serial: true} })
	waitClosed(t, adminConn, "the revoked admin's open connection")
	// TLS 1.3: the client may learn of the refusal only on its first read.
	if c, err := DialStreamTLS(addr, StreamRPC, 2*time.Second, admin.MasterClientConfig()); err == nil {
		waitClosed(t, c, "a new connection with the revoked certificate")
	}

	gate.change(func() { gate.members = map[string]bool{} })
	waitClosed(t, memberConn, "the open connection of a master that is no longer a member")

	// An outsider master may connect, but has no rights.
	c := NewClient(ClientConfig{Dial: func(a string, kind byte, to time.Duration) (net.Conn, error) {
		return DialStreamTLS(a, kind, to, p.load(t, "m2").MasterClientConfig())
	}})
	defer c.Close()
	var out echoResp
	if err := c.Call(t.Context(), addr, "Admin", &echoReq{}, &out); !errors.Is(err, ErrForbidden) {
		t.Fatalf("an outsider master's admin call: got %v, want ErrForbidden", err)
	}
}

// waitClosed waits until the server closes conn.
func waitClosed(t *testing.T, conn net.Conn, what string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s is still open after 5s", what)
	}
}

func serialOfDER(t *testing.T, der []byte) string {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return SerialOf(c)
}

// When the trusted CA is rotated, connections whose certificates the new
// CA does not sign lose the rights they were admitted with, and are
// closed.
func TestRotatingTheCAClosesConnectionsItNoLongerSigns(t *testing.T) {
	p := newTestPKI(t)
	_, _, addr := startGatedServer(t, p, &fakeGate{}, 100)
	conn, err := DialStreamTLS(addr, StreamRPC, 2*time.Second, p.load(t, "admin").MasterClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	other := newTestPKI(t)
	b, err := os.ReadFile(filepath.Join(other.dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, "ca.pem"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, conn, "an admin connection after its CA was rotated away")
}
