package client

import (
	"context"

	"fileshare/transport/wire"
)

// The tracker's RPC methods. Announce and Renew pass between masters only
// (a master relays what a BitTorrent client sent it, vouching for the
// client's source address, so they need a master certificate); Policy and
// TrackerList are administration.
const (
	MethodTrackerAnnounce      = "Tracker.Announce"
	MethodTrackerAnnounceBatch = "Tracker.AnnounceBatch"
	MethodTrackerRenew         = "Tracker.Renew"
	MethodTrackerPolicy        = "Tracker.Policy"
	MethodTrackerList          = "Tracker.List"
)

// MaxRelayedAnnounces bounds TrackerAnnounceBatchRequest.Announces (about
// 150 KB on the wire).
const MaxRelayedAnnounces = 1024

// TrackerAnnounceBatchRequest relays many membership changes to the leader
// in one call; the reply has one result per announce, in order, each sent
// once its change committed (or failed).
type TrackerAnnounceBatchRequest struct {
	Announces []TrackerAnnounceRequest
	Forwarded bool `codec:",omitempty"`
}

// TrackerAnnounceBatchReply answers a TrackerAnnounceBatchRequest.
type TrackerAnnounceBatchReply struct {
	Results []TrackerAnnounceResult
	LeaderHint
}

// TrackerAnnounceResult is the outcome of one relayed announce: the log
// index it committed at (0 if it changed nothing), or an error as its wire
// code and message (transport.RemoteError rebuilds it, so errors.Is still
// matches the sentinel).
type TrackerAnnounceResult struct {
	Index   uint64
	Code    string `codec:",omitempty"`
	Message string `codec:",omitempty"`
}

// TrackerAnnounceRequest relays a swarm membership change to the leader.
// The fields are those of fsm.Announce but Time, which the leader sets.
type TrackerAnnounceRequest struct {
	InfoHash [20]byte
	Peer     [20]byte
	IP       [16]byte
	Port     uint16
	Key      uint32
	HasKey   bool
	Event    uint8
	Seeder   bool
	// Priv is set for an announce to a private tracker: the passkey (16
	// bytes), then the uploaded and downloaded counters and the time the
	// relaying master heard it (Unix nanoseconds), 8 bytes big-endian
	// each (PrivReport). A follower also passes re-announces this way, in
	// TrackerRenewRequest.Credits, with Event 4 (credit only).
	Priv      []byte `codec:",omitempty"`
	Forwarded bool   `codec:",omitempty"`
}

// PrivReportSize is the size of TrackerAnnounceRequest.Priv.
const PrivReportSize = 16 + 8 + 8 + 8

// TrackerRenewRequest relays re-announces that changed nothing: the
// leader renews each listed (swarm, peer) lease. It never enters the log.
type TrackerRenewRequest struct {
	// Credits are re-announces to a private tracker: the counters the
	// leader credits in its next accounting entry (the newest report per
	// record wins).
	Credits   []TrackerAnnounceRequest `codec:",omitempty"`
	Entries   []SwarmRef
	Forwarded bool `codec:",omitempty"`
}

// SwarmRef names one peer of one swarm at one address. A zero IP (from a
// master that predates addressed records) names every record of the peer.
type SwarmRef struct {
	InfoHash [20]byte
	Peer     [20]byte
	IP       [16]byte
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

// The relayed announce batch is the tracker's hottest RPC; its codecs
// follow the rules of wire.go.

// AppendWire implements wire.Encoder.
func (m *TrackerAnnounceBatchRequest) AppendWire(b []byte) []byte {
	return wire.AppendStruct(b, m, (*TrackerAnnounceBatchRequest).wireFields)
}

// DecodeWire implements wire.Decoder.
func (m *TrackerAnnounceBatchRequest) DecodeWire(b []byte) error {
	return wire.DecodeStruct(b, m, (*TrackerAnnounceBatchRequest).wireFields)
}

func (m *TrackerAnnounceBatchRequest) wireFields(f wire.Fields) wire.Fields {
	wire.List(&f, "Announces", &m.Announces, minEntryBytes, (*TrackerAnnounceRequest).wireFields)
	f.OmitBool("Forwarded", &m.Forwarded)
	return f
}

// AppendWire implements wire.Encoder.
func (m *TrackerAnnounceBatchReply) AppendWire(b []byte) []byte {
	return wire.AppendStruct(b, m, (*TrackerAnnounceBatchReply).wireFields)
}

// DecodeWire implements wire.Decoder.
func (m *TrackerAnnounceBatchReply) DecodeWire(b []byte) error {
	return wire.DecodeStruct(b, m, (*TrackerAnnounceBatchReply).wireFields)
}

func (m *TrackerAnnounceBatchReply) wireFields(f wire.Fields) wire.Fields {
	f.OmitString("Leader", &m.Leader)
	wire.List(&f, "Results", &m.Results, minResultBytes, (*TrackerAnnounceResult).wireFields)
	return f
}

func (m *TrackerAnnounceResult) wireFields(f wire.Fields) wire.Fields {
	f.OmitString("Code", &m.Code)
	f.Uint64("Index", &m.Index)
	f.OmitString("Message", &m.Message)
	return f
}

// minResultBytes is less than any TrackerAnnounceResult's encoding (a map
// header, "Index" and a value), for wire.Reader.ArrayHeader.
const minResultBytes = 7
