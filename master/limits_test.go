package master_test

import (
	"fmt"
	"testing"

	"fileshare/client"
	"fileshare/master"
)

// A lookup lists at most MaxLookupHolders holders, a random page of them,
// so that a file's real holders cannot be kept off every page by a crowd
// of peers with lower IDs; the count still covers every holder.
func TestALookupListsABoundedRandomPageOfHolders(t *testing.T) {
	c := newCluster(t, 1, func(cfg *master.Config) { cfg.MaxPeersPerIP = -1 })
	c.Leader()
	cl := c.Client()
	const n = master.MaxLookupHolders + 30
	f := fileEntry("popular.iso")
	for i := range n {
		p := identity(fmt.Sprintf("holder-%d", i))
		if _, err := cl.Join(t.Context(), p, "127.0.0.1:9004"); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Register(t.Context(), p, []client.FileEntry{f}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for range 5 {
		r, err := cl.Lookup(t.Context(), f.ID, client.ReadStale)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Holders) != master.MaxLookupHolders || r.File.Holders != n {
			t.Fatalf("lookup listed %d of %d holders, want %d of %d", len(r.Holders), r.File.Holders, master.MaxLookupHolders, n)
		}
		for _, h := range r.Holders {
			seen[h.PeerID] = true
		}
	}
	if len(seen) == master.MaxLookupHolders {
		t.Fatalf("five lookups listed the same %d holders: the page is not random", len(seen))
	}
}
