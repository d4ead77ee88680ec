package trackertest

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"fileshare/tracker"
)

// TestBackend checks that a tracker.Backend keeps the contract every
// front-end relies on. Each implementation runs it from a test of its
// own:
//
//	func TestMemoryBackendConforms(t *testing.T) {
//		trackertest.TestBackend(t, func(*testing.T) tracker.Backend { return &trackertest.MemoryBackend{} })
//	}
//
// newBackend is called once per subtest; it may return the same backend
// each time, since every subtest uses info-hashes of its own. The suite
// announces from 10.99.0.0/16 addresses, one per peer, and needs the
// backend to track any info-hash (an open tracker).
//
// The contract: the peer list never holds the requester and at most
// NumWant peers, a seeder's list holds every leecher before any seeder;
// the counts follow starts, completions and stops; a stopped peer leaves
// at once and gets no peers; a completed event counts once per peer and
// stays counted after the swarm empties; a scrape answers one entry per
// hash, in order, zeros for an unknown swarm; and an announce with a
// different key from another address never takes over a keyed peer's
// entry.
func TestBackend(t *testing.T, newBackend func(t *testing.T) tracker.Backend) {
	t.Run("PeerList", func(t *testing.T) { testPeerList(t, newBackend(t)) })
	t.Run("StopAndComplete", func(t *testing.T) { testStopAndComplete(t, newBackend(t)) })
	t.Run("ScrapeOrder", func(t *testing.T) { testScrapeOrder(t, newBackend(t)) })
	t.Run("KeyGuardsEntry", func(t *testing.T) { testKeyGuardsEntry(t, newBackend(t)) })
}

// swarmPeer is one simulated client of the suite.
type swarmPeer struct {
	b  tracker.Backend
	ih tracker.InfoHash
	n  byte // the peer's number: its peer_id's first byte and its address
}

func (p swarmPeer) addr() netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 99, 0, p.n}), 6000+uint16(p.n))
}

func (p swarmPeer) announce(t *testing.T, left uint64, ev tracker.Event, numWant int) *tracker.AnnounceReply {
	t.Helper()
	req := &tracker.AnnounceRequest{InfoHash: p.ih, PeerID: tracker.PeerID{p.n}, Addr: p.addr(), Left: left, Event: ev, NumWant: numWant}
	r, err := p.b.Announce(t.Context(), req)
	if err != nil {
		t.Fatalf("announce of peer %d (left %d, event %d): %v", p.n, left, ev, err)
	}
	return r
}

func newHash() tracker.InfoHash {
	var h tracker.InfoHash
	rand.Read(h[:])
	return h
}

// peerNumbers returns the peer numbers of r's peers.
func peerNumbers(r *tracker.AnnounceReply) []byte {
	out := make([]byte, len(r.Peers))
	for i, p := range r.Peers {
		out[i] = p.ID[0]
	}
	return out
}

func testPeerList(t *testing.T, b tracker.Backend) {
	ih := newHash()
	peer := func(n byte) swarmPeer { return swarmPeer{b, ih, n} }
	peer(1).announce(t, 0, tracker.EventStarted, 50)  // seeder
	peer(2).announce(t, 10, tracker.EventStarted, 50) // leecher
	peer(3).announce(t, 0, tracker.EventStarted, 50)  // seeder
	peer(4).announce(t, 10, tracker.EventStarted, 50) // leecher

	r := peer(3).announce(t, 0, tracker.EventNone, 50)
	got := peerNumbers(r)
	slices.Sort(got[:min(2, len(got))])
	if string(got) != "\x02\x04\x01" {
		t.Errorf("seeder 3 got peers %v, want leechers 2 and 4, then seeder 1", got)
	}
	if r.Complete != 2 || r.Incomplete != 2 {
		t.Errorf("counts: got complete %d incomplete %d, want 2 and 2", r.Complete, r.Incomplete)
	}
	for _, p := range r.Peers {
		if p.Addr != peer(p.ID[0]).addr() {
			t.Errorf("peer %d listed at %v, want the address it announced from, %v", p.ID[0], p.Addr, peer(p.ID[0]).addr())
		}
	}
	r = peer(2).announce(t, 10, tracker.EventNone, 2)
	if got := peerNumbers(r); len(got) != 2 || slices.Contains(got, 2) {
		t.Errorf("leecher 2 with numwant 2 got %v, want 2 peers without itself", got)
	}
	if r = peer(2).announce(t, 10, tracker.EventNone, 0); len(r.Peers) != 0 {
		t.Errorf("numwant 0 got %d peers, want none", len(r.Peers))
	}
}

func testStopAndComplete(t *testing.T, b tracker.Backend) {
	ih := newHash()
	peer := func(n byte) swarmPeer { return swarmPeer{b, ih, n} }
	peer(1).announce(t, 10, tracker.EventStarted, 50)
	peer(2).announce(t, 10, tracker.EventStarted, 50)
	peer(1).announce(t, 0, tracker.EventCompleted, 50)
	peer(1).announce(t, 0, tracker.EventCompleted, 50) // a repeat counts once
	r := peer(2).announce(t, 10, tracker.EventStopped, 0)
	if r.Complete != 1 || r.Incomplete != 0 || len(r.Peers) != 0 {
		t.Errorf("the stopped announce got complete %d incomplete %d and %d peers, want 1, 0 and none", r.Complete, r.Incomplete, len(r.Peers))
	}
	if r := peer(3).announce(t, 10, tracker.EventStarted, 50); !slices.Equal(peerNumbers(r), []byte{1}) {
		t.Errorf("after 2 stopped, a newcomer got peers %v, want only 1", peerNumbers(r))
	}
	peer(3).announce(t, 10, tracker.EventStopped, 0)
	peer(1).announce(t, 0, tracker.EventStopped, 0)
	got, err := b.Scrape(t.Context(), []tracker.InfoHash{ih})
	if err != nil {
		t.Fatal(err)
	}
	if want := (tracker.ScrapeEntry{Downloaded: 1}); got[0] != want {
		t.Errorf("scrape of the emptied swarm: got %+v, want %+v (the completion stays counted)", got[0], want)
	}
}

func testScrapeOrder(t *testing.T, b tracker.Backend) {
	small, big, unknown := newHash(), newHash(), newHash()
	swarmPeer{b, small, 1}.announce(t, 0, tracker.EventStarted, 50)
	for n := byte(1); n <= 3; n++ {
		swarmPeer{b, big, n}.announce(t, 10, tracker.EventStarted, 50)
	}
	got, err := b.Scrape(t.Context(), []tracker.InfoHash{big, unknown, small})
	if err != nil {
		t.Fatal(err)
	}
	want := []tracker.ScrapeEntry{{Incomplete: 3}, {}, {Complete: 1}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("scrape of (3 leechers, unknown, 1 seeder): got %+v, want %+v", got, want)
	}
}

func testKeyGuardsEntry(t *testing.T, b tracker.Backend) {
	ih := newHash()
	owner := &tracker.AnnounceRequest{InfoHash: ih, PeerID: tracker.PeerID{1}, Addr: netip.MustParseAddrPort("10.99.1.1:6001"), Key: 7, HasKey: true, NumWant: 50, Event: tracker.EventStarted}
	if _, err := b.Announce(t.Context(), owner); err != nil {
		t.Fatal(err)
	}
	stranger := *owner
	stranger.Addr, stranger.Key, stranger.Event = netip.MustParseAddrPort("10.99.1.2:6002"), 8, tracker.EventStopped
	b.Announce(t.Context(), &stranger) // refused, or kept apart: either way the owner stays
	r := swarmPeer{b, ih, 9}.announce(t, 10, tracker.EventStarted, 50)
	if !slices.ContainsFunc(r.Peers, func(p tracker.Peer) bool { return p.Addr == owner.Addr }) {
		t.Errorf("after a stopped with another key from another address, the peers are %v; want the owner's entry %v still listed", r.Peers, owner.Addr)
	}
}
