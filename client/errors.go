package client

import "fileshare/transport"

// Refusals a master sends for peer requests. They are part of the API, so
// peers can tell them apart (errors.Is works across the wire: see
// transport.RemoteError) without linking the master.
var (
	// ErrBadKey means a peer request named no valid Ed25519 public key.
	ErrBadKey = transport.NewError("bad_key", "a peer request must carry the peer's 32-byte Ed25519 public key")
	// ErrNotYourPeerID means a request named a peer ID that is not derived
	// from its key, or a key other than the one its caller proved.
	ErrNotYourPeerID = transport.NewError("not_your_peer_id", "the peer ID is not the one derived from the caller's key; a peer can act only as itself")
	// ErrQuota means a request would take its caller past a quota.
	ErrQuota = transport.NewError("quota", "quota exceeded")
)
