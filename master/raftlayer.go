package master

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/transport"
)

// raftLayer is raft's StreamLayer over the mux's Raft stream: transport
// stays free of raft, and raft dials and accepts through the one cluster
// port like every other kind of traffic.
type raftLayer struct {
	net.Listener
	mux       *transport.Mux
	advertise net.Addr
	// check, if set, vets the header (ID, Addr) of every RPC read from an
	// accepted stream against the caller its certificate proved (see
	// raftcheck.go). Plaintext streams carry no identity to check.
	check func(c transport.Caller, id, addr string) error

	mu       sync.Mutex
	accepted map[*idleConn]struct{} // open accepted streams, for quiesce
}

// newRaftLayer returns a StreamLayer over mux. advertise is the address
// other masters dial to reach this one; nil means the listen address.
// check may be nil.
func newRaftLayer(mux *transport.Mux, advertise net.Addr, check func(c transport.Caller, id, addr string) error) *raftLayer {
	ln := mux.Listener(transport.StreamRaft)
	if advertise == nil {
		advertise = ln.Addr()
	}
	return &raftLayer{Listener: ln, mux: mux, advertise: advertise, check: check}
}

func (r *raftLayer) Addr() net.Addr { return r.advertise }

// raftIdleTimeout closes an accepted Raft connection that has sent nothing
// for this long. A member sends many heartbeats a second over a connection
// it uses, so one this quiet is a pooled connection nobody needs, or a
// member that stopped; hashicorp/raft sets no deadline of its own on the
// accepting side, so without this such connections would be held forever.
const raftIdleTimeout = 2 * time.Minute

// Accept returns the next Raft connection, with an idle deadline, and
// tied to the identity of its certificate.
func (r *raftLayer) Accept() (net.Conn, error) {
	c, err := r.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if caller := transport.CallerOf(c); r.check != nil && !caller.Insecure {
		c = &raftStream{Conn: c, p: newRPCReader(func(id, addr string) error { return r.check(caller, id, addr) })}
	}
	ic := &idleConn{Conn: c, idle: raftIdleTimeout, layer: r}
	r.mu.Lock()
	if r.accepted == nil {
		r.accepted = map[*idleConn]struct{}{}
	}
	r.accepted[ic] = struct{}{}
	r.mu.Unlock()
	return ic, nil
}

// quiesce closes every accepted stream and waits, up to limit, until no
// raft handler is still working on an RPC it read from one. raft answers a
// heartbeat on the transport's own goroutine, which raft.Shutdown does not
// wait for, and a heartbeat from a newer term writes the stable store: the
// store may be closed only once those handlers are done, or raft panics
// ("failed to save current term: database not open"). A handler is busy
// from a Read that returned data until its next Read, since raft reads
// every RPC, handles it, answers and then reads again.
func (r *raftLayer) quiesce(limit time.Duration) {
	r.mu.Lock()
	conns := make([]*idleConn, 0, len(r.accepted))
	for c := range r.accepted {
		conns = append(conns, c)
	}
	r.mu.Unlock()
	for _, c := range conns {
		_ = c.Conn.Close()
	}
	deadline := time.Now().Add(limit)
	for _, c := range conns {
		for c.busy.Load() && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
	}
}

// checkRaftHeader is the raftLayer's check: an RPC on a stream opened with
// master X's certificate must name X, at X's address in the
// configuration (when this master knows one).
func (m *Master) checkRaftHeader(c transport.Caller, id, addr string) error {
	if id != c.Name {
		m.logger.Warn("closing raft stream: an rpc claims another master's identity", "remote", c.Addr, "certificate", c.Name, "claimed_id", id)
		return fmt.Errorf("%w: the stream is master %q's, the rpc claims to come from %q", errRaftHeader, c.Name, id)
	}
	if want, ok := m.gate.memberAddr(id); ok && addr != want {
		m.logger.Warn("closing raft stream: an rpc claims another address", "remote", c.Addr, "certificate", c.Name, "claimed_addr", addr, "member_addr", want)
		return fmt.Errorf("%w: master %q is a member at %s, the rpc claims %q", errRaftHeader, id, want, addr)
	}
	return nil
}

// idleConn fails a Read that waits longer than idle for data, and tells
// its layer whether raft is working on what it read (see quiesce).
type idleConn struct {
	net.Conn
	idle  time.Duration
	layer *raftLayer
	busy  atomic.Bool // a Read returned data; raft has not read again
}

func (c *idleConn) Read(b []byte) (int, error) {
	c.busy.Store(false)
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.busy.Store(true)
	}
	return n, err
}

func (c *idleConn) Close() error {
	c.layer.mu.Lock()
	delete(c.layer.accepted, c)
	c.layer.mu.Unlock()
	c.busy.Store(false)
	return c.Conn.Close()
}

func (r *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return r.mux.DialStream(string(address), transport.StreamRaft, timeout)
}
