package master_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"fileshare/internal/poll"
	"fileshare/tracker"
)

func statsOf(t *testing.T, trackerAddr string) tracker.StatsJSON {
	t.Helper()
	var s tracker.StatsJSON
	body := get(t, "", "http://"+trackerAddr+"/stats.json")
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("/stats.json of %s: %v: %q", trackerAddr, err, body)
	}
	return s
}

// Every master's stats page shows the same replicated counts, whichever
// master heard the announces, and every master serves the full scrape.
func TestTrackerStatsAgreeOnEveryMaster(t *testing.T) {
	c := trackerCluster(t, nil)
	a, b := randomHash(), randomHash()
	for i, step := range []struct {
		ih    tracker.InfoHash
		event string
		left  int
	}{{a, "started", 0}, {a, "started", 10}, {b, "started", 10}} {
		if r := announce(t, c.Master(i).TrackerHTTPAddr(), step.ih, newBTPeer(7500+i), step.event, step.left); r.failure != "" {
			t.Fatalf("announce %d: %s", i, r.failure)
		}
	}
	want := tracker.StatsJSON{Mode: "open", Torrents: 2, Peers: 3, Seeders: 1, Leechers: 2}
	for i := range 3 {
		addr := c.Master(i).TrackerHTTPAddr()
		var got tracker.StatsJSON
		poll.Until(t, 10*time.Second, "master's stats to show the three announces", func() bool {
			got = statsOf(t, addr)
			return got.Mode == want.Mode && got.Torrents == want.Torrents && got.Peers == want.Peers &&
				got.Seeders == want.Seeders && got.Leechers == want.Leechers
		})
		files := decodeFullScrape(t, get(t, "", "http://"+addr+"/scrape"))
		ea, _ := files[string(a[:])].(map[string]any)
		if len(files) != 2 || ea["complete"] != int64(1) || ea["incomplete"] != int64(1) {
			t.Errorf("master %d full scrape = %v, want both swarms, %x with 1 seeder and 1 leecher", i, files, a[:4])
		}
	}
}

func decodeFullScrape(t *testing.T, body []byte) map[string]any {
	t.Helper()
	v, err := tracker.DecodeBencode(body)
	d, _ := v.(map[string]any)
	files, ok := d["files"].(map[string]any)
	if err != nil || !ok {
		t.Fatalf("full scrape %q: %v", body, err)
	}
	return files
}

// The stats page is plain HTML a browser shows: headless Chromium reads
// the counts from it.
func TestTrackerStatsPageInBrowser(t *testing.T) {
	browser := chromium(t)
	c := trackerCluster(t, nil)
	addr := c.Master(0).TrackerHTTPAddr()
	if r := announce(t, addr, randomHash(), newBTPeer(7600), "started", 0); r.failure != "" {
		t.Fatal(r.failure)
	}
	poll.Until(t, 10*time.Second, "stats to show the peer", func() bool { return statsOf(t, addr).Peers == 1 })
	ctx, cancel := context.WithTimeout(browser, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+addr+"/stats"), chromedp.WaitVisible(chromedp.ID("peers"))); err != nil {
		t.Fatalf("open /stats: %v", err)
	}
	text := func(id string) string {
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("read #%s: %v", id, err)
		}
		return s
	}
	peers, seeders, mode := text("peers"), text("seeders"), text("mode")
	if strings.TrimSpace(peers) != "1" || strings.TrimSpace(seeders) != "1" || strings.TrimSpace(mode) != "open" {
		t.Errorf("the browser shows peers %q, seeders %q, mode %q; want 1, 1, open", peers, seeders, mode)
	}
}

// On a private tracker full scrape is refused with a failure reason on
// every master, while the stats pages still show the totals (they hold no
// member's data).
func TestTrackerPrivateRefusesFullScrape(t *testing.T) {
	c := trackerCluster(t, nil)
	if err := c.Client().TrackerSetMode(t.Context(), "private"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		addr := c.Master(i).TrackerHTTPAddr()
		poll.Until(t, 10*time.Second, "the master to report private mode", func() bool { return statsOf(t, addr).Mode == "private" })
		// The refusal is cached like a body: poll past FullScrapeTTL.
		var body []byte
		poll.Until(t, 2*tracker.FullScrapeTTL, "full scrape to be refused", func() bool {
			body = get(t, "", "http://"+addr+"/scrape")
			return strings.Contains(string(body), "private tracker")
		})
		v, err := tracker.DecodeBencode(body)
		d, _ := v.(map[string]any)
		if _, ok := d["files"]; err != nil || ok {
			t.Errorf("master %d: full scrape of a private tracker answered %q, want only a failure reason", i, body)
		}
	}
}
