package trackertest

import (
	"net/netip"
	"testing"

	"fileshare/tracker"
)

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

func TestMemoryBackendConforms(t *testing.T) {
	TestBackend(t, func(*testing.T) tracker.Backend { return &MemoryBackend{} })
}
