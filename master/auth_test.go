package master_test

import (
	"errors"
	"testing"

	"fileshare/client"
	"fileshare/fsm"
)

func TestOnlyTheOwnerCanRemoveRegistrations(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.Leader()
	cl := c.Client()
	alice, mallory := identity("alice"), identity("mallory")
	for _, p := range []client.Identity{alice, mallory} {
		if _, err := cl.Join(t.Context(), p, "127.0.0.1:9004"); err != nil {
			t.Fatal(err)
		}
	}
	f := fileEntry("alice-only.txt")
	if _, err := cl.Register(t.Context(), alice, []client.FileEntry{f}); err != nil {
		t.Fatal(err)
	}
	// Mallory claims to be alice with the wrong secret.
	fake := client.Identity{PeerID: "alice", Secret: mallory.Secret}
	if _, err := cl.Unregister(t.Context(), fake, []string{f.ID}); !errors.Is(err, fsm.ErrUnauthorized) {
		t.Fatalf("unregister with a wrong secret: got %v, want ErrUnauthorized", err)
	}
	if _, err := cl.Leave(t.Context(), fake); !errors.Is(err, fsm.ErrUnauthorized) {
		t.Fatalf("leave with a wrong secret: got %v, want ErrUnauthorized", err)
	}
	// Unregistering as herself only affects mallory's own holdings.
	if _, err := cl.Unregister(t.Context(), mallory, []string{f.ID}); err != nil {
		t.Fatal(err)
	}
	r, err := cl.Lookup(t.Context(), f.ID, client.ReadLinearizable)
	if err != nil || !r.Found || len(r.Holders) != 1 || r.Holders[0].PeerID != "alice" {
		t.Fatalf("lookup after attacks: %+v, %v; want alice still holding", r, err)
	}
}
