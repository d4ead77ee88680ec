package transport

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"fileshare/internal/poll"
)

// testPKI is a CA with two masters and an admin, written to a temp dir.
type testPKI struct {
	dir string
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	if _, err := InitFiles(dir, []string{"m1", "m2"}, []string{"127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	return testPKI{dir: dir}
}

func (p testPKI) load(t *testing.T, name string) *TLS {
	t.Helper()
	tl, err := LoadTLS(filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem"), filepath.Join(p.dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

func (p testPKI) ca(t *testing.T) *TLS {
	t.Helper()
	tl, err := LoadTLS("", "", filepath.Join(p.dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

func newPeerKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// startTLSServer runs an RPC server on a TLS Mux whose one method,
// "Who", answers with the caller it saw.
func startTLSServer(t *testing.T, creds *TLS, authorize func(byte, Caller) error) (*Mux, string) {
	t.Helper()
	m, err := ListenMux(MuxConfig{Addr: "127.0.0.1:0", TLS: creds, Authorize: authorize, HandshakeTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(nil)
	Handle(s, "Who", func(ctx context.Context, _ *echoReq) (*whoResp, error) {
		c := CallerFrom(ctx)
		return &whoResp{Role: int(c.Role), Name: c.Name, Key: c.Key, Insecure: c.Insecure}, nil
	})
	Handle(s, "Admin", func(ctx context.Context, _ *echoReq) (*echoResp, error) {
		if err := Require(ctx, RoleAdmin); err != nil {
			return nil, err
		}
		return &echoResp{Msg: "ok"}, nil
	})
	go s.Serve(m.Listener(StreamRPC))
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, m.Addr().String()
}

type whoResp struct {
	Role     int
	Name     string
	Key      []byte
	Insecure bool
}

func tlsClient(dial func(addr string, kind byte, timeout time.Duration) (net.Conn, error)) *Client {
	return NewClient(ClientConfig{Dial: dial})
}

// Each certificate a caller may present maps to exactly one role: CA-signed
// master and admin certificates to their names, a peer's self-signed key
// to that key, and nothing to anonymous.
func TestTLSCallerRoles(t *testing.T) {
	p := newTestPKI(t)
	_, addr := startTLSServer(t, p.load(t, "m1"), nil)
	peerKey := newPeerKey(t)
	peerCreds, err := PeerTLS(peerKey, p.ca(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		creds *TLS
		role  Role
		cname string
		key   ed25519.PublicKey
	}{
		{"master", p.load(t, "m2"), RoleMaster, "m2", nil},
		{"admin", p.load(t, "admin"), RoleAdmin, "admin", nil},
		{"peer", peerCreds, RolePeer, "", peerKey.Public().(ed25519.PublicKey)},
		{"anonymous", p.ca(t), RoleAnonymous, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tlsClient(func(addr string, kind byte, timeout time.Duration) (net.Conn, error) {
				return DialStreamTLS(addr, kind, timeout, tc.creds.MasterClientConfig())
			})
			defer c.Close()
			var got whoResp
			if err := c.Call(t.Context(), addr, "Who", &echoReq{}, &got); err != nil {
				t.Fatal(err)
			}
			if Role(got.Role) != tc.role || got.Name != tc.cname || string(got.Key) != string(tc.key) || got.Insecure {
				t.Fatalf("server saw role %s name %q key %x insecure %v; want %s %q %x", Role(got.Role), got.Name, got.Key, got.Insecure, tc.role, tc.cname, []byte(tc.key))
			}
			err := c.Call(t.Context(), addr, "Admin", &echoReq{}, nil)
			if tc.role >= RoleAdmin && err != nil {
				t.Fatalf("admin call as %s: %v", tc.role, err)
			}
			if tc.role < RoleAdmin && !errors.Is(err, ErrForbidden) {
				t.Fatalf("admin call as %s: got %v, want ErrForbidden", tc.role, err)
			}
		})
	}
}

// A certificate that names a master but is not signed by the cluster CA
// (here: self-signed by a peer key, and issued by another CA) is not a
// master.
func TestForeignCertificateIsNotAMaster(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t)
	_, addr := startTLSServer(t, p.load(t, "m1"), nil)
	c := tlsClient(func(addr string, kind byte, timeout time.Duration) (net.Conn, error) {
		cfg := other.load(t, "m1").MasterClientConfig()
		cfg.VerifyConnection = nil // the impostor does not care who it reaches
		return DialStreamTLS(addr, kind, timeout, cfg)
	})
	defer c.Close()
	var got whoResp
	if err := c.Call(t.Context(), addr, "Who", &echoReq{}, &got); err != nil {
		t.Fatal(err)
	}
	if Role(got.Role) != RoleAnonymous {
		t.Fatalf("a master certificate from another CA was seen as %s %q, want anonymous", Role(got.Role), got.Name)
	}
}

// A client that dials a master refuses a server that is not one: a peer,
// or a master of another cluster. So a leader hint or a typo never leads a
// client to an impostor.
func TestDialingAMasterVerifiesIt(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t)
	peerCreds, err := PeerTLS(newPeerKey(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, server := range map[string]*TLS{"peer": peerCreds, "other cluster": other.load(t, "m1")} {
		t.Run(name, func(t *testing.T) {
			_, addr := startTLSServer(t, server, nil)
			_, err := DialStreamTLS(addr, StreamRPC, time.Second, p.ca(t).MasterClientConfig())
			if !errors.Is(err, ErrNotAMaster) {
				t.Fatalf("dial %s: got %v, want ErrNotAMaster", name, err)
			}
		})
	}
}

// Authorize sees the stream kind and the caller before any listener does:
// a Raft stream from a peer is closed, one from a master is served.
func TestAuthorizeRefusesAStreamBeforeItIsServed(t *testing.T) {
	p := newTestPKI(t)
	m, err := ListenMux(MuxConfig{Addr: "127.0.0.1:0", TLS: p.load(t, "m1"), Authorize: func(kind byte, c Caller) error {
		if kind == StreamRaft && c.Role != RoleMaster {
			return errors.New("raft needs a master")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ln := m.Listener(StreamRaft)
	accepted := make(chan Caller, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- CallerOf(c)
			c.Close()
		}
	}()
	peerCreds, _ := PeerTLS(newPeerKey(t), p.ca(t))
	conn, err := DialStreamTLS(m.Addr().String(), StreamRaft, time.Second, peerCreds.MasterClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("a peer's raft stream was not closed")
	}
	conn.Close()
	conn, err = DialStreamTLS(m.Addr().String(), StreamRaft, time.Second, p.load(t, "m2").MasterClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	select {
	case c := <-accepted:
		if c.Role != RoleMaster || c.Name != "m2" {
			t.Fatalf("raft listener got %s %q, want master m2", c.Role, c.Name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a master's raft stream never reached the listener")
	}
	if len(accepted) != 0 {
		t.Fatal("the peer's raft stream reached the listener")
	}
}

// Plaintext bytes sent to a TLS port (a forged Raft RPC, say) never reach a
// listener: the handshake fails and the connection is closed.
func TestPlaintextToATLSPortIsClosed(t *testing.T) {
	p := newTestPKI(t)
	m, err := ListenMux(MuxConfig{Addr: "127.0.0.1:0", TLS: p.load(t, "m1"), HandshakeTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ln := m.Listener(StreamRaft)
	got := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			got <- struct{}{}
			c.Close()
		}
	}()
	conn, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte{StreamRaft, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, conn) // until the server closes it
	select {
	case <-got:
		t.Fatal("a plaintext stream reached the raft listener")
	default:
	}
}

// A connection that completes no handshake is closed at the handshake
// deadline, so silent connections cannot pile up.
func TestSilentConnectionIsClosedAtTheHandshakeDeadline(t *testing.T) {
	p := newTestPKI(t)
	m, err := ListenMux(MuxConfig{Addr: "127.0.0.1:0", TLS: p.load(t, "m1"), HandshakeTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	conn, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from a server that should have closed")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server kept a silent connection open for %v", time.Since(start))
	}
}

// One remote IP cannot open more connections than MaxConnsPerIP; closing
// one frees its slot.
func TestConnectionsPerIPAreCapped(t *testing.T) {
	m, err := ListenMux(MuxConfig{Addr: "127.0.0.1:0", MaxConnsPerIP: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ln := m.Listener(StreamRPC)
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	var conns []net.Conn
	for range 3 {
		c, err := DialStreamTLS(m.Addr().String(), StreamRPC, time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	poll.Until(t, 5*time.Second, "three connections accepted", func() bool { mu.Lock(); defer mu.Unlock(); return len(held) == 3 })
	extra, err := DialStreamTLS(m.Addr().String(), StreamRPC, time.Second, nil)
	if err == nil {
		extra.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := extra.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatal("a fourth connection from the same IP was kept open")
		}
		extra.Close()
	}
	mu.Lock()
	held[0].Close()
	mu.Unlock()
	poll.Until(t, 5*time.Second, "a closed connection frees its slot", func() bool {
		c, err := DialStreamTLS(m.Addr().String(), StreamRPC, time.Second, nil)
		if err != nil {
			return false
		}
		defer c.Close()
		mu.Lock()
		defer mu.Unlock()
		return len(held) == 4
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A frame that announces MaxFrameSize and then sends 5 bytes costs the
// server no MaxFrameSize buffer.
func TestAnnouncedFrameSizeIsNotAllocatedUpFront(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxFrameSize)
	r := io.MultiReader(strings.NewReader(string(hdr[:])), strings.NewReader("hello"))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		t.Fatal(err)
	}
	_, err := readGrowing(r, int(binary.BigEndian.Uint32(hdr[:])))
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want ErrUnexpectedEOF", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("a 5-byte frame announcing %d bytes allocated %d bytes", MaxFrameSize, got)
	}
}

// Frames of every size arrive whole through readGrowing.
func TestReadGrowingReadsExactly(t *testing.T) {
	for _, n := range []int{0, 1, frameChunk - 1, frameChunk, frameChunk + 1, 5*frameChunk + 7} {
		b := make([]byte, n+3)
		rand.Read(b)
		got, err := readGrowing(&oneByteAtATime{b: b}, n)
		if err != nil || string(got) != string(b[:n]) {
			t.Fatalf("n=%d: got %d bytes, %v", n, len(got), err)
		}
	}
}

type oneByteAtATime struct{ b []byte }

func (r *oneByteAtATime) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b[:min(len(r.b), 4093)])
	r.b = r.b[n:]
	return n, nil
}

// A client that sends requests and never reads the replies holds at most
// MaxCallsPerConn handler slots (fewer when its replies' expected weight
// fills its reply budget first); other clients are still served.
func TestAClientThatStopsReadingCannotStarveOthers(t *testing.T) {
	m, err := Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(nil)
	Handle(s, "Echo", func(ctx context.Context, r *echoReq) (*echoResp, error) {
		select {
		case <-time.After(r.Sleep):
		case <-ctx.Done():
		}
		return &echoResp{Msg: r.Msg}, nil
	})
	go s.Serve(m.Listener(StreamRPC))
	t.Cleanup(func() { s.Close(); m.Close() })
	addr := m.Addr().String()

	conn, err := DialStreamTLS(addr, StreamRPC, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Far more slow requests than one connection may run at once; the
	// replies are never read.
	body, _ := Marshal(&echoReq{Msg: "x", Sleep: time.Minute})
	go func() {
		for i := range MaxConcurrentCalls + 100 {
			b, _ := Marshal(&request{ID: uint64(i + 1), Method: "Echo", Timeout: int64(time.Minute), Body: body})
			var hdr [4]byte
			binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
			if _, err := conn.Write(append(hdr[:], b...)); err != nil {
				return
			}
		}
	}()
	poll.Until(t, 10*time.Second, "the flood fills its connection's share of handler slots", func() bool { return s.busy() >= min(MaxCallsPerConn, DefaultMaxReplyBytesPerConn/initialWeight) })
	poll.Until(t, 10*time.Second, "the flood stops growing", func() bool {
		n := s.busy()
		time.Sleep(50 * time.Millisecond)
		return s.busy() == n
	})
	if n := s.busy(); n > MaxCallsPerConn {
		t.Fatalf("one connection holds %d handler slots, want at most %d", n, MaxCallsPerConn)
	}
	c := NewClient(ClientConfig{})
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var out echoResp
	if err := c.Call(ctx, addr, "Echo", &echoReq{Msg: "hi"}, &out); err != nil || out.Msg != "hi" {
		t.Fatalf("another client's call: %v %q", err, out.Msg)
	}
}

// A renewed certificate file is picked up without a restart.
func TestCertificatesAreReloadedWhenTheirFilesChange(t *testing.T) {
	p := newTestPKI(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	cp := func(from, to string) {
		b, err := os.ReadFile(filepath.Join(p.dir, from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(to+".tmp", to); err != nil {
			t.Fatal(err)
		}
	}
	cp("m1.pem", cert)
	cp("m1-key.pem", key)
	creds, err := LoadTLS(cert, key, filepath.Join(p.dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	name := func() string {
		c, err := creds.Certificate()
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509ParseLeaf(c)
		if err != nil {
			t.Fatal(err)
		}
		_, n := roleOf(leaf)
		return n
	}
	if got := name(); got != "m1" {
		t.Fatalf("loaded %q, want m1", got)
	}
	cp("m2.pem", cert)
	cp("m2-key.pem", key)
	poll.Until(t, 5*time.Second, "the new certificate is served", func() bool { return name() == "m2" })
}

// tls init refuses to overwrite an existing CA.
func TestInitFilesNeverOverwrites(t *testing.T) {
	p := newTestPKI(t)
	before, _ := os.ReadFile(filepath.Join(p.dir, "ca.pem"))
	if _, err := InitFiles(p.dir, []string{"m1"}, nil, time.Hour); !errors.Is(err, ErrExists) {
		t.Fatalf("second init: got %v, want ErrExists", err)
	}
	after, _ := os.ReadFile(filepath.Join(p.dir, "ca.pem"))
	if string(before) != string(after) {
		t.Fatal("the CA was replaced")
	}
	if _, err := InitFiles(t.TempDir(), []string{"../evil"}, nil, time.Hour); !errors.Is(err, ErrTLSConfig) {
		t.Fatalf("a master named ../evil: got %v, want ErrTLSConfig", err)
	}
	fi, err := os.Stat(filepath.Join(p.dir, "m1-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
}

func x509ParseLeaf(c *tls.Certificate) (*x509.Certificate, error) {
	return x509.ParseCertificate(c.Certificate[0])
}
