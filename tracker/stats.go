package tracker

import (
	"bytes"
	"context"
	"encoding/json"
	"html/template"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Totals are the counts the stats pages show. Every count but Announces
// comes from the replicated index, so every master that has applied the
// same log shows the same numbers.
type Totals struct {
	// Mode is the tracker mode: "open", "allowlist" or "private".
	Mode      string
	Torrents  int
	Peers     int
	Seeders   int
	Leechers  int
	Completed uint64
	// Announces counts the announces this master's front-ends (HTTP and
	// UDP) answered since it started: its own, not the cluster's. The
	// pages turn it into announces per second.
	Announces uint64
}

// ScrapeRow is one swarm in a full scrape.
type ScrapeRow struct {
	InfoHash InfoHash
	ScrapeEntry
}

// StatsBackend is an optional interface of a Backend that serves the stats
// pages (/stats, /stats.json) and full scrape (/scrape without
// info_hash). A Backend without it answers those paths with a failure.
// Both methods are called at most once per cache period (StatsTTL,
// FullScrapeTTL) however many requests arrive, never concurrently with
// themselves.
type StatsBackend interface {
	// Totals returns the counts over every swarm.
	Totals(ctx context.Context) (Totals, error)
	// FullScrape appends every swarm's counts to dst, in any order. If the
	// index holds more than max swarms it returns ErrFullScrapeTooLarge
	// (wrapped or not); a tracker whose swarms are not public (private
	// mode) returns a Refusal saying so.
	FullScrape(ctx context.Context, dst []ScrapeRow, max int) ([]ScrapeRow, error)
}

// Stats page limits.
const (
	// StatsTTL is how long one computation of the stats pages is served:
	// computing them scans every swarm, so a crowd of readers costs one
	// scan per StatsTTL.
	StatsTTL = time.Second
	// announceWindow is the span announces per second are averaged over
	// (longer if nobody asked for the stats page for a while).
	announceWindow = 10 * time.Second
)

// StatsJSON is the body of /stats.json.
type StatsJSON struct {
	Mode      string `json:"mode"`
	Torrents  int    `json:"torrents"`
	Peers     int    `json:"peers"`
	Seeders   int    `json:"seeders"`
	Leechers  int    `json:"leechers"`
	Completed uint64 `json:"completed"`
	// AnnouncesPerS is this master's own rate (HTTP and UDP announces it
	// answered), averaged over AnnounceWindowS seconds; the other fields
	// are the cluster's replicated counts.
	AnnouncesPerS   float64 `json:"announces_per_s"`
	AnnouncesScope  string  `json:"announces_per_s_scope"`
	AnnounceWindowS float64 `json:"announces_window_s"`
	AsOf            string  `json:"as_of"`
}

// statsPage caches the rendered stats pages for StatsTTL.
type statsPage struct {
	cache *ttlCache[statsBody]
	mu    sync.Mutex // guards ring
	ring  [8]announceSample
	n     int // samples in ring, newest at (n-1)%len
}

type announceSample struct {
	at time.Time
	n  uint64
}

type statsBody struct {
	json, html []byte
	reason     string // a failure reason instead, if non-empty
}

func newStatsPage() *statsPage { return &statsPage{cache: newTTLCache[statsBody](StatsTTL)} }

// rate records a sample and returns announces per second over the span
// from the oldest kept sample that is at least announceWindow old (or the
// oldest there is), and that span.
func (p *statsPage) rate(now time.Time, n uint64) (perS float64, window time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Keep one sample per second at most, so the ring spans ≥ 8 s.
	if p.n == 0 || now.Sub(p.ring[(p.n-1)%len(p.ring)].at) >= time.Second {
		p.ring[p.n%len(p.ring)] = announceSample{now, n}
		p.n++
	}
	base := p.ring[0]
	if p.n > len(p.ring) {
		base = p.ring[p.n%len(p.ring)]
	}
	// Prefer the newest sample that is at least announceWindow old.
	for i := 0; i < min(p.n, len(p.ring)); i++ {
		s := p.ring[(p.n-1-i)%len(p.ring)]
		if now.Sub(s.at) >= announceWindow {
			base = s
			break
		}
	}
	window = now.Sub(base.at)
	if window <= 0 || n < base.n {
		return 0, window
	}
	return float64(n-base.n) / window.Seconds(), window
}

// get returns the pages, computing them if the cached ones are older than
// StatsTTL.
func (p *statsPage) get(ctx context.Context, b Backend) (*statsBody, error) {
	return p.cache.get(ctx, func(at time.Time) (*statsBody, error) { return p.build(ctx, b, at) })
}

// build computes the pages as of at, or the reason they are refused.
func (p *statsPage) build(ctx context.Context, b Backend, at time.Time) (*statsBody, error) {
	c := &statsBody{}
	sb, ok := b.(StatsBackend)
	if !ok {
		c.reason = "this tracker does not serve statistics"
		return c, nil
	}
	t, err := sb.Totals(ctx)
	if err != nil {
		if reason, refusal := ReasonOf(err); refusal {
			c.reason = reason
			return c, nil
		}
		return nil, err
	}
	perS, window := p.rate(at, t.Announces)
	s := StatsJSON{
		Mode: t.Mode, Torrents: t.Torrents, Peers: t.Peers, Seeders: t.Seeders, Leechers: t.Leechers,
		Completed: t.Completed, AnnouncesPerS: float64(int64(perS*10+0.5)) / 10,
		AnnouncesScope:  "this master (HTTP and UDP)",
		AnnounceWindowS: float64(window.Round(100*time.Millisecond)) / float64(time.Second),
		AsOf:            at.UTC().Format(time.RFC3339),
	}
	if c.json, err = json.Marshal(s); err != nil {
		return nil, err
	}
	c.json = append(c.json, '\n')
	var buf bytes.Buffer
	if err := statsHTML.Execute(&buf, s); err != nil {
		return nil, err
	}
	c.html = buf.Bytes()
	return c, nil
}

// statsHTML is the /stats page: plain HTML, no script, refreshed every 10 s.
var statsHTML = template.Must(template.New("stats").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="10">
<title>Tracker statistics</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:.3em 1em;text-align:left;border-bottom:1px solid #ccc}td.n{text-align:right;font-variant-numeric:tabular-nums}</style>
</head><body>
<h1>Tracker statistics</h1>
<table>
<tr><th>Mode</th><td class="n" id="mode">{{.Mode}}</td></tr>
<tr><th>Torrents</th><td class="n" id="torrents">{{.Torrents}}</td></tr>
<tr><th>Peers</th><td class="n" id="peers">{{.Peers}}</td></tr>
<tr><th>Seeders</th><td class="n" id="seeders">{{.Seeders}}</td></tr>
<tr><th>Leechers</th><td class="n" id="leechers">{{.Leechers}}</td></tr>
<tr><th>Completed downloads</th><td class="n" id="completed">{{.Completed}}</td></tr>
<tr><th>Announces per second (this master)</th><td class="n" id="announces">{{printf "%.1f" .AnnouncesPerS}}</td></tr>
</table>
<p>Counts come from the replicated index and are the same on every master; announces per second are this master's own, over the last {{printf "%.0f" .AnnounceWindowS}} s. As of {{.AsOf}}. Also as <a href="/stats.json">JSON</a>.</p>
</body></html>
`))

// serveStats answers /stats and /stats.json.
func (h *HTTPHandler) serveStats(w http.ResponseWriter, r *http.Request, asJSON bool) {
	ctx, cancel := context.WithTimeout(r.Context(), BackendTimeout)
	defer cancel()
	c, err := h.statsPage.get(ctx, h.b)
	hdr := w.Header()
	if err != nil || c.reason != "" {
		reason := "the tracker could not compute its statistics right now; retry later"
		if err == nil {
			reason = c.reason
		} else {
			h.cfg.Logger.Error("tracker: stats failed", "err", err)
		}
		hdr.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(reason + "\n"))
		return
	}
	body := c.html
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	if asJSON {
		body = c.json
		hdr.Set("Content-Type", "application/json")
	}
	hdr.Set("Cache-Control", "max-age=1")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}
