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
	// TrackerPrivate tracks only allowed hashes, and only for announces
	// that carry a member's passkey (PrivateAnnounceBatch), crediting
	// the members' books.
	TrackerPrivate TrackerMode = 2
)

// String returns "open" or "allowlist", or "TrackerMode(n)".
func (m TrackerMode) String() string {
	switch m {
	case TrackerOpen:
		return "open"
	case TrackerAllowlist:
		return "allowlist"
	case TrackerPrivate:
		return "private"
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

// Swarm errors. Like the sentinels in errors.go they keep their identity
// across RPC (Code).
var (
	// ErrTrackerFull means an announce would create a swarm entry or a
	// swarm beyond the limits its AnnounceBatch carries. Nothing changed;
	// retrying later may succeed.
	ErrTrackerFull = newError("tracker_full", "the tracker is full")
	// ErrSwarmQuota means an announce would give its address, or the IPv6
	// network holding it, more swarm entries than its AnnounceBatch
	// allows. Nothing changed.
	ErrSwarmQuota = newError("swarm_quota", "too many swarm entries from one address")
)

// Announce enters, updates or leaves one (InfoHash, Peer, IP) swarm record. The
// leader proposes it only for a membership change (a new record, a stopped
// or completed event, a new address, port or seeder state); a re-announce
// that changes nothing only renews the soft lease (TouchSwarmPeer).
//
// A peer_id is whatever the client picked, and anyone who saw it can send
// it, so it is not a lock: a record is named by the peer_id together with
// the address, and only the holder of that address, or a client that
// proves with its key to be the one that made the record, changes or
// removes it. The same peer_id from another address without that key is
// another record.
//
// Apply rules, in order:
//   - the hash must be tracked by the policy (TrackerAllowed), else
//     ErrNotTracked;
//   - the announce is about the record of (Peer, IP), or, if there is none
//     and the announce carries a key, the first record of Peer holding the
//     same key (the client moved; the record takes the new IP);
//   - SwarmStopped removes that record (none is not an error);
//   - SwarmUpdate and SwarmCompleted insert or update it: IP, Port and
//     Seeder (SwarmCompleted implies Seeder). The key is stored on insert,
//     or later by the first announce that carries one; it never changes
//     after that. SwarmCompleted adds one to the swarm's downloaded count
//     only for a record that existed as a leecher and has not counted a
//     completion before, so a retried completed event counts once and a
//     record counts at most one completion in its lifetime.
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
	// IP is the record's address. Zero (in entries proposed before
	// records were keyed by address) names the peer's first record.
	IP [16]byte
}

// ExpireSwarmPeers is proposed by the leader for swarm records whose soft
// lease ran out (see SilentSwarmPeers) and for swarms that stayed empty too
// long (see EmptySwarms). Each listed record is removed unless it is absent
// or its changed time is later than Time (an announce was applied after the
// leader decided). A swarm left without records keeps existing only if its
// downloaded count is not zero; it then remembers Time as when it emptied.
// Each listed swarm is dropped if it has no records and emptied at or
// before Time. Response.ExpiredSwarmPeers counts the records and swarms
// removed.
type ExpireSwarmPeers struct {
	Entries []SwarmRef // at most MaxSwarmRefsPerExpire; order and repeats do not matter
	// Time is the leader's clock when it decided, in Unix nanoseconds.
	Time   int64
	Swarms []InfoHash // at most MaxSwarmRefsPerExpire
}

// SwarmLimits bound what an AnnounceBatch may create; zero means no limit.
// They travel in the command, so every replica enforces exactly the limits
// the leader checked, and concurrent announces never overshoot them.
type SwarmLimits struct {
	MaxPeers  uint32 // swarm entries in the index
	MaxSwarms uint32 // swarms in the index
	PerAddr   uint32 // entries (and empty swarms) per IPv4 address or IPv6 /128
	Per64     uint32 // per IPv6 /64
	Per48     uint32 // per IPv6 /48
}

// MaxAnnouncesPerBatch bounds AnnounceBatch.Announces: 2,048 announces
// encode in about 130 KiB.
const MaxAnnouncesPerBatch = 2048

// AnnounceBatch carries the membership changes the leader collected from
// many announces; it is applied as that many Announces in order, each with
// the batch's Time and each creating or moving a record only within Limits
// (else ErrTrackerFull or ErrSwarmQuota for that announce alone).
// Response.Results holds one Response per announce. Its encoding is
// hand-written (no reflection); see EncodeAnnounceBatch.
type AnnounceBatch struct {
	Time      int64
	Limits    SwarmLimits
	Announces []Announce // at most MaxAnnouncesPerBatch; each Time must be 0
}

// ConnIDSecretSize is the size of a UDP connection-ID secret.
const ConnIDSecretSize = 32

// SetConnIDSecret adds a cluster-wide secret for UDP tracker connection
// IDs (BEP 15), so that an ID issued by one master is valid on every master
// and across restarts. The leader proposes one with random bytes when
// there are fewer than two, and again to rotate; the FSM keeps the newest
// three (see FSM.ConnIDSecrets for which one signs). It applies only if
// After equals the Time of the newest secret (0 if none), so a stale or
// repeated proposal changes nothing (Response.Duplicate).
type SetConnIDSecret struct {
	Secret []byte // ConnIDSecretSize bytes
	After  int64
	// Time is the leader's clock when it proposed, in Unix nanoseconds;
	// it becomes the secret's time. It must exceed After.
	Time int64
}

// TrackerPolicy changes which info-hashes the tracker accepts. It has set
// semantics and is applied in this order: each Allow hash joins the allow
// set and leaves the deny set; each Deny hash joins the deny set, leaves the
// allow set, and its swarm is dropped with its records and downloaded
// count; then, if SetMode, the mode becomes Mode. In TrackerAllowlist and
// TrackerPrivate mode
// every swarm whose hash is not allowed is dropped (a switch to allowlist
// mode costs one pass over all swarms). The policy keeps a dedup window of
// DedupWindow RequestIDs like a peer's: a retry is a Duplicate and changes
// nothing.
type TrackerPolicy struct {
	SetMode bool
	Mode    TrackerMode // TrackerOpen, TrackerAllowlist or TrackerPrivate, even when !SetMode
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

// Type implements Command.
func (SetConnIDSecret) Type() CommandType { return CmdSetConnIDSecret }

// Type implements Command.
func (AnnounceBatch) Type() CommandType { return CmdAnnounceBatch }

func (Announce) isCommand()         {}
func (ExpireSwarmPeers) isCommand() {}
func (TrackerPolicy) isCommand()    {}
func (SetConnIDSecret) isCommand()  {}
func (AnnounceBatch) isCommand()    {}

// validSwarmIP reports whether ip may be stored in a swarm record: not
// unspecified and not multicast, in either family. (Excluding ff00::/8 also
// keeps the counting keys of networks apart from every IPv6 address; see
// ipKeysOf.)
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
	if len(c.Swarms) > MaxSwarmRefsPerExpire {
		return fmt.Errorf("%w: %d swarms, limit %d", ErrInvalid, len(c.Swarms), MaxSwarmRefsPerExpire)
	}
	for _, ih := range c.Swarms {
		if ih.IsZero() {
			return fmt.Errorf("%w: swarm expiry names the zero info-hash", ErrInvalid)
		}
	}
	return nil
}

// Validate implements Command.
func (c AnnounceBatch) Validate() error {
	if len(c.Announces) > MaxAnnouncesPerBatch {
		return fmt.Errorf("%w: %d announces in one batch, limit %d", ErrInvalid, len(c.Announces), MaxAnnouncesPerBatch)
	}
	for i, a := range c.Announces {
		if a.Time != 0 {
			return fmt.Errorf("%w: announce %d of a batch carries its own time", ErrInvalid, i)
		}
		if err := a.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Validate implements Command.
func (c SetConnIDSecret) Validate() error {
	if len(c.Secret) != ConnIDSecretSize {
		return fmt.Errorf("%w: connection-ID secret of %d bytes, want %d", ErrInvalid, len(c.Secret), ConnIDSecretSize)
	}
	if c.Time <= c.After {
		return fmt.Errorf("%w: connection-ID secret time %d not after %d", ErrInvalid, c.Time, c.After)
	}
	return nil
}

// Validate implements Command.
func (c TrackerPolicy) Validate() error {
	if c.RequestID == 0 {
		return fmt.Errorf("%w: tracker policy: zero request id", ErrInvalid)
	}
	if c.Mode > TrackerPrivate {
		return fmt.Errorf("%w: tracker mode %d (want 0 open, 1 allowlist or 2 private)", ErrInvalid, c.Mode)
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

// EncodeSetConnIDSecret is Encode for a SetConnIDSecret.
func EncodeSetConnIDSecret(c SetConnIDSecret) ([]byte, error) { return Encode(c) }
