package client

import (
	"context"
	"time"

	"fileshare/transport"
)

// The rendezvous API: how peers behind NATs reach each other through the
// masters. Any master serves it, from its own memory (soft state: nothing
// here enters the Raft log), so it works while there is no leader.
//
//   - Observe tells a peer the address its connection comes from, and
//     whether the master could dial it back there (reachability, as
//     libp2p's AutoNAT).
//   - Wait is the push channel: a peer keeps one Wait call open to some
//     master at all times; the call returns as soon as a rendezvous
//     message for the peer arrives, or after WaitHold with none.
//   - Connect asks the cluster to pass one message to another peer,
//     wherever its push channel is: the receiving master delivers it
//     itself or forwards it to the other masters over the cluster's
//     mutual TLS.
const (
	MethodObserve = "Rendezvous.Observe"
	MethodWait    = "Rendezvous.Wait"
	MethodConnect = "Rendezvous.Connect"
	// MethodDeliver passes a Connect from one master to another; only a
	// member of the cluster may call it.
	MethodDeliver = "Rendezvous.Deliver"
	// MethodRelays lists the relays the masters know.
	MethodRelays = "Rendezvous.Relays"
)

// WaitHold is how long a master holds a Wait call with nothing to
// deliver. It is below the client's default attempt timeout so that a
// held call is never mistaken for a dead master.
const WaitHold = 3 * time.Second

// Connection kinds of a rendezvous message.
const (
	// ConnReverse asks the holder to dial the downloader at Addr
	// (connection reversal): the downloader is reachable, the holder is
	// not.
	ConnReverse = "reverse"
	// ConnPunch asks the holder to send QUIC towards the downloader's
	// UDP address Addr at time At while the downloader does the same
	// towards the holder's (hole punching).
	ConnPunch = "punch"
	// ConnRelay asks the holder to connect to the relay at Addr and
	// present Token there (circuit relay).
	ConnRelay = "relay"
)

// Limits on what a rendezvous message may carry.
const (
	MaxRendezvousAddr = 300 // bytes of an address
	RendezvousToken   = 16  // bytes of a token
)

// ObserveRequest asks a master what it sees of the caller. If ProbePort
// is not 0 the master also dials the caller's observed IP at that port
// (and never any other IP) and checks that the peer with Key answers
// there.
type ObserveRequest struct {
	PeerID    string
	Key       []byte
	ProbePort int `codec:",omitempty"`
}

// ObserveReply says what a master sees of the caller.
type ObserveReply struct {
	// Observed is the caller's address as the master sees it (ip:port).
	Observed string
	// Reachable is true if the dial-back reached the peer.
	Reachable bool `codec:",omitempty"`
	// ProbeError says why the dial-back failed, if it was asked for.
	ProbeError string `codec:",omitempty"`
}

// PeerNAT is what a peer says of its own reachability in each Wait call,
// and what the masters hand to a peer that wants to reach it.
type PeerNAT struct {
	// Reachable is true if a master reached the peer's listener from
	// outside (Observe).
	Reachable bool `codec:",omitempty"`
	// Addr is the address others should dial for a direct connection.
	Addr string `codec:",omitempty"`
	// UDP is the peer's UDP address as a master observed it, for hole
	// punching; empty if it has none.
	UDP string `codec:",omitempty"`
	// Relay is true if the peer offers to relay for others.
	Relay bool `codec:",omitempty"`
}

// WaitRequest opens (renews) the caller's push channel on a master.
type WaitRequest struct {
	PeerID string
	Key    []byte
	NAT    PeerNAT
}

// WaitReply carries the messages that arrived for the caller.
type WaitReply struct {
	Messages []RendezvousMessage `codec:",omitempty"`
}

// RendezvousMessage is a request, from peer From, to connect.
type RendezvousMessage struct {
	From string // the asking peer's ID; the holder checks its key on the connection
	Kind string // ConnReverse, ConnPunch or ConnRelay
	Addr string // where to connect
	// Token identifies the connection to the asking peer (reversal) or
	// the circuit to the relay (relay).
	Token []byte `codec:",omitempty"`
	// At is when to start sending, in Unix milliseconds (punching).
	At int64 `codec:",omitempty"`
	// Relay is the peer ID of the relay at Addr, whose key the holder
	// checks; empty for a master's relay, checked against the cluster
	// CA (relay).
	Relay string `codec:",omitempty"`
}

// RelayInfo is a relay: a reachable peer that opted in, or a master with
// a relay budget.
type RelayInfo struct {
	Addr   string
	PeerID string `codec:",omitempty"` // empty for a master
}

// RelaysRequest asks for the relays the masters know.
type RelaysRequest struct {
	Forwarded bool `codec:",omitempty"`
}

// RelaysReply lists relays, at most MaxRelays.
type RelaysReply struct {
	Relays []RelayInfo `codec:",omitempty"`
}

// MaxRelays caps a RelaysReply.
const MaxRelays = 16

// ConnectRequest asks the cluster to pass Message to peer Target. The
// caller proves it is Message.From with its key.
type ConnectRequest struct {
	PeerID  string
	Key     []byte
	Target  string
	Message RendezvousMessage
	// Forwarded is set by a master passing the request on (Deliver).
	Forwarded bool `codec:",omitempty"`
}

// ConnectReply says the message reached the target's push channel, and
// what the target last said of itself.
type ConnectReply struct {
	Delivered bool
	Target    PeerNAT
}

// Observe asks a master what it sees of this peer, and, if probePort is
// not 0, whether it can dial the peer back there.
func (c *Client) Observe(ctx context.Context, id Identity, probePort int) (ObserveReply, error) {
	var out ObserveReply
	err := c.Call(ctx, MethodObserve, &ObserveRequest{PeerID: id.PeerID, Key: id.Public(), ProbePort: probePort}, &out)
	return out, err
}

// Wait holds this peer's push channel open on some master until a
// message arrives or the master's hold time passes, and returns what
// arrived. nat is what the peer says of itself. The caller loops.
func (c *Client) Wait(ctx context.Context, id Identity, nat PeerNAT) ([]RendezvousMessage, error) {
	var out WaitReply
	err := c.call(ctx, c.cfg.AttemptTimeout+WaitHold, MethodWait, &WaitRequest{PeerID: id.PeerID, Key: id.Public(), NAT: nat}, &out)
	return out.Messages, err
}

// Connect passes msg to peer target through the masters. msg.From is
// set to this peer.
func (c *Client) Connect(ctx context.Context, id Identity, target string, msg RendezvousMessage) (ConnectReply, error) {
	msg.From = id.PeerID
	var out ConnectReply
	err := c.Call(ctx, MethodConnect, &ConnectRequest{PeerID: id.PeerID, Key: id.Public(), Target: target, Message: msg}, &out)
	return out, err
}

// Relays lists the relays the masters know, relay peers first.
func (c *Client) Relays(ctx context.Context) ([]RelayInfo, error) {
	var out RelaysReply
	err := c.Call(ctx, MethodRelays, &RelaysRequest{}, &out)
	return out.Relays, err
}

// ErrNoChannel means the target of a Connect keeps no push channel open
// to any master the request reached: it is offline, or between masters
// after a failover (retry in a few seconds).
var ErrNoChannel = transport.NewError("no_rendezvous_channel", "the peer keeps no rendezvous channel open to the masters; it is offline or reconnecting")
