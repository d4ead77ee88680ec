package master

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/transport"
)

// Rights follow membership and the deny list. A CA-signed certificate
// proves who its holder is; what that holder may do on the cluster port
// is decided here, from state that changes while connections stay open:
//
//   - a master certificate gives master rights (Raft, relaying writes and
//     tracker traffic, administration) only while the master it names is
//     in the raft configuration; any other master certificate may only ask
//     to join as itself (handleMemberJoin);
//   - a certificate whose serial is on the replicated deny list (fileshare
//     cluster revoke) is refused at the TLS handshake and closed wherever
//     it is open.
//
// trustGate is the transport.Gate that tells the Mux and the RPC server
// so; watchTrust keeps it current, and every change bumps its version,
// which makes the Mux re-check open connections (closing those that lost
// their rights, Raft streams of a removed member included) and the RPC
// server re-check a connection before its next call.

// ClusterPortLimits bounds what callers may hold on the cluster port. A
// zero field means transport's default.
type ClusterPortLimits struct {
	// MaxConns caps connections of callers that are not members, open at
	// once. Zero means transport.DefaultMaxConns.
	MaxConns int
	// MaxConnsPerIP caps them per source address (×2 per IPv6 /64, ×4
	// per /48). Zero means transport.DefaultMaxConnsPerIP.
	MaxConnsPerIP int
	// MaxMemberConns is the capacity kept for members of the cluster,
	// apart from MaxConns. Zero means transport.DefaultMaxMemberConns.
	MaxMemberConns int
	// Calls bounds handler slots and reply bytes; see transport.Limits.
	Calls transport.Limits
}

// trustState is one immutable view of who has rights.
type trustState struct {
	known   bool              // a non-empty configuration was read
	members map[string]string // member ID → raft address
	ips     map[netip.Addr]bool
	revoked map[string]int64 // the FSM's deny list (never changed in place)
}

type trustGate struct {
	m       *Master
	state   atomic.Pointer[trustState]
	version atomic.Uint64
	mu      sync.Mutex // serialises refresh
}

var _ transport.Gate = (*trustGate)(nil)

func newTrustGate(m *Master) *trustGate {
	g := &trustGate{m: m}
	g.state.Store(&trustState{})
	return g
}

// Vet implements transport.Gate.
func (g *trustGate) Vet(c transport.Caller) (transport.Caller, error) {
	st := g.state.Load()
	if c.Serial != "" {
		if _, ok := st.revoked[c.Serial]; ok {
			return c, fmt.Errorf("%w: serial %s is on the cluster's deny list (fileshare cluster revoke)", transport.ErrRevoked, c.Serial)
		}
	}
	if c.Role == transport.RoleMaster && !c.Insecure && st.known {
		if _, ok := st.members[c.Name]; ok {
			c.Member = true
		} else {
			c.Outsider = true
		}
	}
	return c, nil
}

// Version implements transport.Gate.
func (g *trustGate) Version() uint64 { return g.version.Load() }

// Reserved implements transport.Gate.
func (g *trustGate) Reserved(ip netip.Addr) bool { return g.state.Load().ips[ip] }

// isMember reports whether id is in the configuration this master knows.
func (g *trustGate) isMember(id string) bool {
	_, ok := g.state.Load().members[id]
	return ok
}

// memberAddr returns the raft address of member id, if known.
func (g *trustGate) memberAddr(id string) (string, bool) {
	a, ok := g.state.Load().members[id]
	return a, ok
}

// trustPollEvery is how often watchTrust reads the configuration and the
// deny list: the longest a removed member or a revoked certificate keeps
// a connection it already had.
const trustPollEvery = 250 * time.Millisecond

// watchTrust keeps the gate current. Owned by m (m.wg); it ends with m.ctx.
func (g *trustGate) watch() {
	t := time.NewTicker(trustPollEvery)
	defer t.Stop()
	for {
		g.refresh(g.m.ctx)
		if !nextTick(g.m.ctx, t) {
			return
		}
	}
}

// refresh reads the configuration and the deny list and installs a new
// state if either changed. Safe from any goroutine.
func (g *trustGate) refresh(ctx context.Context) {
	m := g.m
	if !m.raftReady.Load() {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.state.Load()
	next := &trustState{known: old.known, members: old.members, ips: old.ips, revoked: m.fsm.RevokedSet()}
	if servers, err := m.configuration(); err == nil && len(servers) > 0 {
		members := make(map[string]string, len(servers))
		for _, s := range servers {
			members[string(s.ID)] = string(s.Address)
		}
		if !old.known || !maps.Equal(members, old.members) {
			next.known, next.members = true, members
			next.ips = resolveMembers(ctx, servers)
		}
	}
	if next.known == old.known && sameMap(next.members, old.members) && sameMap(next.revoked, old.revoked) {
		return
	}
	g.state.Store(next)
	g.version.Add(1)
	m.logger.Debug("membership or deny list changed; re-checking open connections", "members", len(next.members), "revoked", len(next.revoked))
}

// sameMap reports whether a and b are the same map (not merely equal).
func sameMap[V any](a, b map[string]V) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 {
		return true
	}
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// resolveMembers returns the IPs of the members' addresses, so that
// connections from them may use the capacity kept for members before they
// authenticate. A name that does not resolve within a second is left out:
// its connections then wait in the strangers' line until they prove who
// they are.
func resolveMembers(ctx context.Context, servers []raft.Server) map[netip.Addr]bool {
	ips := make(map[netip.Addr]bool, len(servers))
	for _, s := range servers {
		host, _, err := net.SplitHostPort(string(s.Address))
		if err != nil {
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			ips[ip.Unmap()] = true
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		addrs, err := net.DefaultResolver.LookupNetIP(cctx, "ip", host)
		cancel()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ips[a.Unmap()] = true
		}
	}
	return ips
}
