package master

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/hashicorp/raft"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/transport"
)

// Who may do what on a master. The transport proves who a caller is (its
// TLS certificate, see transport.Caller); this file decides what that
// allows:
//
//   - Raft streams: only a master named in the current configuration (any
//     master of the cluster CA while this node has no configuration yet,
//     so that a joining master can be reached by the leader that added it),
//     and each Raft RPC on the stream must name that master in its header
//     (raftlayer.go).
//   - Cluster administration (join, remove, transfer-leader, snapshot,
//     revoke): an admin certificate, or the certificate of a master that
//     is a current member. A master may join only as itself, whether it
//     asks directly or through a member that relays the request (the
//     relay carries who asked, and the leader checks it).
//   - Peer writes and heartbeats: the peer whose key the TLS certificate
//     proved, for the peer ID derived from that key; or a member relaying
//     such a write, which checked it first.
//   - Reads: anyone.
//   - Any certificate whose serial is on the deny list: nothing (trust.go).
//
// Rights follow membership (trust.go): a master certificate naming no
// current member is an outsider (transport.Caller.Outsider) with no
// rights but to ask to join as itself.
//
// On a plaintext master (--insecure, loopback only by default) nothing can
// be proved: every caller is trusted, and a peer's ID must still be the
// one derived from the key it names.

var (
	// ErrBadKey, ErrNotYourPeerID and ErrQuota are client's sentinels of
	// the same names (the API's vocabulary), here for the master's callers.
	ErrBadKey        = client.ErrBadKey
	ErrNotYourPeerID = client.ErrNotYourPeerID
	ErrQuota         = client.ErrQuota
)

// authorizePeer checks that the caller of ctx may act as peer id with
// public key key, and returns the token the index knows the peer by.
func authorizePeer(ctx context.Context, id string, key []byte, forwarded bool) (fsm.Token, error) {
	if len(key) != ed25519.PublicKeySize {
		return fsm.Token{}, fmt.Errorf("%w (got %d bytes)", ErrBadKey, len(key))
	}
	if client.PeerIDOf(key) != id {
		return fsm.Token{}, fmt.Errorf("%w: %q is not %q", ErrNotYourPeerID, id, client.PeerIDOf(key))
	}
	c := transport.CallerFrom(ctx)
	switch {
	case c.Insecure:
	case forwarded && c.Role == transport.RoleMaster && c.Allows(transport.RoleMaster):
		// Relayed by a member of this cluster, which authorized it. A
		// master certificate that names no member (c.Outsider) may not
		// relay: the forwarded flag is only believed from a member.
	case c.Role == transport.RolePeer && bytes.Equal(c.Key, key):
	case c.Role == transport.RolePeer:
		return fsm.Token{}, fmt.Errorf("%w: the caller's certificate is the key of peer %s", ErrNotYourPeerID, client.PeerIDOf(c.Key))
	default:
		return fsm.Token{}, transport.Require(ctx, transport.RolePeer)
	}
	return fsm.TokenOf(key), nil
}

// requireAdmin refuses cluster administration to callers without an admin
// or master certificate. Relayed calls arrive from a master, which checked
// the original caller.
func requireAdmin(ctx context.Context) error {
	return transport.Require(ctx, transport.RoleAdmin)
}

// authorizeStream is the Mux's Authorize hook: Raft streams only from
// masters of the cluster.
func (m *Master) authorizeStream(kind byte, c transport.Caller) error {
	if kind != transport.StreamRaft || c.Insecure {
		return nil
	}
	if c.Role != transport.RoleMaster {
		return fmt.Errorf("a Raft stream needs a master certificate; the caller is %s", c.Role)
	}
	if c.Outsider {
		return fmt.Errorf("master %q is not a member of this cluster", c.Name)
	}
	if m.raftReady.Load() {
		servers, err := m.configuration()
		if err != nil {
			return err
		}
		if len(servers) > 0 && !slices.ContainsFunc(servers, func(s raft.Server) bool { return string(s.ID) == c.Name }) {
			return fmt.Errorf("master %q is not a member of this cluster", c.Name)
		}
	}
	return nil
}

// joinQuota bounds how many peers may join through this master from one
// remote address, so that a flood of fresh keys from one host (a sybil
// attack) is refused before it costs a log entry. IPv6 sources are counted
// hierarchically (transport.Source): max per address, twice that per /64,
// four times per /48, so spreading over the addresses of one network does
// not multiply the quota. It is soft state of the master that received the
// joins: an attacker who spreads over every master gets at most that many
// times the quota.
type joinQuota struct {
	max int // per address; <= 0 disables the quota

	mu    sync.Mutex
	perIP map[netip.Prefix]map[fsm.PeerID]struct{}
	from  map[fsm.PeerID][]netip.Prefix // the levels each counted peer is counted at
}

// admit reports whether peer may join from addr. A peer already counted
// is always admitted (rejoins are free). When a level is at its quota,
// peers that have left the index (gone reports them) are forgotten first.
func (q *joinQuota) admit(addr net.Addr, peer fsm.PeerID, gone func(fsm.PeerID) bool) error {
	if q.max <= 0 || addr == nil {
		return nil
	}
	levels := transport.SourceOf(addr).Levels()
	if len(levels) == 0 {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.perIP[levels[0]][peer]; ok {
		return nil
	}
	for i, p := range levels {
		set := q.perIP[p]
		limit := q.max * transport.LevelScale(i)
		if len(set) >= limit {
			for g := range set {
				if gone(g) {
					q.forget(g)
				}
			}
		}
		if n := len(q.perIP[p]); n >= limit {
			return fmt.Errorf("%w: %d peers have joined from %s, this master's limit (per address; twice that per IPv6 /64, four times per /48); stop some, or ask its operator to raise the limit", ErrQuota, n, p)
		}
	}
	if q.perIP == nil {
		q.perIP = make(map[netip.Prefix]map[fsm.PeerID]struct{})
		q.from = make(map[fsm.PeerID][]netip.Prefix)
	}
	if _, ok := q.from[peer]; ok {
		q.forget(peer) // it joined again from another address
	}
	q.from[peer] = levels
	for _, p := range levels {
		set := q.perIP[p]
		if set == nil {
			set = make(map[fsm.PeerID]struct{})
			q.perIP[p] = set
		}
		set[peer] = struct{}{}
	}
	return nil
}

// forget stops counting peer.
func (q *joinQuota) forget(peer fsm.PeerID) {
	for _, p := range q.from[peer] {
		if set := q.perIP[p]; set != nil {
			delete(set, peer)
			if len(set) == 0 {
				delete(q.perIP, p)
			}
		}
	}
	delete(q.from, peer)
}
