package tracker

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// InfoHash is a torrent's 20-byte info-hash: the SHA-1 of a v1 info
// dictionary, or the SHA-256 of a v2 one truncated to 20 bytes (a hybrid
// torrent is announced under both, as two swarms).
type InfoHash [20]byte

// PeerID is the 20-byte peer_id a client picks for itself.
type PeerID [20]byte

// Event is an announce's event. The values are BEP 15's.
type Event uint8

// The announce events.
const (
	EventNone      Event = 0
	EventCompleted Event = 1
	EventStarted   Event = 2
	EventStopped   Event = 3
)

// AnnounceRequest is one announce, parsed and checked by a front-end.
type AnnounceRequest struct {
	InfoHash InfoHash
	PeerID   PeerID
	// Addr is the address other peers dial: the request's source IP (the
	// ip parameter is ignored) and the announced port.
	Addr       netip.AddrPort
	Uploaded   uint64
	Downloaded uint64
	Left       uint64
	Event      Event
	// NumWant is how many peers the client asked for, already capped by
	// the front-end; 0 means none (a stopped event, or numwant=0).
	NumWant int
	// Key is the client's key parameter reduced to 32 bits; HasKey says
	// whether the client sent one. It lets a client prove that an
	// announce from a new address is still the same peer.
	Key    uint32
	HasKey bool
	// Passkey is the member's key from the announce URL (HTTP path, or
	// BEP 41 URL data over UDP), if PasskeyStatus is PasskeyOK. Only a
	// private tracker's backend looks at it.
	Passkey       Passkey
	PasskeyStatus PasskeyStatus
}

// Peer is one entry of a peer list.
type Peer struct {
	ID   PeerID
	Addr netip.AddrPort
}

// AnnounceReply is what the backend answers; the front-end adds the
// interval and encodes it.
type AnnounceReply struct {
	Complete   int // seeders in the swarm
	Incomplete int // leechers in the swarm
	// Peers holds at most NumWant peers, never the requester, seeders
	// given leechers first. Its address family is mixed; the HTTP
	// front-end splits it into peers and peers6, the UDP one keeps the
	// packet's family.
	Peers []Peer
}

// ScrapeEntry is one swarm's counts. An unknown swarm is all zeros.
type ScrapeEntry struct {
	Complete   int
	Incomplete int
	Downloaded int // completed events ever counted, persisted
}

// Backend is what a front-end needs from the index. master implements it;
// a test can implement it in memory. Both methods are called concurrently.
// A front-end reuses the request and the hashes it passes once the call
// returns (so it allocates none per request): a Backend must not keep
// them past the call.
type Backend interface {
	// Announce applies req and returns the peer list. A membership change
	// returns only after it has been committed.
	Announce(ctx context.Context, req *AnnounceRequest) (*AnnounceReply, error)
	// Scrape returns one entry per hash, in order.
	Scrape(ctx context.Context, hashes []InfoHash) ([]ScrapeEntry, error)
}

// KeyedScraper is a Backend that wants the passkey of a scrape's URL (a
// private tracker answers scrapes only to members). A front-end calls
// ScrapeKeyed instead of Scrape when its Backend implements it.
type KeyedScraper interface {
	ScrapeKeyed(ctx context.Context, hashes []InfoHash, key Passkey, status PasskeyStatus) ([]ScrapeEntry, error)
}

// A Refusal is an error whose text a front-end sends to the client as the
// failure reason. Errors that are not Refusals are logged and answered
// with a generic reason, so internal detail never reaches a stranger.
type Refusal struct{ Reason string }

func (r *Refusal) Error() string { return r.Reason }

// Refuse returns a Refusal with the reason.
func Refuse(reason string) error { return &Refusal{Reason: reason} }

// ReasonOf returns the failure reason a client gets for err, and whether err
// was a Refusal.
func ReasonOf(err error) (string, bool) {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason, true
	}
	return "the tracker could not answer right now; retry later", false
}

// Intervals is the re-announce schedule a front-end sends.
type Intervals struct {
	// Interval is the re-announce interval sent to clients; each reply
	// gets it with up to ±Jitter added, so that a crowd started together
	// spreads out.
	Interval time.Duration
	// MinInterval is the min interval sent to clients.
	MinInterval time.Duration
	Jitter      time.Duration
}
