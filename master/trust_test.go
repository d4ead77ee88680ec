package master_test

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/client"
	"fileshare/internal/freeport"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/master/mastertest"
	"fileshare/transport"
)

// mint issues a certificate from the cluster's CA, as 'fileshare tls
// init' does for a spare master, and returns its credentials and serial.
func mint(t *testing.T, c *mastertest.T, r transport.Role, name string) (*transport.TLS, string) {
	t.Helper()
	dir := c.TLSDir()
	ca, err := transport.LoadCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(r, name, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cp, kp := filepath.Join(out, name+".pem"), filepath.Join(out, name+"-key.pem")
	if err := os.WriteFile(cp, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kp, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	creds, err := transport.LoadTLS(cp, kp, filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return creds, transport.SerialOf(leaf)
}

// nodeTLS returns the credentials of the cluster's master i.
func nodeTLS(t *testing.T, c *mastertest.T, i int) *transport.TLS {
	t.Helper()
	dir := c.TLSDir()
	creds, err := transport.LoadTLS(filepath.Join(dir, c.ID(i)+".pem"), filepath.Join(dir, c.ID(i)+"-key.pem"), filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

func clientWith(t *testing.T, c *mastertest.T, creds *transport.TLS) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Masters: c.Addrs(), TLS: creds, AttemptTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// Rights follow membership: a master certificate from the cluster's CA
// that names no member (a spare one, as 'tls init' mints) cannot act as a
// peer, cannot administer the cluster, and cannot forge the forwarded
// flag, neither on a peer write nor on a join; a member relaying a join
// for a master that asked to join as someone else is refused too. The
// index, the membership and the term are unchanged.
func TestAMasterCertificateOfNoMemberHasNoRights(t *testing.T) {
	c := newTLSCluster(t, 3, nil)
	leader := c.Leader()
	alice := identity("alice")
	ac := c.PeerClient(alice)
	if _, err := ac.Join(t.Context(), alice, "127.0.0.1:9004"); err != nil {
		t.Fatal(err)
	}
	f := fileEntry("alices.txt")
	if _, err := ac.Register(t.Context(), alice, []client.FileEntry{f}); err != nil {
		t.Fatal(err)
	}
	before := observe(t, c)

	spare, _ := mint(t, c, transport.RoleMaster, "m9")
	m9 := clientWith(t, c, spare)
	pub := alice.Key.Public()
	forbidden := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, transport.ErrForbidden) {
			t.Errorf("%s: got %v, want ErrForbidden", what, err)
		}
	}
	for i := range c.Len() {
		addr := c.Addr(i)
		hdr := client.WriteHeader{PeerID: alice.PeerID, Key: []byte(pub.(ed25519.PublicKey)), RequestID: 900 + uint64(i), Forwarded: true}
		forbidden("a forwarded unregister for alice", m9.CallAt(t.Context(), addr, client.MethodUnregister, &client.UnregisterRequest{WriteHeader: hdr, Files: []string{f.ID}}, &client.WriteReply{}))
		forbidden("a forwarded leave for alice", m9.CallAt(t.Context(), addr, client.MethodPeerLeave, &client.PeerLeaveRequest{WriteHeader: hdr}, &client.WriteReply{}))
		forbidden("a forwarded join as evil9", m9.CallAt(t.Context(), addr, client.MethodMemberJoin, &client.MemberJoinRequest{ID: "evil9", Addr: "127.0.0.1:9", Forwarded: true, Origin: "admin/ops"}, &client.Empty{}))
		forbidden("a join as evil9", m9.CallAt(t.Context(), addr, client.MethodMemberJoin, &client.MemberJoinRequest{ID: "evil9", Addr: "127.0.0.1:9"}, &client.Empty{}))
		forbidden("removing a member", m9.CallAt(t.Context(), addr, client.MethodMemberRemove, &client.MemberRemoveRequest{ID: c.ID(leader)}, &client.Empty{}))
		forbidden("a forwarded removal", m9.CallAt(t.Context(), addr, client.MethodMemberRemove, &client.MemberRemoveRequest{ID: c.ID(leader), Forwarded: true}, &client.Empty{}))
		forbidden("a snapshot", m9.CallAt(t.Context(), addr, client.MethodSnapshot, &client.SnapshotRequest{}, &client.SnapshotReply{}))
		forbidden("revoking a certificate", m9.CallAt(t.Context(), addr, master.MethodRevoke, &master.RevokeRequest{Serials: []string{"1"}}, &master.RevokeReply{}))
	}
	// A member relaying a join is believed only for what its original
	// caller may ask.
	member := clientWith(t, c, nodeTLS(t, c, c.Follower(leader)))
	for _, origin := range []string{"master/m9", ""} {
		forbidden("a member relaying m9's join as evil9 (origin "+origin+")", member.CallAt(t.Context(), c.Addr(leader), client.MethodMemberJoin,
			&client.MemberJoinRequest{ID: "evil9", Addr: "127.0.0.1:9", Forwarded: true, Origin: origin}, &client.Empty{}))
	}
	if after := observe(t, c); after.digest != before.digest || after.members != before.members || after.term != before.term {
		t.Fatalf("refused calls changed the cluster: %+v, was %+v", after, before)
	}
	r, err := c.Client().Lookup(t.Context(), f.ID, client.ReadLinearizable)
	if err != nil || !r.Found || len(r.Holders) != 1 {
		t.Fatalf("alice's file after the attacks: %+v, %v", r, err)
	}
}

// A master joins over TLS through a follower, which relays the request
// with who asked: the new master becomes a member, and from then on has a
// member's rights.
func TestASpareMasterJoinsAsItselfThroughAFollower(t *testing.T) {
	c := newTLSCluster(t, 3, func(cfg *master.Config) { cfg.ServerStabilizationTime = 100 * time.Millisecond })
	leader := c.Leader()
	creds, _ := mint(t, c, transport.RoleMaster, "m4")
	listen := freeport.On(t, "127.0.0.1")
	cfg := master.Config{ID: "m4", DataDir: t.TempDir(), Listen: listen, Join: []string{c.Addr(c.Follower(leader))}, TLS: creds, Logger: mastertest.TestLogger(t), JoinTimeout: 20 * time.Second}
	m4, err := master.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("m4 joining through a follower: %v", err)
	}
	t.Cleanup(func() { m4.CloseNow() })
	admin := c.Client()
	poll.Until(t, 20*time.Second, "m4 is a member and has applied the index", func() bool {
		st := c.Status(leader)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		st4, err := admin.Status(ctx, listen)
		return err == nil && slices.ContainsFunc(st.Members, func(m client.Member) bool { return m.ID == "m4" }) &&
			st4.AppliedIndex >= st.CommitIndex
	})
	// Now a member, m4's certificate may administer.
	if _, err := clientWith(t, c, creds).Snapshot(t.Context(), c.Addr(leader)); err != nil {
		t.Fatalf("a snapshot asked by the new member: %v", err)
	}
}

// A revoked certificate loses its open connections on every master and
// is refused from then on; unrevoked, it works again. The deny list is
// the cluster's: 'cluster revoke --list' reads it from any master.
func TestRevokingACertificateClosesItsOpenConnections(t *testing.T) {
	c := newTLSCluster(t, 3, nil)
	c.Leader()
	ops, serial := mint(t, c, transport.RoleAdmin, "ops")
	var open []net.Conn
	for i := range c.Len() {
		conn, err := transport.DialStreamTLS(c.Addr(i), transport.StreamRPC, 2*time.Second, ops.MasterClientConfig())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		open = append(open, conn)
	}
	opsClient := clientWith(t, c, ops)
	if _, err := opsClient.Snapshot(t.Context(), c.Addr(0)); err != nil {
		t.Fatalf("ops before revocation: %v", err)
	}

	var reply master.RevokeReply
	if err := c.Client().Call(t.Context(), master.MethodRevoke, &master.RevokeRequest{Serials: []string{serial}}, &reply); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if len(reply.Revoked) != 1 || reply.Revoked[0].Serial != serial {
		t.Fatalf("deny list after revoking %s: %+v", serial, reply.Revoked)
	}
	for i, conn := range open {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.ReadAll(conn)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("master %d kept the revoked certificate's connection open for 5s", i)
		}
	}
	for i := range c.Len() {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		_, err := opsClient.Snapshot(ctx, c.Addr(i))
		cancel()
		if err == nil {
			t.Fatalf("master %d served the revoked certificate", i)
		}
	}
	for i := range c.Len() {
		var list master.RevokeReply
		if err := c.Client().CallAt(t.Context(), c.Addr(i), master.MethodRevocations, &master.RevocationsRequest{ReadHeader: client.ReadHeader{Level: client.ReadStale}}, &list); err != nil || len(list.Revoked) != 1 {
			t.Fatalf("deny list on master %d: %+v, %v", i, list.Revoked, err)
		}
	}
	// Restarted, a master refuses it again once it has caught up with
	// the log (the list is in the log and in snapshots).
	c.Stop(0)
	c.Restart(0)
	c.Converge()
	poll.Until(t, 5*time.Second, "the restarted master refuses the revoked certificate", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, err := clientWith(t, c, ops).Snapshot(ctx, c.Addr(0))
		return err != nil
	})

	if err := c.Client().Call(t.Context(), master.MethodRevoke, &master.RevokeRequest{Serials: []string{serial}, Unrevoke: true}, &reply); err != nil || len(reply.Revoked) != 0 {
		t.Fatalf("unrevoke: %+v, %v", reply.Revoked, err)
	}
	poll.Until(t, 10*time.Second, "the unrevoked certificate works again", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err := clientWith(t, c, ops).Snapshot(ctx, c.Addr(1))
		return err == nil
	})
}

// A member removed from the cluster loses its Raft streams at once, and a
// member's Raft stream cannot carry RPCs that claim another member's
// identity.
func TestRaftStreamsAreTiedToMembership(t *testing.T) {
	c := newTLSCluster(t, 3, nil)
	leader := c.Leader()
	f1 := c.Follower(leader)
	f2 := 3 - leader - f1
	before := observe(t, c)

	// f2's certificate, claiming to be f1: refused before raft sees it.
	trans := raft.NewNetworkTransport(newDialLayer(func(addr string, timeout time.Duration) (net.Conn, error) {
		return transport.DialStreamTLS(addr, transport.StreamRaft, timeout, nodeTLS(t, c, f2).MasterClientConfig())
	}), 1, time.Second, io.Discard)
	defer trans.Close()
	vote := &raft.RequestVoteRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(c.ID(f1)), Addr: []byte(c.Addr(f1))},
		Term:      before.term + 100, LastLogIndex: before.last + 100, LastLogTerm: before.term + 100, LeadershipTransfer: true,
	}
	var vresp raft.RequestVoteResponse
	if err := trans.RequestVote(raft.ServerID(c.ID(leader)), raft.ServerAddress(c.Addr(leader)), vote, &vresp); err == nil {
		t.Fatalf("a RequestVote claiming %s on %s's stream was answered: %+v", c.ID(f1), c.ID(f2), vresp)
	}
	if after := observe(t, c); after.term != before.term || after.members != before.members {
		t.Fatalf("the forged vote changed the cluster: %+v, was %+v", after, before)
	}

	// f2's own stream to the leader, open while f2 is a member...
	conn, err := transport.DialStreamTLS(c.Addr(leader), transport.StreamRaft, 2*time.Second, nodeTLS(t, c, f2).MasterClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// ...is closed once f2 is removed.
	if err := c.Client().RemoveMember(t.Context(), c.ID(f2)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the removed member's raft stream was still open 5s after its removal")
	}
	// And a new one is refused.
	if c2, err := transport.DialStreamTLS(c.Addr(leader), transport.StreamRaft, 2*time.Second, nodeTLS(t, c, f2).MasterClientConfig()); err == nil {
		_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.ReadAll(c2)
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("a removed member opened a new raft stream")
		}
		c2.Close()
	}
}

// Capacity is kept for the cluster itself: with every connection a
// stranger may open to the survivors taken, the survivors of a killed
// leader still open connections to each other and elect a new leader.
func TestSurvivorsElectALeaderWhileAStrangerHoldsTheConnectionCaps(t *testing.T) {
	c := mastertest.New(t, 3, mastertest.Options{TLS: true, OwnIPs: true, Config: func(cfg *master.Config) {
		cfg.ClusterPort.MaxConns, cfg.ClusterPort.MaxConnsPerIP = 8, 8
	}})
	leader := c.Leader()
	anon := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	stranger := func(addr string) (net.Conn, error) {
		d := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 200)}}
		raw, err := d.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(raw, anon)
		_ = tc.SetDeadline(time.Now().Add(2 * time.Second))
		if err := tc.Handshake(); err != nil {
			raw.Close()
			return nil, err
		}
		if _, err := tc.Write([]byte{transport.StreamRPC}); err != nil {
			raw.Close()
			return nil, err
		}
		_ = tc.SetDeadline(time.Time{})
		return tc, nil
	}
	// Cut every link between the masters, so that the survivors will need
	// new connections to each other, then let the stranger take all it
	// can.
	for i := range c.Len() {
		c.Isolate(i)
	}
	var survivors []int
	for i := range c.Len() {
		if i == leader {
			continue
		}
		survivors = append(survivors, i)
		// Take every connection the master lets a stranger have; it
		// refuses the ninth at the latest.
		held := 0
		for range 12 {
			conn, err := stranger(c.Addr(i))
			if err != nil {
				if errors.Is(err, syscall.EADDRNOTAVAIL) {
					t.Skipf("cannot dial from 127.0.0.200: %v", err)
				}
				break
			}
			// A refused connection is closed right after the handshake.
			_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			_, rerr := conn.Read(make([]byte, 1))
			_ = conn.SetReadDeadline(time.Time{})
			var ne net.Error
			if !errors.As(rerr, &ne) || !ne.Timeout() {
				conn.Close()
				break
			}
			held++
			t.Cleanup(func() { conn.Close() })
		}
		if held > 8 {
			t.Fatalf("master %s let one stranger hold %d connections over a cap of 8", c.ID(i), held)
		}
		t.Logf("the stranger holds %d connections to %s", held, c.ID(i))
	}
	c.Kill(leader)
	c.Heal()
	start := time.Now()
	poll.Until(t, 20*time.Second, "a survivor becomes leader", func() bool {
		for _, i := range survivors {
			if m := c.Master(i); m != nil && m.IsLeader() {
				return true
			}
		}
		return false
	})
	t.Logf("a survivor led %v after the leader was killed", time.Since(start).Round(time.Millisecond))
}
