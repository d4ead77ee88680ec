package master_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/poll"
)

// TestPrivateTrackerCreditsAcrossCounterResets fires one peer's
// announces back to back, without waiting for the soft credits to
// commit, through a stop and three client restarts (counters back to 0),
// and checks the books hold exactly the counters' growth: reports of one
// record queued for crediting must not coalesce across a reset, and a
// committed change must not make the reports heard before it stale.
// Through the leader, and round robin over every master.
func TestPrivateTrackerCreditsAcrossCounterResets(t *testing.T) {
	c := trackerCluster(t, nil)
	adm := c.Client()
	ctx := t.Context()
	if err := adm.TrackerSetMode(ctx, "private"); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		up, down int
		event    string
		left     int
	}{
		{0, 0, "started", 1}, {100, 40, "", 1}, {200, 80, "completed", 0}, {300, 80, "", 0}, {400, 80, "stopped", 0},
		{0, 0, "started", 0}, {50, 5, "", 0}, {70, 7, "", 0}, {90, 9, "", 0},
		{0, 0, "started", 0}, // the client restarted on the same record
		{30, 3, "", 0}, {60, 6, "", 0},
		// Once more, and past its counters before the restart: round
		// robin, the master that heard 60 hears 100 next, with the
		// restart (through another master) between them.
		{0, 0, "started", 0}, {30, 3, "", 0}, {100, 10, "", 0},
	}
	const wantUp, wantDown, wantCompleted = 400 + 90 + 60 + 100, 80 + 9 + 6 + 10, 1
	for _, roundRobin := range []bool{false, true} {
		t.Run(map[bool]string{false: "leader", true: "round-robin"}[roundRobin], func(t *testing.T) {
			ih := randomHash()
			if _, err := adm.TrackerPolicy(ctx, client.TrackerPolicyRequest{Mode: "private", Allow: []string{fmt.Sprintf("%x", ih[:])}}); err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("m%t", roundRobin)
			mem, err := adm.TrackerUserAdd(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			// Announce only once every master knows the torrent and the
			// passkey: a master that has not applied them yet refuses the
			// announce, and growth before the first accepted announce is
			// not credited (by design).
			if _, err := c.WaitConverged(ctx); err != nil {
				t.Fatal(err)
			}
			p := newBTPeer(7000)
			for i, s := range steps {
				n := c.Leader()
				if roundRobin {
					n = i % 3
				}
				if r := privAnnounce(t, c.Master(n).TrackerHTTPAddr(), mem.Passkey, true, ih, p, s.event, s.left, s.up, s.down); r.failure != "" {
					t.Fatalf("step %d (%s %d) on master %d: %s", i, s.event, s.up, n, r.failure)
				}
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			var b client.TrackerBooks
			err = poll.Wait(wctx, func() bool {
				var err error
				b, err = adm.TrackerUserBooks(ctx, name, client.ReadLinearizable)
				return err == nil && b.RawUploaded == wantUp && b.RawDownloaded == wantDown && b.Completed == wantCompleted
			})
			if err != nil {
				l, _ := adm.TrackerLedger(ctx, client.LedgerCursor{}, 0, client.ReadLinearizable)
				for _, e := range l.Entries {
					t.Logf("ledger: %d.%d at %d: raw upload %d, download %d", e.Cursor.Index, e.Cursor.Pos, e.Time, e.RawUploaded, e.RawDownloaded)
				}
				t.Fatalf("books: raw upload %d, download %d, completed %d; want %d, %d, %d", b.RawUploaded, b.RawDownloaded, b.Completed, wantUp, wantDown, wantCompleted)
			}
		})
	}
}
