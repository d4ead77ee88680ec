package peer

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/master/mastertest"
	"fileshare/transport"
)

// testCluster runs three masters in this process over real TCP on
// loopback, with real boltdb logs in temporary directories: a thin layer
// over mastertest that keeps the names the peer tests use.
type testCluster struct {
	*mastertest.T
}

// testLogger returns a logger writing to the test's output if
// FILESHARE_TEST_LOG is set, else discarding.
func testLogger(t testing.TB) *slog.Logger { return mastertest.TestLogger(t) }

// newTestCluster starts three masters, each adjusted by tweak if it is not
// nil, stops them at cleanup, and waits for a ready leader.
func newTestCluster(t testing.TB, tweak func(*master.Config)) *testCluster {
	t.Helper()
	c := &testCluster{mastertest.New(t, 3, mastertest.Options{Config: tweak})}
	c.leader()
	return c
}

// stop kills master i abruptly (no leadership hand-off); a no-op if it is
// already stopped. Safe to call from any goroutine.
func (c *testCluster) stop(i int) { c.Kill(i) }

// addrs returns every master's address.
func (c *testCluster) addrs() []string { return c.Addrs() }

// leader waits for exactly one running master to lead, past its term's
// barrier, and returns its index.
func (c *testCluster) leader() int { return c.Leader() }

// client returns a client.Client for the cluster, closed at cleanup.
func (c *testCluster) client() *client.Client { return c.Client() }

// startPeer starts a peer named name whose share folder is share ("" for a
// download-only peer), closed at cleanup.
func startPeer(t testing.TB, c *testCluster, name, share string, tweak func(*Config)) *Peer {
	t.Helper()
	cfg := Config{
		Masters:        c.addrs(),
		DataDir:        filepath.Join(t.TempDir(), name),
		ShareDir:       share,
		Listen:         "127.0.0.1:0",
		RescanInterval: 100 * time.Millisecond,
		IOTimeout:      5 * time.Second,
		MasterTimeout:  2 * time.Second,
		Logger:         testLogger(t).With("test_peer", name),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	// The peer's key is derived from its name, so pid(name) is its ID.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, keyFile)); errors.Is(err, fs.ErrNotExist) {
		b, err := encodeKey(testKey(name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cfg.DataDir, keyFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
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
	poll.Until(t, 20*time.Second, fmt.Sprintf("%d holders of %s", want, id[:12]), func() bool {
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

// testKey is the key of the test peer called name.
func testKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("test peer " + name))
	return ed25519.NewKeyFromSeed(seed[:])
}

// pid is the peer ID of the test peer called name (see startPeer).
func pid(name string) string { return client.IdentityFromKey(testKey(name)).PeerID }

// dialPiece opens a piece stream to addr as a peer with a fresh key, as
// any downloader may.
func dialPiece(t testing.TB, addr string) net.Conn {
	t.Helper()
	creds, err := transport.PeerTLS(testKey("raw-client"), nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := transport.DialStreamTLS(addr, transport.StreamPiece, 5*time.Second, creds.PeerClientConfig(func(ed25519.PublicKey) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}
