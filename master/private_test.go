package master_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"fileshare/btclient"
	"fileshare/client"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/master/mastertest"
	"fileshare/tracker"
)

// privAnnounce announces to a private tracker with the passkey in the
// URL (first path segment if keyFirst, else last) and the given counters.
func privAnnounce(t *testing.T, addr, key string, keyFirst bool, ih tracker.InfoHash, p btPeer, event string, left, up, down int) announceReply {
	t.Helper()
	path := "/announce"
	switch {
	case key != "" && keyFirst:
		path = "/" + key + "/announce"
	case key != "":
		path = "/announce/" + key
	}
	q := fmt.Sprintf("info_hash=%s&peer_id=%s&port=%d&uploaded=%d&downloaded=%d&left=%d&compact=1&numwant=50", escape(ih[:]), escape(p.id[:]), p.port, up, down, left)
	if event != "" {
		q += "&event=" + event
	}
	return decodeAnnounce(t, get(t, p.local, "http://"+addr+path+"?"+q))
}

func decodeAnnounce(t *testing.T, body []byte) announceReply {
	t.Helper()
	v, err := tracker.DecodeBencode(body)
	if err != nil {
		t.Fatalf("announce reply %q: %v", body, err)
	}
	d, _ := v.(map[string]any)
	var out announceReply
	if f, ok := d["failure reason"].(string); ok {
		out.failure = f
		return out
	}
	out.complete, _ = d["complete"].(int64)
	out.incomplete, _ = d["incomplete"].(int64)
	return out
}

// A private tracker's books are right through a follower, after the
// leader is killed, and after every master restarted: each member is
// credited exactly the growth of its clients' counters after their first
// announce, on every master.
func TestPrivateTrackerBooksSurviveLeaderLossAndFullRestart(t *testing.T) {
	c := trackerCluster(t, nil)
	ctx := t.Context()
	admin := c.Client()
	ih := randomHash()
	if _, err := admin.TrackerPolicy(ctx, client.TrackerPolicyRequest{Mode: client.TrackerModePrivate, Allow: []string{fmt.Sprintf("%x", ih[:])}}); err != nil {
		t.Fatal(err)
	}
	alice, err := admin.TrackerUserAdd(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := admin.TrackerUserAdd(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if len(alice.Passkey) != 32 || strings.ToLower(alice.Passkey) != alice.Passkey {
		t.Fatalf("passkey %q: want 32 lowercase hex characters", alice.Passkey)
	}
	c.Converge()
	lead := c.Leader()
	f := c.Follower(lead)
	fa := c.Master(f).TrackerHTTPAddr()

	// Refusals say which, and change nothing.
	stranger := newBTPeer(7000)
	for _, tc := range []struct{ key, want string }{
		{"", "no passkey"},
		{"0123456789abcdef0123456789abcdef", "unknown"},
		{"not-a-passkey", "not 32 hex"},
	} {
		if r := privAnnounce(t, fa, tc.key, true, ih, stranger, "started", 1, 0, 0); !strings.Contains(r.failure, tc.want) {
			t.Errorf("passkey %q: failure %q, want one saying %q", tc.key, r.failure, tc.want)
		}
	}

	seeder, leecher := newBTPeer(7001), newBTPeer(7002)
	// First announces set the baselines: nothing credited for what the
	// clients report having done before.
	if r := privAnnounce(t, fa, alice.Passkey, true, ih, seeder, "started", 0, 5000, 0); r.failure != "" {
		t.Fatalf("alice started: %s", r.failure)
	}
	if r := privAnnounce(t, fa, bob.Passkey, false, ih, leecher, "started", 100, 0, 7000); r.failure != "" {
		t.Fatalf("bob started: %s", r.failure)
	}
	// Re-announces: soft, credited in the next accounting entry.
	privAnnounce(t, fa, alice.Passkey, true, ih, seeder, "", 0, 6000, 0)
	privAnnounce(t, fa, bob.Passkey, false, ih, leecher, "", 50, 0, 8000)
	waitBooks := func(what string, up, down uint64) {
		t.Helper()
		poll.Until(t, 30*time.Second, what, func() bool {
			a, err1 := admin.TrackerUserBooks(ctx, "alice", client.ReadLinearizable)
			b, err2 := admin.TrackerUserBooks(ctx, "bob", client.ReadLinearizable)
			return err1 == nil && err2 == nil && a.Uploaded == up && b.Downloaded == down && a.Downloaded == 0 && b.Uploaded == 0
		})
	}
	waitBooks("alice credited 1000 up and bob 1000 down through a follower", 1000, 1000)

	c.Kill(lead)
	other := 3 - lead - f
	oa := c.Master(other).TrackerHTTPAddr()
	poll.Until(t, 30*time.Second, "a surviving master to take bob's completed", func() bool {
		return privAnnounce(t, oa, bob.Passkey, true, ih, leecher, "completed", 0, 0, 9100).failure == ""
	})
	poll.Until(t, 30*time.Second, "a surviving master to take alice's stopped", func() bool {
		return privAnnounce(t, oa, alice.Passkey, false, ih, seeder, "stopped", 0, 8100, 0).failure == ""
	})
	waitBooks("books 3100/2100 after the leader's loss", 3100, 2100)

	if _, err := admin.TrackerUserRevoke(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "bob's revoked passkey to be refused", func() bool {
		return strings.Contains(privAnnounce(t, oa, bob.Passkey, true, ih, leecher, "", 0, 0, 9999).failure, "revoked")
	})

	c.Restart(lead)
	for i := range 3 {
		c.Stop(i)
	}
	for i := range 3 {
		c.Restart(i)
	}
	c.Leader()
	c.Converge()
	for i := range 3 {
		one := c.Client(c.Master(i).Addr())
		a, err := one.TrackerUserBooks(ctx, "alice", client.ReadStale)
		if err != nil {
			t.Fatal(err)
		}
		b, err := one.TrackerUserBooks(ctx, "bob", client.ReadStale)
		if err != nil {
			t.Fatal(err)
		}
		if a.Uploaded != 3100 || b.Downloaded != 2100 || b.Completed != 1 || !b.Revoked || len(a.Torrents) != 1 {
			t.Errorf("master %d after a full restart: alice %+v, bob %+v; want 3100 up, 2100 down, one completion", i, a, b)
		}
	}
	led, err := admin.TrackerLedger(ctx, client.LedgerCursor{}, 0, client.ReadLinearizable)
	if err != nil {
		t.Fatal(err)
	}
	var up, down uint64
	for _, e := range led.Entries {
		up += e.Uploaded
		down += e.Downloaded
	}
	if up != 3100 || down != 2100 || led.Next != led.Entries[len(led.Entries)-1].Cursor {
		t.Errorf("ledger sums to %d up, %d down over %d entries, want 3100 and 2100", up, down, len(led.Entries))
	}
}

// Over UDP the passkey travels in BEP 41 URL data: btclient sends the
// announce URL's path, the tracker credits the member it names, and an
// announce without one is refused with a reason.
func TestPrivateTrackerUDPPasskeyInURLData(t *testing.T) {
	c := mastertest.New(t, 3, mastertest.Options{TLS: true, Config: func(c *master.Config) {
		c.Tracker.UDP = "127.0.0.1:0"
	}})
	ctx := t.Context()
	admin := c.Client()
	ih := randomHash()
	if _, err := admin.TrackerPolicy(ctx, client.TrackerPolicyRequest{Mode: client.TrackerModePrivate, Allow: []string{fmt.Sprintf("%x", ih[:])}}); err != nil {
		t.Fatal(err)
	}
	carol, err := admin.TrackerUserAdd(ctx, "carol")
	if err != nil {
		t.Fatal(err)
	}
	c.Converge()
	addr := c.Master(c.Follower(c.Leader())).TrackerUDPAddr()
	uc := &btclient.UDPClient{Retransmit: 200 * time.Millisecond}
	a := btclient.Announce{InfoHash: ih, Port: 7100, Left: 0, Uploaded: 100, Event: tracker.EventStarted}
	a.PeerID[0] = 'x'
	var fe *btclient.FailureError
	if _, err := uc.Announce(ctx, addr, a); !errors.As(err, &fe) || !strings.Contains(fe.Reason, "no passkey") {
		t.Fatalf("UDP announce without a passkey: %v, want a refusal saying no passkey", err)
	}
	url := "udp://" + addr + "/" + carol.Passkey + "/announce"
	if _, err := uc.Announce(ctx, url, a); err != nil {
		t.Fatalf("UDP announce with the passkey: %v", err)
	}
	a.Event, a.Uploaded = tracker.EventStopped, 4100
	if _, err := uc.Announce(ctx, url, a); err != nil {
		t.Fatalf("UDP stopped with the passkey: %v", err)
	}
	b, err := admin.TrackerUserBooks(ctx, "carol", client.ReadLinearizable)
	if err != nil || b.Uploaded != 4000 {
		t.Fatalf("carol's books %+v, %v; want 4000 uploaded", b, err)
	}
}
