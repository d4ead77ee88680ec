// Package btclient announces to and scrapes BitTorrent trackers over HTTP
// (BEP 3, 23, 48) and UDP (BEP 15), as a BitTorrent client does. The demo,
// tests and tools use it to speak to FileShare's trackers (and to any other
// tracker) without a real client.
//
// The protocol's vocabulary (info-hashes, peer IDs, events, scrape counts)
// and its bencode decoder are package tracker's, so a constant or a rule of
// the protocol is written once for both ends.
//
// An announce:
//
//	var c btclient.UDPClient
//	resp, err := c.Announce(ctx, "127.0.0.1:6969", btclient.Announce{
//		InfoHash: ih, PeerID: id, Port: 51413, Left: size, Event: tracker.EventStarted,
//	})
//
// or over HTTP:
//
//	resp, err := btclient.AnnounceHTTP(ctx, nil, "http://127.0.0.1:6969/announce", a)
//
// A load generator that cannot afford an allocation per announce builds
// the packets into its own buffers (AppendConnectRequest,
// AppendAnnounceRequest, AppendAnnounceQuery) and reads the replies with
// ParseUDPReply and ParseAnnounceSummary.
package btclient

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"fileshare/tracker"
)

// Announce is what a client tells a tracker about itself in one swarm.
type Announce struct {
	InfoHash tracker.InfoHash
	PeerID   tracker.PeerID
	// Port is where other peers reach this client.
	Port uint16
	// Uploaded, Downloaded and Left are the client's cumulative byte
	// counters for this torrent, and the bytes it still lacks (0: a seeder).
	Uploaded, Downloaded, Left uint64
	Event                      tracker.Event
	// NumWant is how many peers the client asks for; 0 asks for the
	// tracker's default.
	NumWant int
	// Key, when HasKey, proves across address changes that announces come
	// from the same client.
	Key    uint32
	HasKey bool
}

// Response is a tracker's answer to an announce.
type Response struct {
	// Interval is how long the tracker asks the client to wait before its
	// next regular announce.
	Interval time.Duration
	// Complete and Incomplete count the swarm's seeders and leechers.
	Complete, Incomplete int
	// Peers are the peers the tracker handed out (never the client itself).
	Peers []netip.AddrPort
}

// FailureError is a tracker's refusal: the HTTP "failure reason" or the
// UDP error action's message, word for word.
type FailureError struct{ Reason string }

func (e *FailureError) Error() string { return "tracker refused: " + e.Reason }

// ErrMalformedReply wraps a reply the client could not make sense of.
var ErrMalformedReply = errors.New("btclient: malformed tracker reply")

// compactPeers decodes BEP 23 (6 bytes per IPv4 peer) or BEP 7 (18 bytes
// per IPv6 peer) compact peer lists. size is 6 or 18.
func compactPeers(dst []netip.AddrPort, b []byte, size int) ([]netip.AddrPort, bool) {
	if len(b)%size != 0 {
		return dst, false
	}
	for ; len(b) > 0; b = b[size:] {
		var ip netip.Addr
		if size == 6 {
			ip = netip.AddrFrom4([4]byte(b[:4]))
		} else {
			ip = netip.AddrFrom16([16]byte(b[:16]))
		}
		dst = append(dst, netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[size-2:])))
	}
	return dst, true
}
