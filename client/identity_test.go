package client

import (
	"crypto/ed25519"
	"testing"

	"fileshare/fsm"
)

// A peer ID derived from a key is a valid fsm.PeerID of PeerKeyIDLen
// characters, is the same for the same key and differs between keys, so
// the index can tie an ID to the key that proved it.
func TestPeerIDOfIsSelfCertifying(t *testing.T) {
	a, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if err := fsm.PeerID(a.PeerID).Validate(); err != nil {
		t.Fatalf("derived ID %q is not a valid PeerID: %v", a.PeerID, err)
	}
	if len(a.PeerID) != PeerKeyIDLen {
		t.Fatalf("derived ID %q has %d characters, want %d", a.PeerID, len(a.PeerID), PeerKeyIDLen)
	}
	if a.PeerID != IdentityFromKey(ed25519.NewKeyFromSeed(a.Key.Seed())).PeerID || a.PeerID == b.PeerID {
		t.Fatalf("PeerIDOf is not a function of the key: %q %q", a.PeerID, b.PeerID)
	}
	if a.PeerID != PeerIDOf(a.Public()) {
		t.Fatal("an identity's ID is not PeerIDOf its public key")
	}
}
