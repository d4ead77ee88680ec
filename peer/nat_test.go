package peer

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/internal/poll"
	"fileshare/master"
)

// waitReachable waits until p has learnt from a master whether it is
// reachable, and returns the answer.
func waitReachable(t *testing.T, p *Peer) bool {
	t.Helper()
	var r bool
	poll.Until(t, 20*time.Second, "a reachability answer for "+p.ID(), func() bool {
		var known bool
		r, known = p.Reachable()
		return known
	})
	return r
}

// A master tells a peer the address its connection comes from, and a
// dial-back decides reachability: a listening peer is reachable, and the
// master never dials an address other than the caller's own.
func TestObserveReportsTheCallersAddressAndDialsBack(t *testing.T) {
	c := newTestCluster(t, nil)
	alice := startPeer(t, c, "alice", t.TempDir(), nil)
	if !waitReachable(t, alice) {
		t.Fatal("a peer listening on loopback is not reachable from a master on loopback")
	}
	mc := c.client()
	id := client.IdentityFromKey(testKey("bob"))
	r, err := mc.Observe(t.Context(), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Observed; len(got) < len("127.0.0.1:1") || got[:10] != "127.0.0.1:" {
		t.Fatalf("observed %q, want this test's loopback address", got)
	}
	// Nothing with bob's key listens at alice's port: not reachable.
	_, port, _ := splitHostPort(alice.mux.Addr().String())
	r, err = mc.Observe(t.Context(), id, port)
	if err != nil {
		t.Fatal(err)
	}
	if r.Reachable || r.ProbeError == "" {
		t.Fatalf("a dial-back to another peer's port counted as reachable: %+v", r)
	}
}

// Connection reversal: a holder that cannot be dialled (its advertised
// address is dead) is asked through its push channel to dial the
// downloader, and the file arrives byte for byte over that connection.
// The two peers know different masters, so the request crosses from one
// master to the other.
func TestReversalReachesAHolderThatCannotBeDialled(t *testing.T) {
	c := newTestCluster(t, nil)
	data := randomBytes(22, 3*mib+777)
	id := idOf(t, data)
	startPeer(t, c, "hidden", shareFolder(t, map[string][]byte{"f.bin": data}), func(cfg *Config) {
		cfg.Advertise = "127.0.0.1:1" // nothing listens there: a direct dial fails at once
		cfg.Masters = c.addrs()[:1]
	})
	dl := startPeer(t, c, "public", t.TempDir(), func(cfg *Config) { cfg.Masters = c.addrs()[1:2] })
	waitHolders(t, c.client(), id, 1)
	if !waitReachable(t, dl) {
		t.Fatal("the downloader is not reachable; reversal cannot be tested")
	}
	dest := filepath.Join(t.TempDir(), "f.bin")
	var saw map[string]int
	res, err := dl.Download(t.Context(), id, dest, DownloadOptions{Progress: func(p Progress) { saw = p.Paths }})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Paths[pid("hidden")]; got != PathReversal {
		t.Fatalf("the hidden holder was reached by %q, want %q (paths %v)", got, PathReversal, res.Paths)
	}
	if saw[PathReversal] != 1 {
		t.Fatalf("the last progress update counted paths %v, want one reversal", saw)
	}
	if sha256File(t, dest) != sha256.Sum256(data) {
		t.Fatal("the reversed download differs from the original")
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(metricsOf(t, dl)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`fileshare_peer_piece_connections_total{path="reversal"}`, "fileshare_peer_reachable 1"} {
		if !bytes.Contains(buf.Bytes(), []byte(want)) {
			t.Fatalf("/metrics lacks %s:\n%s", want, buf.String())
		}
	}
}

// A reversal that nobody can serve fails with the holder named, and an
// unknown holder (no push channel anywhere) is client.ErrNoChannel.
func TestReversalToAnAbsentPeerFails(t *testing.T) {
	c := newTestCluster(t, nil)
	dl := startPeer(t, c, "public", t.TempDir(), nil)
	waitReachable(t, dl)
	_, err := dl.dialReversed(t.Context(), pid("nobody"))
	if err == nil || !errorsIs(err, client.ErrNoChannel) {
		t.Fatalf("reversal to a peer with no channel: %v, want client.ErrNoChannel", err)
	}
	// Nobody may make a holder dial a third party's address.
	_, err = c.client().Connect(t.Context(), client.IdentityFromKey(testKey("mallory")), dl.ID(),
		client.RendezvousMessage{Kind: client.ConnReverse, Addr: "192.0.2.1:80", Token: make([]byte, client.RendezvousToken)})
	if !errorsIs(err, fsm.ErrInvalid) {
		t.Fatalf("a reversal towards someone else's IP: %v, want fsm.ErrInvalid", err)
	}
}

func splitHostPort(a string) (string, int, error) {
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	return h, n, err
}

// metricsOf returns the body of p's /metrics.
func metricsOf(t *testing.T, p *Peer) io.Reader {
	t.Helper()
	rec := httptest.NewRecorder()
	p.StatusHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// Hole punching over QUIC: neither side can be dialled (the holder's
// advertised address is dead, the downloader only downloads), so the
// masters coordinate a simultaneous open, and the file arrives byte for
// byte over a QUIC stream authenticated with both peer keys.
func TestPunchConnectsWhenNeitherSideCanBeDialled(t *testing.T) {
	c := newTestCluster(t, nil)
	data := randomBytes(23, 2*mib+99)
	id := idOf(t, data)
	holder := startPeer(t, c, "hidden", shareFolder(t, map[string][]byte{"f.bin": data}), func(cfg *Config) {
		cfg.Advertise = "127.0.0.1:1"
	})
	dl := startPeer(t, c, "homebound", "", nil)
	waitHolders(t, c.client(), id, 1)
	poll.Until(t, 20*time.Second, "the holder's observed UDP address", func() bool { return holder.punchAddr() != "" })
	dest := filepath.Join(t.TempDir(), "f.bin")
	res, err := dl.Download(t.Context(), id, dest, DownloadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Paths[pid("hidden")]; got != PathPunch {
		t.Fatalf("the holder was reached by %q, want %q", got, PathPunch)
	}
	if sha256File(t, dest) != sha256.Sum256(data) {
		t.Fatal("the punched download differs from the original")
	}
}

// plaintextProbe reports whether any 32-byte sample of data (one every
// 1 KiB) appears in b.
type plaintextProbe struct {
	mu      sync.Mutex
	samples map[[32]byte]bool
	relayed int
	hits    int
}

func newPlaintextProbe(data []byte) *plaintextProbe {
	pp := &plaintextProbe{samples: map[[32]byte]bool{}}
	for i := 0; i+32 <= len(data); i += 1024 {
		pp.samples[[32]byte(data[i:i+32])] = true
	}
	return pp
}

func (pp *plaintextProbe) tap(b []byte) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.relayed += len(b)
	for i := 0; i+32 <= len(b); i++ {
		if pp.samples[[32]byte(b[i:i+32])] {
			pp.hits++
		}
	}
}

// The relay, last rung of the ladder: when nothing else connects, the
// bytes flow through a relay peer, and the relay carries the whole file
// without ever holding a byte of it in the clear; a master with a relay
// budget relays too.
func TestRelayCarriesOnlyCiphertext(t *testing.T) {
	c := newTestCluster(t, func(cfg *master.Config) { cfg.RelayBudget = 4 })
	data := randomBytes(24, 2*mib+55)
	id := idOf(t, data)
	probe := newPlaintextProbe(data)
	if probe.tap(data[5000:9000]); probe.hits == 0 {
		t.Fatal("the plaintext probe misses plaintext; it could not catch a leaking relay")
	}
	probe.hits, probe.relayed = 0, 0
	relayPeer := startPeer(t, c, "relay", t.TempDir(), func(cfg *Config) { cfg.Relay = true; cfg.relayTap = probe.tap })
	startPeer(t, c, "hidden", shareFolder(t, map[string][]byte{"f.bin": data}), func(cfg *Config) { cfg.Advertise = "127.0.0.1:1" })
	noPunch := func(cfg *Config) { cfg.skipPaths = []string{PathPunch} }
	dl := startPeer(t, c, "homebound", "", noPunch)
	waitHolders(t, c.client(), id, 1)
	waitReachable(t, relayPeer)
	poll.Until(t, 20*time.Second, "the relay peer listed", func() bool {
		rs, err := c.client().Relays(t.Context())
		return err == nil && slices.Contains(rs, client.RelayInfo{Addr: relayPeer.Addr(), PeerID: relayPeer.ID()})
	})
	dest := filepath.Join(t.TempDir(), "f.bin")
	res, err := dl.Download(t.Context(), id, dest, DownloadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Paths[pid("hidden")]; got != PathRelay {
		t.Fatalf("the holder was reached by %q, want %q", got, PathRelay)
	}
	if sha256File(t, dest) != sha256.Sum256(data) {
		t.Fatal("the relayed download differs from the original")
	}
	probe.mu.Lock()
	relayed, hits := probe.relayed, probe.hits
	probe.mu.Unlock()
	t.Logf("relayed %d bytes for a %d-byte file", relayed, len(data))
	if relayed < len(data) {
		t.Fatalf("the relay peer carried %d bytes of a %d-byte file; the relay peer should come before the master's relay", relayed, len(data))
	}
	if hits != 0 {
		t.Fatalf("the relay saw %d samples of the file in the clear", hits)
	}
	// A master's relay, once the peer relay is gone.
	relayPeer.Close()
	dl2 := startPeer(t, c, "homebound2", "", noPunch)
	dest2 := filepath.Join(t.TempDir(), "f.bin")
	res, err = dl2.Download(t.Context(), id, dest2, DownloadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Paths[pid("hidden")]; got != PathRelay || sha256File(t, dest2) != sha256.Sum256(data) {
		t.Fatalf("through a master's relay: path %q, or the bytes differ", got)
	}
}
