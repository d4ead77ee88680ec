package peer

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/master"
)

// testCluster runs three masters in this process over real TCP on
// loopback, with real boltdb logs in temporary directories (the approach of
// master's own newTestCluster).
type testCluster struct {
	t       testing.TB
	cfgs    []master.Config
	masters []*master.Master // nil once stopped
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("FILESHARE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func newTestCluster(t testing.TB, tweak func(*master.Config)) *testCluster {
	t.Helper()
	const n = 3
	c := &testCluster{t: t, masters: make([]*master.Master, n)}
	var members []master.Member
	for i := range n {
		members = append(members, master.Member{ID: fmt.Sprintf("m%d", i+1), Addr: freeAddr(t)})
	}
	for i := range n {
		cfg := master.Config{
			ID:             members[i].ID,
			DataDir:        t.TempDir(),
			Listen:         members[i].Addr,
			InitialCluster: members,
			Logger:         testLogger(t).With("node", members[i].ID),
		}
		if tweak != nil {
			tweak(&cfg)
		}
		c.cfgs = append(c.cfgs, cfg)
	}
	for i := range n {
		var err error
		waitFor(t, 10*time.Second, "master "+c.cfgs[i].ID+" starts", func() bool {
			c.masters[i], err = master.New(t.Context(), c.cfgs[i])
			return err == nil
		})
	}
	t.Cleanup(func() {
		for i := range c.masters {
			c.stop(i)
		}
	})
	c.leader()
	return c
}

func (c *testCluster) stop(i int) {
	if c.masters[i] != nil {
		c.masters[i].CloseNow()
		c.masters[i] = nil
	}
}

func (c *testCluster) addrs() []string {
	var out []string
	for _, cfg := range c.cfgs {
		out = append(out, cfg.Listen)
	}
	return out
}

// leader waits for exactly one running master to lead and returns its index.
func (c *testCluster) leader() int {
	c.t.Helper()
	idx := -1
	waitFor(c.t, 15*time.Second, "one leader", func() bool {
		idx = -1
		for i, m := range c.masters {
			if m != nil && m.IsLeader() {
				if idx >= 0 {
					return false
				}
				idx = i
			}
		}
		return idx >= 0
	})
	return idx
}

// client returns a client.Client for the cluster, closed at cleanup.
func (c *testCluster) client() *client.Client {
	c.t.Helper()
	mc, err := client.New(client.Config{Masters: c.addrs(), AttemptTimeout: 2 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { mc.Close() })
	return mc
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for d := time.Millisecond; !cond(); d = min(2*d, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", timeout, what)
		}
		time.Sleep(d)
	}
}

// startPeer starts a peer named name whose share folder is share ("" for a
// download-only peer), closed at cleanup.
func startPeer(t testing.TB, c *testCluster, name, share string, tweak func(*Config)) *Peer {
	t.Helper()
	cfg := Config{
		Masters:        c.addrs(),
		DataDir:        filepath.Join(t.TempDir(), name),
		ShareDir:       share,
		Listen:         "127.0.0.1:0",
		PeerID:         name,
		RescanInterval: 100 * time.Millisecond,
		IOTimeout:      5 * time.Second,
		MasterTimeout:  2 * time.Second,
		Logger:         testLogger(t).With("test_peer", name),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("start peer %s: %v", name, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// randomBytes returns n bytes from a seeded generator.
func randomBytes(seed uint64, n int) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	b := make([]byte, n)
	r.Read(b)
	return b
}

// shareFolder creates a share folder holding files (name -> content).
func shareFolder(t testing.TB, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func idOf(t testing.TB, b []byte) string {
	t.Helper()
	fh, err := HashFile(t.Context(), bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return fh.ID
}

// waitHolders waits until a linearizable lookup of id lists exactly want
// holders, and returns them.
func waitHolders(t testing.TB, mc *client.Client, id string, want int) []client.HolderEntry {
	t.Helper()
	var hs []client.HolderEntry
	waitFor(t, 20*time.Second, fmt.Sprintf("%d holders of %s", want, id[:12]), func() bool {
		r, err := mc.Lookup(t.Context(), id, client.ReadLinearizable)
		if err != nil {
			return false
		}
		hs = r.Holders
		return len(r.Holders) == want
	})
	return hs
}

func sha256File(t testing.TB, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}
