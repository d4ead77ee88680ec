package client

import "context"

// The tracker's RPC methods. Announce and Renew pass between masters only
// (a master relays what a BitTorrent client sent it, vouching for the
// client's source address, so they need a master certificate); Policy and
// TrackerList are administration.
const (
	MethodTrackerAnnounce = "Tracker.Announce"
	MethodTrackerRenew    = "Tracker.Renew"
	MethodTrackerPolicy   = "Tracker.Policy"
	MethodTrackerList     = "Tracker.List"
)

// TrackerAnnounceRequest relays a swarm membership change to the leader.
// The fields are those of fsm.Announce but Time, which the leader sets.
type TrackerAnnounceRequest struct {
	InfoHash  [20]byte
	Peer      [20]byte
	IP        [16]byte
	Port      uint16
	Key       uint32
	HasKey    bool
	Event     uint8
	Seeder    bool
	Forwarded bool `codec:",omitempty"`
}

// TrackerRenewRequest relays re-announces that changed nothing: the
// leader renews each listed (swarm, peer) lease. It never enters the log.
type TrackerRenewRequest struct {
	Entries   []SwarmRef
	Forwarded bool `codec:",omitempty"`
}

// SwarmRef names one peer of one swarm.
type SwarmRef struct {
	InfoHash [20]byte
	Peer     [20]byte
}

// TrackerPolicyRequest changes the tracker's replicated policy: the mode
// ("open" or "allowlist"; "" keeps it) and the info-hashes allowed or
// denied (40 hex digits each).
type TrackerPolicyRequest struct {
	Mode      string   `codec:",omitempty"`
	Allow     []string `codec:",omitempty"`
	Deny      []string `codec:",omitempty"`
	RequestID uint64
	Forwarded bool `codec:",omitempty"`
}

// TrackerListRequest asks for the tracker's policy.
type TrackerListRequest struct{ ReadHeader }

// TrackerPolicyReply is the tracker's policy: its mode, and the hashes it
// allows and denies (hex, sorted), with swarm counts.
type TrackerPolicyReply struct {
	Mode   string
	Allow  []string
	Deny   []string
	Swarms int
	Peers  int
	Index  uint64
	LeaderHint
}

// TrackerPolicy changes the tracker's policy (admin credentials) and
// returns it as committed.
func (c *Client) TrackerPolicy(ctx context.Context, req TrackerPolicyRequest) (TrackerPolicyReply, error) {
	var out TrackerPolicyReply
	if req.RequestID == 0 {
		req.RequestID = newRequestID()
	}
	err := c.Call(ctx, MethodTrackerPolicy, &req, &out)
	return out, err
}

// TrackerList returns the tracker's policy at the given read level (admin
// credentials).
func (c *Client) TrackerList(ctx context.Context, level ReadLevel) (TrackerPolicyReply, error) {
	var out TrackerPolicyReply
	err := c.Call(ctx, MethodTrackerList, &TrackerListRequest{ReadHeader{Level: level}}, &out)
	return out, err
}
