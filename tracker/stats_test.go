package tracker_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fileshare/internal/poll"

	"fileshare/tracker"
)

// statsBackend is a scripted Backend that also serves the stats pages and
// full scrape, counting how often it is asked.
type statsBackend struct {
	scripted
	totals      tracker.Totals
	rows        []tracker.ScrapeRow
	scrapeErr   error
	totalsCalls atomic.Int32
	fullCalls   atomic.Int32
}

func (s *statsBackend) Totals(context.Context) (tracker.Totals, error) {
	s.totalsCalls.Add(1)
	return s.totals, nil
}

func (s *statsBackend) FullScrape(_ context.Context, dst []tracker.ScrapeRow, max int) ([]tracker.ScrapeRow, error) {
	s.fullCalls.Add(1)
	if s.scrapeErr != nil {
		return dst, s.scrapeErr
	}
	if len(s.rows) > max {
		return dst, tracker.ErrFullScrapeTooLarge
	}
	return append(dst, s.rows...), nil
}

func hashOf(b byte) tracker.InfoHash {
	var h tracker.InfoHash
	for i := range h {
		h[i] = b
	}
	return h
}

func get(t *testing.T, h http.Handler, target string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest("GET", target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// The stats pages show the backend's totals, as JSON and as HTML.
func TestStatsPagesShowTheBackendsTotals(t *testing.T) {
	b := &statsBackend{totals: tracker.Totals{Mode: "open", Torrents: 3, Peers: 7, Seeders: 2, Leechers: 5, Completed: 11, Announces: 40}}
	h := tracker.NewHTTPHandler(b, tracker.HTTPConfig{})
	w := get(t, h, "/stats.json")
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("/stats.json: status %d, type %q; want 200 application/json", w.Code, w.Header().Get("Content-Type"))
	}
	var s tracker.StatsJSON
	if err := json.Unmarshal(w.Body.Bytes(), &s); err != nil {
		t.Fatalf("/stats.json is not JSON: %v: %s", err, w.Body)
	}
	if s.Mode != "open" || s.Torrents != 3 || s.Peers != 7 || s.Seeders != 2 || s.Leechers != 5 || s.Completed != 11 {
		t.Errorf("/stats.json = %+v, want the backend's totals", s)
	}
	if s.AnnouncesScope == "" {
		t.Errorf("/stats.json does not say whose announces per second it shows: %s", w.Body)
	}
	w = get(t, h, "/stats")
	body := w.Body.String()
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("/stats: status %d, type %q; want 200 text/html", w.Code, w.Header().Get("Content-Type"))
	}
	for _, want := range []string{`id="torrents">3<`, `id="peers">7<`, `id="seeders">2<`, `id="leechers">5<`, `id="completed">11<`, `id="mode">open<`} {
		if !strings.Contains(body, want) {
			t.Errorf("/stats lacks %q:\n%s", want, body)
		}
	}
	if n := b.totalsCalls.Load(); n != 1 {
		t.Errorf("two pages within StatsTTL asked the backend %d times, want once", n)
	}
}

// Announces per second come from the growth of the backend's cumulative
// announce count between two computations of the page.
func TestStatsAnnounceRate(t *testing.T) {
	b := &statsBackend{totals: tracker.Totals{Mode: "open"}}
	h := tracker.NewHTTPHandler(b, tracker.HTTPConfig{})
	get(t, h, "/stats.json")
	b.totals.Announces = 1_000_000
	var s tracker.StatsJSON
	// Poll past StatsTTL: the next computation sees the growth.
	poll.Until(t, 10*time.Second, "announces per second above zero", func() bool {
		if err := json.Unmarshal(get(t, h, "/stats.json").Body.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		return s.AnnouncesPerS > 0
	})
	if s.AnnouncesPerS <= 0 || s.AnnounceWindowS <= 0 {
		t.Errorf("rate %v over %v s, want > 0", s.AnnouncesPerS, s.AnnounceWindowS)
	}
}

func decodeFiles(t *testing.T, body []byte) map[string]any {
	t.Helper()
	v, err := tracker.DecodeBencode(body)
	if err != nil {
		t.Fatalf("full scrape is not bencode: %v: %q", err, body)
	}
	d, _ := v.(map[string]any)
	if fr, ok := d["failure reason"]; ok {
		t.Fatalf("full scrape failed: %v", fr)
	}
	files, ok := d["files"].(map[string]any)
	if !ok {
		t.Fatalf("full scrape has no files dictionary: %q", body)
	}
	return files
}

// A full scrape lists every swarm, gzip-compressed for a client that
// accepts it, and one build serves every request within FullScrapeTTL.
func TestFullScrapeGzipAndCached(t *testing.T) {
	b := &statsBackend{rows: []tracker.ScrapeRow{
		{InfoHash: hashOf(9), ScrapeEntry: tracker.ScrapeEntry{Complete: 1, Incomplete: 2, Downloaded: 3}},
		{InfoHash: hashOf(1), ScrapeEntry: tracker.ScrapeEntry{Complete: 4, Incomplete: 5, Downloaded: 6}},
	}}
	h := tracker.NewHTTPHandler(b, tracker.HTTPConfig{})
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			r := httptest.NewRequest("GET", "/scrape", nil)
			r.Header.Set("Accept-Encoding", "gzip")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
		})
	}
	wg.Wait()
	if n := b.fullCalls.Load(); n != 1 {
		t.Errorf("50 concurrent full scrapes built it %d times, want once", n)
	}
	w := get(t, h, "/scrape", "Accept-Encoding", "br, gzip;q=0.8")
	if w.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q, want gzip", w.Header().Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(w.Body.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	files := decodeFiles(t, plain)
	h1, h9 := hashOf(1), hashOf(9)
	e, _ := files[string(h1[:])].(map[string]any)
	if len(files) != 2 || e["complete"] != int64(4) || e["incomplete"] != int64(5) || e["downloaded"] != int64(6) {
		t.Errorf("full scrape files = %v, want both swarms with their counts", files)
	}
	if !bytes.Contains(plain, append([]byte("20:"), h1[:]...)) || bytes.Index(plain, h1[:]) > bytes.Index(plain, h9[:]) {
		t.Errorf("full scrape keys are not sorted: %q", plain)
	}
	// Without gzip: the same, plain.
	w = get(t, h, "/scrape?", "Accept-Encoding", "gzip;q=0")
	if w.Header().Get("Content-Encoding") != "" || !bytes.Equal(w.Body.Bytes(), plain) {
		t.Errorf("a client refusing gzip got encoding %q, body %q; want plain %q", w.Header().Get("Content-Encoding"), w.Body, plain)
	}
	if n := b.fullCalls.Load(); n != 1 {
		t.Errorf("full scrapes within FullScrapeTTL built it %d times, want once", n)
	}
	// A scrape naming a hash (even with an escaped key) is not a full scrape.
	b.entries = []tracker.ScrapeEntry{{Complete: 1}}
	w = get(t, h, "/scrape?info%5Fhash="+strings.Repeat("%01", 20))
	if f := decodeFiles(t, w.Body.Bytes()); len(f) != 1 {
		t.Errorf("scrape by info_hash answered %d files, want 1", len(f))
	}
}

// In private mode, or beyond its size cap, a full scrape is refused with a
// failure reason, and the refusal is cached like a body.
func TestFullScrapeRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    *statsBackend
		cfg  tracker.HTTPConfig
		want string
	}{
		{"private", &statsBackend{scrapeErr: tracker.Refuse("full scrape is off on a private tracker")}, tracker.HTTPConfig{}, "private tracker"},
		{"too large", &statsBackend{rows: make([]tracker.ScrapeRow, 3)}, tracker.HTTPConfig{FullScrapeMax: 2}, "more than 2 torrents"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tracker.NewHTTPHandler(tc.b, tc.cfg)
			for range 3 {
				w := get(t, h, "/scrape", "Accept-Encoding", "gzip")
				v, err := tracker.DecodeBencode(w.Body.Bytes())
				d, _ := v.(map[string]any)
				if err != nil || !strings.Contains(d["failure reason"].(string), tc.want) {
					t.Fatalf("got %q (%v), want a failure reason with %q", w.Body, err, tc.want)
				}
			}
			if n := tc.b.fullCalls.Load(); n != 1 {
				t.Errorf("backend asked %d times, want once (the refusal is cached)", n)
			}
		})
	}
	// A backend without StatsBackend serves neither.
	h := tracker.NewHTTPHandler(&scripted{}, tracker.HTTPConfig{})
	if w := get(t, h, "/stats.json"); w.Code != http.StatusServiceUnavailable {
		t.Errorf("/stats.json from a plain Backend: status %d, want 503", w.Code)
	}
	if w := get(t, h, "/scrape"); !strings.Contains(w.Body.String(), "failure reason") {
		t.Errorf("full scrape from a plain Backend: %q, want a failure reason", w.Body)
	}
}

// FuzzFullScrapeQuery: deciding whether a scrape is a full one never
// panics, and a query with a plain info_hash never is one.
func FuzzFullScrapeQuery(f *testing.F) {
	f.Add("", "gzip")
	f.Add("info_hash=%01", "gzip;q=0, br")
	f.Add("info%5fhash=x&a=b", "x-gzip;q=0.5")
	h := tracker.NewHTTPHandler(&statsBackend{}, tracker.HTTPConfig{})
	f.Fuzz(func(t *testing.T, q, enc string) {
		r := httptest.NewRequest("GET", "/scrape", nil)
		r.URL.RawQuery = q
		r.Header.Set("Accept-Encoding", enc)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
	})
}
