package master

import (
	"net"
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
}

// newRaftLayer returns a StreamLayer over mux. advertise is the address
// other masters dial to reach this one; nil means the listen address.
func newRaftLayer(mux *transport.Mux, advertise net.Addr) *raftLayer {
	ln := mux.Listener(transport.StreamRaft)
	if advertise == nil {
		advertise = ln.Addr()
	}
	return &raftLayer{Listener: ln, mux: mux, advertise: advertise}
}

func (r *raftLayer) Addr() net.Addr { return r.advertise }

// raftIdleTimeout closes an accepted Raft connection that has sent nothing
// for this long. A member sends many heartbeats a second over a connection
// it uses, so one this quiet is a pooled connection nobody needs, or a
// member that stopped; hashicorp/raft sets no deadline of its own on the
// accepting side, so without this such connections would be held forever.
const raftIdleTimeout = 2 * time.Minute

// Accept returns the next Raft connection, with an idle deadline.
func (r *raftLayer) Accept() (net.Conn, error) {
	c, err := r.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &idleConn{Conn: c, idle: raftIdleTimeout}, nil
}

// idleConn fails a Read that waits longer than idle for data.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(b []byte) (int, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	return c.Conn.Read(b)
}

func (r *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return r.mux.DialStream(string(address), transport.StreamRaft, timeout)
}
