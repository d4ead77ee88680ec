package master_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/master/mastertest"
	"fileshare/transport"
)

// newTLSCluster starts n masters with TLS, as in production.
func newTLSCluster(t *testing.T, n int, tweak func(*master.Config)) *mastertest.T {
	t.Helper()
	return mastertest.New(t, n, mastertest.Options{TLS: true, Config: tweak})
}

// snapshotOf is what an attack must leave unchanged: the index, the
// membership and the term.
type snapshotOf struct {
	digest  string
	members string
	term    uint64
	last    uint64
}

func observe(t *testing.T, c *mastertest.T) snapshotOf {
	t.Helper()
	// A new leader proposes the cluster's two UDP connection-ID secrets
	// in the background; wait for them, so that they do not land between
	// two observations.
	leader := c.Leader()
	secrets := c.Master(leader).TrackerBackend().(interface{ ConnIDSecrets() [][]byte })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := poll.Wait(ctx, func() bool { return len(secrets.ConnIDSecrets()) >= 2 }); err != nil {
		t.Fatalf("waiting for the leader's connection-ID secrets: %v", err)
	}
	c.Converge()
	st := c.Status(c.Leader())
	var ms []string
	for _, m := range st.Members {
		ms = append(ms, m.ID+"="+m.Addr)
	}
	return snapshotOf{digest: st.Digest, members: strings.Join(ms, ","), term: st.Term, last: st.LastIndex}
}

// An acknowledged registration is the owner's alone: with TLS, a peer
// whose certificate is another key cannot unregister it, leave for its
// owner, or heartbeat for it, whether it names the owner's ID with the
// owner's public key or with its own.
func TestAPeerCannotActUnderAnotherPeersID(t *testing.T) {
	c := newTLSCluster(t, 3, nil)
	c.Leader()
	alice, mallory := identity("alice"), identity("mallory")
	ac, mc := c.PeerClient(alice), c.PeerClient(mallory)
	for _, p := range []struct {
		id client.Identity
		c  *client.Client
	}{{alice, ac}, {mallory, mc}} {
		if _, err := p.c.Join(t.Context(), p.id, "127.0.0.1:9004"); err != nil {
			t.Fatal(err)
		}
	}
	f := fileEntry("alice-only.txt")
	if _, err := ac.Register(t.Context(), alice, []client.FileEntry{f}); err != nil {
		t.Fatal(err)
	}
	before := observe(t, c)

	// Alice's public key is public; without her private key it is useless.
	asAlice := client.Identity{PeerID: alice.PeerID, Key: mallory.Key}
	impostor := client.Identity{PeerID: alice.PeerID, Key: alice.Key} // the client only sends the public half
	for name, id := range map[string]client.Identity{"alice's ID, mallory's key": asAlice, "alice's ID and public key": impostor} {
		if _, err := mc.Unregister(t.Context(), id, []string{f.ID}); !errors.Is(err, master.ErrNotYourPeerID) {
			t.Fatalf("%s: unregister through mallory's connection: got %v, want ErrNotYourPeerID", name, err)
		}
		if _, err := mc.Leave(t.Context(), id); !errors.Is(err, master.ErrNotYourPeerID) {
			t.Fatalf("%s: leave: got %v, want ErrNotYourPeerID", name, err)
		}
		if _, err := mc.Heartbeat(t.Context(), id); !errors.Is(err, master.ErrNotYourPeerID) {
			t.Fatalf("%s: heartbeat: got %v, want ErrNotYourPeerID", name, err)
		}
	}
	// A client with no certificate may read but not write.
	anon := c.Client()
	if _, err := anon.Unregister(t.Context(), alice, []string{f.ID}); !errors.Is(err, transport.ErrForbidden) {
		t.Fatalf("unregister without a peer certificate: got %v, want ErrForbidden", err)
	}
	if after := observe(t, c); after.digest != before.digest || after.last != before.last {
		t.Fatalf("refused writes changed the index or grew the log: %+v, was %+v", after, before)
	}
	// Mallory acting as herself touches only her own holdings.
	if _, err := mc.Unregister(t.Context(), mallory, []string{f.ID}); err != nil {
		t.Fatal(err)
	}
	r, err := anon.Lookup(t.Context(), f.ID, client.ReadLinearizable)
	if err != nil || !r.Found || len(r.Holders) != 1 || r.Holders[0].PeerID != alice.PeerID {
		t.Fatalf("lookup after the attacks: %+v, %v; want alice still the one holder", r, err)
	}
}

// A peer ID is derived from the key: even on a plaintext (loopback)
// cluster, a request that names an ID with another key is refused.
func TestAPeerIDMustBeDerivedFromItsKey(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.Leader()
	cl := c.Client()
	alice := identity("alice")
	squatter := client.Identity{PeerID: "alice", Key: alice.Key}
	if _, err := cl.Join(t.Context(), squatter, "127.0.0.1:9004"); !errors.Is(err, master.ErrNotYourPeerID) {
		t.Fatalf("join as %q: got %v, want ErrNotYourPeerID", squatter.PeerID, err)
	}
	if _, err := cl.Join(t.Context(), alice, "127.0.0.1:9004"); err != nil {
		t.Fatalf("join with the derived ID: %v", err)
	}
}

// Membership, leadership and snapshots are the admins' and masters':
// a peer's certificate, or none, changes nothing.
func TestAdminCallsNeedAnAdminCertificate(t *testing.T) {
	c := newTLSCluster(t, 3, nil)
	leader := c.Leader()
	before := observe(t, c)
	peerKey := identity("mallory")
	for name, cl := range map[string]*client.Client{"a peer": c.PeerClient(peerKey), "no certificate": anonymousClient(t, c)} {
		if err := cl.RemoveMember(t.Context(), c.ID(leader)); !errors.Is(err, transport.ErrForbidden) {
			t.Errorf("%s: remove member: got %v, want ErrForbidden", name, err)
		}
		if err := cl.AddMember(t.Context(), "m9", "127.0.0.1:9"); !errors.Is(err, transport.ErrForbidden) {
			t.Errorf("%s: add member: got %v, want ErrForbidden", name, err)
		}
		if _, err := cl.TransferLeader(t.Context(), ""); !errors.Is(err, transport.ErrForbidden) {
			t.Errorf("%s: transfer leadership: got %v, want ErrForbidden", name, err)
		}
		if _, err := cl.Snapshot(t.Context(), c.Addr(leader)); !errors.Is(err, transport.ErrForbidden) {
			t.Errorf("%s: snapshot: got %v, want ErrForbidden", name, err)
		}
	}
	if after := observe(t, c); after != before {
		t.Fatalf("refused admin calls changed the cluster: %+v, was %+v", after, before)
	}
	// The admin certificate may.
	if _, err := c.Client().Snapshot(t.Context(), c.Addr(leader)); err != nil {
		t.Fatalf("snapshot as admin: %v", err)
	}
}

// anonymousClient verifies the masters but presents no certificate.
func anonymousClient(t *testing.T, c *mastertest.T) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Masters: c.Addrs(), TLS: c.CA(), AttemptTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// A forged Raft RPC — an AppendEntries with PrevLogEntry 0 that would
// expire every peer, from a higher term — is refused from anyone but a
// member master: plaintext, a peer's certificate, an admin's, a master of
// another CA, or a master of this CA that is not in the configuration.
// The index, the membership and the term are unchanged.
func TestForgedRaftRPCFromANonMemberIsRefused(t *testing.T) {
	c := newTLSCluster(t, 3, nil)
	leader := c.Leader()
	alice := identity("alice")
	ac := c.PeerClient(alice)
	if _, err := ac.Join(t.Context(), alice, "127.0.0.1:9004"); err != nil {
		t.Fatal(err)
	}
	if _, err := ac.Register(t.Context(), alice, []client.FileEntry{fileEntry("kept.txt")}); err != nil {
		t.Fatal(err)
	}
	before := observe(t, c)

	dir := c.TLSDir()
	ca, err := transport.LoadCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	outsiderDir := t.TempDir()
	writeCert := func(name string, r transport.Role, from *transport.CA) *transport.TLS {
		cert, key, err := from.Issue(r, name, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cp, kp := filepath.Join(outsiderDir, name+".pem"), filepath.Join(outsiderDir, name+"-key.pem")
		if err := os.WriteFile(cp, cert, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(kp, key, 0o600); err != nil {
			t.Fatal(err)
		}
		creds, err := transport.LoadTLS(cp, kp, filepath.Join(dir, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return creds
	}
	otherCA, err := transport.NewCA("another cluster", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	peerCreds, err := alice.TLS(c.CA())
	if err != nil {
		t.Fatal(err)
	}
	adminCreds := c.AdminTLS()
	nonMember := writeCert("m9", transport.RoleMaster, ca)
	foreign := writeCert("m1-elsewhere", transport.RoleMaster, otherCA)

	expire, err := fsm.Encode(fsm.ExpirePeers{Peers: []fsm.PeerID{fsm.PeerID(alice.PeerID)}, Time: time.Now().UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	for name, dial := range map[string]func(addr string, timeout time.Duration) (net.Conn, error){
		"plaintext": func(addr string, timeout time.Duration) (net.Conn, error) {
			return transport.DialStreamTLS(addr, transport.StreamRaft, timeout, nil)
		},
		"a peer's certificate": func(addr string, timeout time.Duration) (net.Conn, error) {
			return transport.DialStreamTLS(addr, transport.StreamRaft, timeout, peerCreds.MasterClientConfig())
		},
		"an admin's certificate": func(addr string, timeout time.Duration) (net.Conn, error) {
			return transport.DialStreamTLS(addr, transport.StreamRaft, timeout, adminCreds.MasterClientConfig())
		},
		"a master of this CA outside the configuration": func(addr string, timeout time.Duration) (net.Conn, error) {
			return transport.DialStreamTLS(addr, transport.StreamRaft, timeout, nonMember.MasterClientConfig())
		},
		"a master of another CA": func(addr string, timeout time.Duration) (net.Conn, error) {
			cfg := foreign.MasterClientConfig()
			cfg.VerifyConnection = nil // the attacker does not care whom it reaches
			return transport.DialStreamTLS(addr, transport.StreamRaft, timeout, cfg)
		},
	} {
		t.Run(name, func(t *testing.T) {
			trans := raft.NewNetworkTransport(newDialLayer(dial), 1, time.Second, io.Discard)
			defer trans.Close()
			req := &raft.AppendEntriesRequest{
				RPCHeader:         raft.RPCHeader{ID: []byte("evil"), Addr: []byte("127.0.0.1:1")},
				Term:              before.term + 100,
				PrevLogEntry:      0,
				PrevLogTerm:       0,
				Entries:           []*raft.Log{{Index: before.last + 1, Term: before.term + 100, Type: raft.LogCommand, Data: expire}},
				LeaderCommitIndex: before.last + 1,
			}
			var resp raft.AppendEntriesResponse
			err := trans.AppendEntries(raft.ServerID(c.ID(leader)), raft.ServerAddress(c.Addr(leader)), req, &resp)
			if err == nil {
				t.Fatalf("the forged AppendEntries was answered: %+v", resp)
			}
			vote := &raft.RequestVoteRequest{RPCHeader: req.RPCHeader, Term: before.term + 100, LastLogIndex: before.last + 100, LastLogTerm: before.term + 100, LeadershipTransfer: true}
			var vresp raft.RequestVoteResponse
			if err := trans.RequestVote(raft.ServerID(c.ID(leader)), raft.ServerAddress(c.Addr(leader)), vote, &vresp); err == nil {
				t.Fatalf("the forged RequestVote was answered: %+v", vresp)
			}
		})
	}
	after := observe(t, c)
	if after.digest != before.digest || after.members != before.members || after.term != before.term {
		t.Fatalf("forged Raft RPCs changed the cluster: %+v, was %+v", after, before)
	}
}

// dialLayer is a raft.StreamLayer that only dials, the way an attacker
// would drive raft's own transport.
type dialLayer struct {
	dial   func(addr string, timeout time.Duration) (net.Conn, error)
	closed chan struct{}
	once   sync.Once
}

func newDialLayer(dial func(addr string, timeout time.Duration) (net.Conn, error)) *dialLayer {
	return &dialLayer{dial: dial, closed: make(chan struct{})}
}

func (d *dialLayer) Dial(a raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return d.dial(string(a), timeout)
}
func (d *dialLayer) Accept() (net.Conn, error) { <-d.closed; return nil, net.ErrClosed }
func (d *dialLayer) Close() error              { d.once.Do(func() { close(d.closed) }); return nil }
func (d *dialLayer) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// A flood of fresh peer keys from one address hits its quota with a clear
// error, and the refused joins cost no log entry.
func TestASybilFloodHitsItsQuotaWithoutGrowingTheLog(t *testing.T) {
	c := newCluster(t, 1, func(cfg *master.Config) { cfg.MaxPeersPerIP = 3 })
	c.Leader()
	cl := c.Client()
	for i := range 3 {
		if _, err := cl.Join(t.Context(), identity(string(rune('a'+i))), "127.0.0.1:9004"); err != nil {
			t.Fatal(err)
		}
	}
	before := observe(t, c)
	for i := range 20 {
		_, err := cl.Join(t.Context(), identity("sybil-"+string(rune('a'+i))), "127.0.0.1:9004")
		if !errors.Is(err, master.ErrQuota) || !strings.Contains(err.Error(), "limit") || strings.Contains(err.Error(), "--") {
			t.Fatalf("join %d past the quota: got %v, want ErrQuota naming the limit and no flag", i, err)
		}
	}
	// A peer already counted may rejoin.
	if _, err := cl.Join(t.Context(), identity("a"), "127.0.0.1:9005"); err != nil {
		t.Fatalf("rejoin of a counted peer: %v", err)
	}
	if after := observe(t, c); after.last != before.last+1 {
		t.Fatalf("the log grew by %d entries for 20 refused joins and one rejoin, want 1", after.last-before.last)
	}
}

// A request whose log entry would be too large, or that would take a peer
// past its file quota, is refused before it is proposed.
func TestOversizedAndOverQuotaWritesCostNoLogEntry(t *testing.T) {
	c := newCluster(t, 1, func(cfg *master.Config) {
		cfg.MaxCommandBytes = 16 << 10
		cfg.MaxFilesPerPeer = 50
	})
	c.Leader()
	cl := c.Client()
	p := identity("hoarder")
	if _, err := cl.Join(t.Context(), p, "127.0.0.1:9004"); err != nil {
		t.Fatal(err)
	}
	before := observe(t, c)
	var big []client.FileEntry
	for i := range 300 {
		big = append(big, fileEntry(strings.Repeat("x", 100)+string(rune('A'+i%26))+string(rune('a'+i/26))))
	}
	if _, err := cl.Register(t.Context(), p, big); !errors.Is(err, master.ErrQuota) || !strings.Contains(err.Error(), "byte limit") || strings.Contains(err.Error(), "--") {
		t.Fatalf("register of a %d-file request: got %v, want ErrQuota naming the byte limit and no flag", len(big), err)
	}
	if _, err := cl.Register(t.Context(), p, big[:51]); !errors.Is(err, master.ErrQuota) || !strings.Contains(err.Error(), "limit of 50 files per peer") || strings.Contains(err.Error(), "--") {
		t.Fatalf("register of 51 files: got %v, want ErrQuota naming the limit and no flag", err)
	}
	if after := observe(t, c); after.last != before.last || after.digest != before.digest {
		t.Fatalf("refused writes changed the index or the log: %+v, was %+v", after, before)
	}
	if _, err := cl.Register(t.Context(), p, big[:50]); err != nil {
		t.Fatalf("register within both limits: %v", err)
	}
}

// Secure by default: a master without TLS refuses a non-loopback address
// unless told the network is trusted.
func TestPlaintextMasterListensOnLoopbackOnly(t *testing.T) {
	cfg := master.Config{ID: "m1", DataDir: t.TempDir(), Listen: "0.0.0.0:0", Advertise: "127.0.0.1:7999", InitialCluster: []master.Member{{ID: "m1", Addr: "127.0.0.1:7999"}}}
	_, err := master.New(t.Context(), cfg)
	var ce *master.ConfigError
	if !errors.Is(err, master.ErrConfig) || !errors.As(err, &ce) || ce.Field != "Listen" || !strings.Contains(err.Error(), "Insecure") || !strings.Contains(err.Error(), "tls init") {
		t.Fatalf("plaintext on 0.0.0.0: got %v, want a ConfigError for Listen naming Insecure and tls init", err)
	}
}
