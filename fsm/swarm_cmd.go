package fsm

import (
	"encoding/hex"
	"fmt"
	"net/netip"
)

// BitTorrent swarm vocabulary. These types mirror package tracker's (fsm
// must not import it); the master converts between them.

// InfoHash is a torrent's 20-byte info-hash. The zero hash is invalid.
type InfoHash [20]byte

// String returns the hash as 40 lowercase hex digits.
func (h InfoHash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h is the zero (invalid) hash.
func (h InfoHash) IsZero() bool { return h == InfoHash{} }

// SwarmPeerID is the 20-byte peer_id a BitTorrent client picks for itself.
// The zero ID is invalid.
type SwarmPeerID [20]byte

// String returns the ID as 40 lowercase hex digits (peer IDs are often
// not printable).
func (p SwarmPeerID) String() string { return hex.EncodeToString(p[:]) }

// IsZero reports whether p is the zero (invalid) ID.
func (p SwarmPeerID) IsZero() bool { return p == SwarmPeerID{} }

// SwarmEvent is what an Announce does to its swarm record. The values
// follow BEP 15 where they exist; BEP 15's "started" (2) is not one: a
// started announce is a SwarmUpdate.
type SwarmEvent uint8

// The swarm events.
const (
	// SwarmUpdate creates or updates the record (a started announce, or a
	// regular one that changes something the swarm remembers).
	SwarmUpdate SwarmEvent = 0
	// SwarmCompleted is SwarmUpdate for a peer that finished downloading:
	// the record becomes a seeder, and the swarm's downloaded count grows
	// by one unless the peer already was a seeder.
	SwarmCompleted SwarmEvent = 1
	// SwarmStopped removes the record.
	SwarmStopped SwarmEvent = 3
)

// TrackerMode says which info-hashes the tracker accepts.
type TrackerMode uint8

// The tracker modes.
const (
	// TrackerOpen tracks every hash that is not denied.
	TrackerOpen TrackerMode = 0
	// TrackerAllowlist tracks only allowed hashes.
	TrackerAllowlist TrackerMode = 1
)

// String returns "open" or "allowlist", or "TrackerMode(n)".
func (m TrackerMode) String() string {
	switch m {
	case TrackerOpen:
		return "open"
	case TrackerAllowlist:
		return "allowlist"
	}
	return fmt.Sprintf("TrackerMode(%d)", uint8(m))
}

// Swarm command limits.
const (
	// MaxSwarmRefsPerExpire bounds ExpireSwarmPeers.Entries.
	MaxSwarmRefsPerExpire = 10000
	// MaxPolicyHashes bounds TrackerPolicy.Allow and TrackerPolicy.Deny,
	// each.
	MaxPolicyHashes = 10000
)

// Announce enters, updates or leaves one (InfoHash, Peer) swarm record. The
// leader proposes it only for a membership change (a new record, a stopped
// or completed event, a new address, port or seeder state); a re-announce
// that changes nothing only renews the soft lease (TouchSwarmPeer).
//
// Apply rules, in order:
//   - the hash must be tracked by the policy (TrackerAllowed), else
//     ErrNotTracked;
//   - a record present with a different IP is changed or removed only if the
//     announce proves it is the same client: HasKey, the record has a key,
//     and the keys are equal; else ErrUnauthorized;
//   - SwarmStopped removes the record (an absent record is not an error);
//   - SwarmUpdate and SwarmCompleted insert or update IP, Port and Seeder
//     (SwarmCompleted implies Seeder). The key is stored on insert, or
//     later by the first announce that carries one; it never changes after
//     that. SwarmCompleted adds one to the swarm's downloaded count if the
//     record was absent or not yet a seeder, so a retried completed event
//     counts once.
//
// Every applied announce stores Time as the record's changed time, which
// ExpireSwarmPeers compares against.
type Announce struct {
	InfoHash InfoHash
	Peer     SwarmPeerID
	// IP is the address other peers dial: IPv4 as v4-mapped IPv6
	// (::ffff:a.b.c.d). It must not be unspecified or multicast.
	IP [16]byte
	// Port is 1..65535; it may be 0 only for SwarmStopped.
	Port uint16
	// Key is the client's key parameter reduced to 32 bits; HasKey says
	// whether it sent one. A Key without HasKey must be 0.
	Key    uint32
	HasKey bool
	Event  SwarmEvent
	// Seeder is set when the client reported left == 0.
	Seeder bool
	// Time is the leader's clock when it proposed the command, in Unix
	// nanoseconds.
	Time int64
}

// SwarmRef names one swarm record.
type SwarmRef struct {
	InfoHash InfoHash
	Peer     SwarmPeerID
}

// ExpireSwarmPeers is proposed by the leader for swarm records whose soft
// lease ran out (see SilentSwarmPeers). Each listed record is removed unless
// it is absent or its changed time is later than Time (an announce was
// applied after the leader decided). Response.ExpiredSwarmPeers counts the
// records removed. A swarm left without records keeps existing only if its
// downloaded count is not zero.
type ExpireSwarmPeers struct {
	Entries []SwarmRef // at most MaxSwarmRefsPerExpire; order and repeats do not matter
	// Time is the leader's clock when it decided, in Unix nanoseconds.
	Time int64
}

// TrackerPolicy changes which info-hashes the tracker accepts. It has set
// semantics and is applied in this order: each Allow hash joins the allow
// set and leaves the deny set; each Deny hash joins the deny set, leaves the
// allow set, and its swarm is dropped with its records and downloaded
// count; then, if SetMode, the mode becomes Mode. In TrackerAllowlist mode
// every swarm whose hash is not allowed is dropped (a switch to allowlist
// mode costs one pass over all swarms). The policy keeps a dedup window of
// DedupWindow RequestIDs like a peer's: a retry is a Duplicate and changes
// nothing.
type TrackerPolicy struct {
	SetMode bool
	Mode    TrackerMode // TrackerOpen or TrackerAllowlist, even when !SetMode
	Allow   []InfoHash  // at most MaxPolicyHashes
	Deny    []InfoHash  // at most MaxPolicyHashes, none also in Allow
	// RequestID identifies the admin request for deduplication; non-zero.
	RequestID uint64
}

// Type implements Command.
func (Announce) Type() CommandType { return CmdAnnounce }

// Type implements Command.
func (ExpireSwarmPeers) Type() CommandType { return CmdExpireSwarmPeers }

// Type implements Command.
func (TrackerPolicy) Type() CommandType { return CmdTrackerPolicy }

func (Announce) isCommand()         {}
func (ExpireSwarmPeers) isCommand() {}
func (TrackerPolicy) isCommand()    {}

// validSwarmIP reports whether ip may be stored in a swarm record: not
// unspecified and not multicast, in either family. (Excluding ff00::/8 also
// keeps the per-IP counting key of IPv4 addresses apart from every IPv6
// /64 prefix; see ipKeyOf.)
func validSwarmIP(ip [16]byte) error {
	a := netip.AddrFrom16(ip).Unmap()
	if a.IsUnspecified() || a.IsMulticast() {
		return fmt.Errorf("%w: swarm peer address %v is unspecified or multicast", ErrInvalid, a)
	}
	return nil
}

// Validate implements Command.
func (c Announce) Validate() error {
	if c.InfoHash.IsZero() {
		return fmt.Errorf("%w: announce with a zero info-hash", ErrInvalid)
	}
	if c.Peer.IsZero() {
		return fmt.Errorf("%w: announce for %s with a zero peer id", ErrInvalid, c.InfoHash)
	}
	if err := validSwarmIP(c.IP); err != nil {
		return err
	}
	switch c.Event {
	case SwarmUpdate, SwarmCompleted:
		if c.Port == 0 {
			return fmt.Errorf("%w: announce for %s from peer %s with port 0", ErrInvalid, c.InfoHash, c.Peer)
		}
	case SwarmStopped:
	default:
		return fmt.Errorf("%w: announce event %d (want 0 update, 1 completed or 3 stopped)", ErrInvalid, c.Event)
	}
	if !c.HasKey && c.Key != 0 {
		return fmt.Errorf("%w: announce key %d without HasKey", ErrInvalid, c.Key)
	}
	return nil
}

// Validate implements Command.
func (c ExpireSwarmPeers) Validate() error {
	if len(c.Entries) > MaxSwarmRefsPerExpire {
		return fmt.Errorf("%w: %d swarm records, limit %d", ErrInvalid, len(c.Entries), MaxSwarmRefsPerExpire)
	}
	for _, e := range c.Entries {
		if e.InfoHash.IsZero() || e.Peer.IsZero() {
			return fmt.Errorf("%w: swarm record with a zero info-hash or peer id", ErrInvalid)
		}
	}
	return nil
}

// Validate implements Command.
func (c TrackerPolicy) Validate() error {
	if c.RequestID == 0 {
		return fmt.Errorf("%w: tracker policy: zero request id", ErrInvalid)
	}
	if c.Mode != TrackerOpen && c.Mode != TrackerAllowlist {
		return fmt.Errorf("%w: tracker mode %d (want 0 open or 1 allowlist)", ErrInvalid, c.Mode)
	}
	if len(c.Allow) > MaxPolicyHashes || len(c.Deny) > MaxPolicyHashes {
		return fmt.Errorf("%w: tracker policy lists %d allowed and %d denied hashes, limit %d each",
			ErrInvalid, len(c.Allow), len(c.Deny), MaxPolicyHashes)
	}
	allow := make(map[InfoHash]struct{}, len(c.Allow))
	for _, h := range c.Allow {
		if h.IsZero() {
			return fmt.Errorf("%w: tracker policy allows the zero info-hash", ErrInvalid)
		}
		allow[h] = struct{}{}
	}
	for _, h := range c.Deny {
		if h.IsZero() {
			return fmt.Errorf("%w: tracker policy denies the zero info-hash", ErrInvalid)
		}
		if _, both := allow[h]; both {
			return fmt.Errorf("%w: tracker policy both allows and denies %s", ErrInvalid, h)
		}
	}
	return nil
}

// EncodeAnnounce is Encode for an Announce.
func EncodeAnnounce(c Announce) ([]byte, error) { return Encode(c) }

// EncodeExpireSwarmPeers is Encode for an ExpireSwarmPeers.
func EncodeExpireSwarmPeers(c ExpireSwarmPeers) ([]byte, error) { return Encode(c) }

// EncodeTrackerPolicy is Encode for a TrackerPolicy.
func EncodeTrackerPolicy(c TrackerPolicy) ([]byte, error) { return Encode(c) }
