package tracker

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Full scrape limits. A full scrape entry is about 70 bytes bencoded and
// 30 gzip-compressed (the info-hash does not compress), so the cached
// bodies of a full scrape at the cap take about 10 MiB, and building one
// costs one scan of the index per FullScrapeTTL however many clients ask.
const (
	// FullScrapeTTL is how long a full scrape is served from the cache.
	FullScrapeTTL = 5 * time.Second
	// DefaultFullScrapeMax is the most swarms a full scrape lists when
	// HTTPConfig.FullScrapeMax is zero; a tracker holding more refuses
	// full scrape (clients scrape by info_hash instead).
	DefaultFullScrapeMax = 100_000
)

// ErrFullScrapeTooLarge is what a StatsBackend returns from FullScrape
// when the index holds more swarms than the caller's max.
var ErrFullScrapeTooLarge = errors.New("tracker: too many swarms for a full scrape")

// fullScrape caches the full scrape body, plain and gzip-compressed.
type fullScrape struct {
	max   int
	cache *ttlCache[fullScrapeBody]
}

type fullScrapeBody struct {
	plain    []byte
	gz       []byte
	reason   string // a failure reason instead, if non-empty
	nTorrent int
}

func newFullScrape(max int) *fullScrape {
	if max <= 0 {
		max = DefaultFullScrapeMax
	}
	return &fullScrape{max: max, cache: newTTLCache[fullScrapeBody](FullScrapeTTL)}
}

// get returns the full scrape, building it if the cached one is older than
// FullScrapeTTL. A refusal is cached like a body, so a stranger asking
// again and again costs nothing more.
func (fs *fullScrape) get(ctx context.Context, b Backend) (*fullScrapeBody, error) {
	return fs.cache.get(ctx, func(time.Time) (*fullScrapeBody, error) { return fs.build(ctx, b) })
}

// build makes the full scrape body, or the reason it is refused.
func (fs *fullScrape) build(ctx context.Context, b Backend) (*fullScrapeBody, error) {
	c := &fullScrapeBody{}
	sb, ok := b.(StatsBackend)
	if !ok {
		c.reason = "this tracker does not serve full scrapes; scrape by info_hash"
		return c, nil
	}
	rows, err := sb.FullScrape(ctx, nil, fs.max)
	switch {
	case errors.Is(err, ErrFullScrapeTooLarge):
		c.reason = "this tracker holds more than " + strconv.Itoa(fs.max) + " torrents, too many for a full scrape; scrape by info_hash"
	case err != nil:
		reason, refusal := ReasonOf(err)
		if !refusal {
			return nil, err
		}
		c.reason = reason
	default:
		slices.SortFunc(rows, func(a, b ScrapeRow) int { return compareHash(&a.InfoHash, &b.InfoHash) })
		rows = slices.CompactFunc(rows, func(a, b ScrapeRow) bool { return a.InfoHash == b.InfoHash })
		c.nTorrent = len(rows)
		c.plain = appendFullScrape(make([]byte, 0, 16+70*len(rows)), rows)
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
		zw.Write(c.plain)
		zw.Close()
		c.gz = gz.Bytes()
	}
	return c, nil
}

// appendFullScrape encodes a scrape reply listing rows, which are sorted
// by info-hash and unique.
func appendFullScrape(buf []byte, rows []ScrapeRow) []byte {
	buf = append(buf, "d5:filesd"...)
	for i := range rows {
		buf = appendScrapeFile(buf, &rows[i].InfoHash, &rows[i].ScrapeEntry)
	}
	return append(buf, "ee"...)
}

// appendScrapeFile encodes one entry of a scrape reply's files dictionary:
// the 20-byte info-hash key, then its counts. It is the one encoder for both
// the keyed scrape (http.go) and the full scrape.
func appendScrapeFile(buf []byte, h *InfoHash, e *ScrapeEntry) []byte {
	buf = append(buf, "20:"...)
	buf = append(buf, h[:]...)
	// Keys in ascending order: complete, downloaded, incomplete.
	buf = append(buf, "d8:complete"...)
	buf = AppendBencodeInt(buf, int64(e.Complete))
	buf = append(buf, "10:downloaded"...)
	buf = AppendBencodeInt(buf, int64(e.Downloaded))
	buf = append(buf, "10:incomplete"...)
	buf = AppendBencodeInt(buf, int64(e.Incomplete))
	return append(buf, 'e')
}

// isFullScrape reports whether rawQuery names no info_hash: a full scrape.
func isFullScrape(rawQuery string) bool {
	var kbuf [32]byte
	found := errors.New("found")
	err := eachPair(rawQuery, func(rawKey, _ string) error {
		if key, ok := unescape(kbuf[:0], rawKey); ok && string(key) == "info_hash" {
			return found
		}
		return nil
	})
	return err == nil
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip.
func acceptsGzip(h string) bool {
	for part := range strings.SplitSeq(h, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
			continue
		}
		params = strings.ReplaceAll(params, " ", "")
		if q, ok := strings.CutPrefix(params, "q="); ok {
			if v, err := strconv.ParseFloat(q, 64); err == nil && v == 0 {
				return false
			}
		}
		return true
	}
	return false
}

// serveFullScrape answers /scrape without info_hash.
func (h *HTTPHandler) serveFullScrape(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), BackendTimeout)
	defer cancel()
	c, err := h.fullScrape.get(ctx, h.b)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/plain")
	hdr.Set("Vary", "Accept-Encoding")
	var body []byte
	switch {
	case err != nil:
		h.fail(nil, err)
		body = AppendBencodeFailure(nil, "the tracker could not list its torrents right now; retry later")
	case c.reason != "":
		h.stats.Failures.Add(1)
		body = AppendBencodeFailure(nil, c.reason)
	default:
		h.stats.Scrapes.Add(1)
		body = c.plain
		if acceptsGzip(r.Header.Get("Accept-Encoding")) {
			body = c.gz
			hdr.Set("Content-Encoding", "gzip")
		}
		hdr.Set("Cache-Control", "max-age="+strconv.Itoa(int(FullScrapeTTL/time.Second)))
	}
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// serveExtra answers the paths beside announce and scrape: the stats pages
// and full scrape. It reports whether it answered.
func (h *HTTPHandler) serveExtra(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	switch r.URL.Path {
	case "/stats":
		h.serveStats(w, r, false)
	case "/stats.json":
		h.serveStats(w, r, true)
	case "/scrape":
		if !isFullScrape(r.URL.RawQuery) {
			return false
		}
		h.serveFullScrape(w, r)
	default:
		return false
	}
	return true
}
