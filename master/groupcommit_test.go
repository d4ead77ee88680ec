package master_test

import (
	"fmt"
	"sync"
	"testing"

	"fileshare/client"
)

// Group commit: concurrent registrations share log entries.
func TestConcurrentRegistrationsShareLogEntries(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.Leader()
	cl := c.Client(c.Addr(leader))
	ids := make([]client.Identity, 64)
	for i := range ids {
		ids[i] = identity(fmt.Sprintf("batch-%d", i))
		if _, err := cl.Join(t.Context(), ids[i], "127.0.0.1:9008"); err != nil {
			t.Fatal(err)
		}
	}
	before := c.Status(leader).LastIndex
	const perClient = 10
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			for j := range perClient {
				f := fileEntry(fmt.Sprintf("batched-%d-%d", i, j))
				if _, err := cl.Register(t.Context(), ids[i], []client.FileEntry{f}); err != nil {
					t.Errorf("register: %v", err)
				}
			}
		})
	}
	wg.Wait()
	st := c.Status(leader)
	entries := st.LastIndex - before
	total := uint64(len(ids) * perClient)
	t.Logf("%d registrations took %d log entries", total, entries)
	if entries > total/2 {
		t.Fatalf("%d concurrent registrations took %d log entries; want at most %d (batching)", total, entries, total/2)
	}
	if got := st.Files; got != int(total) {
		t.Fatalf("index holds %d files, want %d", got, total)
	}
}
