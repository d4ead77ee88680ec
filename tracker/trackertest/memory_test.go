package trackertest

import (
	"net/netip"
	"testing"

	"fileshare/tracker"
)

func announce(t *testing.T, m *MemoryBackend, id byte, port uint16, left uint64, ev tracker.Event, numWant int) *tracker.AnnounceReply {
	t.Helper()
	req := &tracker.AnnounceRequest{
		InfoHash: tracker.InfoHash{1},
		PeerID:   tracker.PeerID{id},
		Addr:     netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port),
		Left:     left,
		Event:    ev,
		NumWant:  numWant,
	}
	r, err := m.Announce(t.Context(), req)
	if err != nil {
		t.Fatalf("announce %d: %v", id, err)
	}
	return r
}

func ids(r *tracker.AnnounceReply) []byte {
	var out []byte
	for _, p := range r.Peers {
		out = append(out, p.ID[0])
	}
	return out
}

// The peer list never holds the requester, holds at most NumWant peers,
// and gives a seeder every leecher before any seeder.
func TestMemoryBackendPeerList(t *testing.T) {
	m := &MemoryBackend{}
	announce(t, m, 1, 1001, 0, tracker.EventStarted, 50)  // seeder
	announce(t, m, 2, 1002, 10, tracker.EventStarted, 50) // leecher
	announce(t, m, 3, 1003, 0, tracker.EventStarted, 50)  // seeder
	announce(t, m, 4, 1004, 10, tracker.EventStarted, 50) // leecher

	r := announce(t, m, 3, 1003, 0, tracker.EventNone, 50)
	if got, want := string(ids(r)), "\x02\x04\x01"; got != want {
		t.Errorf("seeder 3 got peers %q, want leechers 2,4 then seeder 1 (%q)", got, want)
	}
	if r.Complete != 2 || r.Incomplete != 2 {
		t.Errorf("counts: got complete %d incomplete %d, want 2 and 2", r.Complete, r.Incomplete)
	}
	r = announce(t, m, 2, 1002, 10, tracker.EventNone, 2)
	if got := ids(r); len(got) != 2 || got[0] == 2 || got[1] == 2 {
		t.Errorf("leecher 2 with numwant 2 got %v, want 2 peers without itself", got)
	}
	r = announce(t, m, 2, 1002, 10, tracker.EventNone, 0)
	if len(r.Peers) != 0 {
		t.Errorf("numwant 0 got %d peers, want none", len(r.Peers))
	}
}

// A stopped peer leaves; a completed event counts once per peer and stays
// counted after the swarm empties.
func TestMemoryBackendStopAndComplete(t *testing.T) {
	m := &MemoryBackend{}
	announce(t, m, 1, 1001, 10, tracker.EventStarted, 50)
	announce(t, m, 2, 1002, 10, tracker.EventStarted, 50)
	announce(t, m, 1, 1001, 0, tracker.EventCompleted, 50)
	announce(t, m, 1, 1001, 0, tracker.EventCompleted, 50)
	r := announce(t, m, 2, 1002, 10, tracker.EventStopped, 0)
	if r.Complete != 1 || r.Incomplete != 0 {
		t.Errorf("after stop: complete %d incomplete %d, want 1 and 0", r.Complete, r.Incomplete)
	}
	announce(t, m, 1, 1001, 0, tracker.EventStopped, 0)
	got, err := m.Scrape(t.Context(), []tracker.InfoHash{{1}, {9}})
	if err != nil {
		t.Fatal(err)
	}
	if want := (tracker.ScrapeEntry{Downloaded: 1}); got[0] != want {
		t.Errorf("scrape of emptied swarm: got %+v, want %+v", got[0], want)
	}
	if got[1] != (tracker.ScrapeEntry{}) {
		t.Errorf("scrape of unknown swarm: got %+v, want zeros", got[1])
	}
}

// A peer that sent a key cannot be moved to another IP without it.
func TestMemoryBackendKeyGuardsAddress(t *testing.T) {
	m := &MemoryBackend{}
	req := &tracker.AnnounceRequest{PeerID: tracker.PeerID{1}, Addr: netip.MustParseAddrPort("10.0.0.1:1"), Key: 7, HasKey: true, NumWant: 5}
	if _, err := m.Announce(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	moved := *req
	moved.Addr = netip.MustParseAddrPort("10.0.0.2:1")
	moved.Key = 8
	if _, err := m.Announce(t.Context(), &moved); err == nil {
		t.Error("a different key from another IP was accepted; want a refusal")
	}
	moved.Key = 7
	if _, err := m.Announce(t.Context(), &moved); err != nil {
		t.Errorf("the same key from another IP: %v, want accepted", err)
	}
}
