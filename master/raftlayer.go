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

func (r *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return r.mux.DialStream(string(address), transport.StreamRaft, timeout)
}
