package btclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"fileshare/tracker"
)

// maxHTTPReply bounds how much of a tracker's HTTP reply is read.
const maxHTTPReply = 1 << 20

// AnnounceHTTP announces a to the tracker at announceURL (as written in a
// .torrent, e.g. "http://host:port/announce"), asking for compact peer
// lists. hc nil means http.DefaultClient. A refusal is a *FailureError.
func AnnounceHTTP(ctx context.Context, hc *http.Client, announceURL string, a Announce) (Response, error) {
	q := AppendAnnounceQuery(make([]byte, 0, 256), &a)
	d, err := httpGet(ctx, hc, withQuery(announceURL, string(q)))
	if err != nil {
		return Response{}, err
	}
	return decodeAnnounce(d)
}

// decodeAnnounce reads an announce reply's dictionary.
func decodeAnnounce(d map[string]any) (Response, error) {
	var r Response
	if v, ok := d["interval"].(int64); ok && v > 0 {
		r.Interval = time.Duration(v) * time.Second
	}
	c, _ := d["complete"].(int64)
	i, _ := d["incomplete"].(int64)
	r.Complete, r.Incomplete = int(c), int(i)
	for _, f := range []struct {
		key  string
		size int
	}{{"peers", 6}, {"peers6", 18}} {
		key, size := f.key, f.size
		switch v := d[key].(type) {
		case nil:
		case string:
			var ok bool
			if r.Peers, ok = compactPeers(r.Peers, []byte(v), size); !ok {
				return Response{}, fmt.Errorf("%w: %s holds %d bytes, not a multiple of %d", ErrMalformedReply, key, len(v), size)
			}
		case []any: // the non-compact form: a list of dictionaries
			for _, e := range v {
				p, _ := e.(map[string]any)
				ip, _ := p["ip"].(string)
				port, _ := p["port"].(int64)
				addr, err := netip.ParseAddr(ip)
				if err != nil || port <= 0 || port > 65535 {
					return Response{}, fmt.Errorf("%w: peer entry %v", ErrMalformedReply, e)
				}
				r.Peers = append(r.Peers, netip.AddrPortFrom(addr, uint16(port)))
			}
		default:
			return Response{}, fmt.Errorf("%w: %s is a %T", ErrMalformedReply, key, v)
		}
	}
	return r, nil
}

// ScrapeHTTP scrapes hashes from the tracker whose announce URL is
// announceURL, at the scrape URL BEP 48 derives from it (the last path
// segment's "announce" replaced by "scrape"). It returns one entry per
// hash, in order; a swarm the tracker does not list counts as empty.
func ScrapeHTTP(ctx context.Context, hc *http.Client, announceURL string, hashes ...tracker.InfoHash) ([]tracker.ScrapeEntry, error) {
	scrapeURL, err := ScrapeURL(announceURL)
	if err != nil {
		return nil, err
	}
	var q []byte
	for i, h := range hashes {
		if i > 0 {
			q = append(q, '&')
		}
		q = append(q, "info_hash="...)
		q = appendEscaped(q, h[:])
	}
	d, err := httpGet(ctx, hc, withQuery(scrapeURL, string(q)))
	if err != nil {
		return nil, err
	}
	files, _ := d["files"].(map[string]any)
	out := make([]tracker.ScrapeEntry, len(hashes))
	for i, h := range hashes {
		f, _ := files[string(h[:])].(map[string]any)
		c, _ := f["complete"].(int64)
		in, _ := f["incomplete"].(int64)
		dl, _ := f["downloaded"].(int64)
		out[i] = tracker.ScrapeEntry{Complete: int(c), Incomplete: int(in), Downloaded: int(dl)}
	}
	return out, nil
}

// ScrapeURL returns the scrape URL of a tracker's announce URL (BEP 48), or
// an error when the announce URL's last path segment does not start with
// "announce" (such a tracker offers no scrape).
func ScrapeURL(announceURL string) (string, error) {
	path, query, _ := strings.Cut(announceURL, "?")
	slash := strings.LastIndexByte(path, '/')
	if slash < 0 || !strings.HasPrefix(path[slash+1:], "announce") {
		return "", fmt.Errorf("btclient: %q has no scrape URL: its last path segment does not start with \"announce\"", announceURL)
	}
	s := path[:slash+1] + "scrape" + strings.TrimPrefix(path[slash+1:], "announce")
	if query != "" {
		s += "?" + query
	}
	return s, nil
}

func withQuery(u, q string) string {
	if strings.Contains(u, "?") {
		return u + "&" + q
	}
	return u + "?" + q
}

// httpGet fetches u and decodes its bencoded dictionary; a "failure reason"
// becomes a *FailureError.
func httpGet(ctx context.Context, hc *http.Client, u string) (map[string]any, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("btclient: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPReply+1))
	if err != nil {
		return nil, fmt.Errorf("btclient: read the reply of %s: %w", u, err)
	}
	if len(body) > maxHTTPReply {
		return nil, fmt.Errorf("%w: over %d bytes", ErrMalformedReply, maxHTTPReply)
	}
	v, err := tracker.DecodeBencode(body)
	d, ok := v.(map[string]any)
	if err != nil || !ok {
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("btclient: %s answered %s", u, resp.Status)
		}
		return nil, errors.Join(ErrMalformedReply, err)
	}
	if reason, ok := d["failure reason"].(string); ok {
		return nil, &FailureError{Reason: reason}
	}
	return d, nil
}

// appendEscaped percent-encodes b for a query string, leaving unreserved
// characters as they are.
func appendEscaped(dst, b []byte) []byte {
	const hexDigits = "0123456789ABCDEF"
	for _, c := range b {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '%', hexDigits[c>>4], hexDigits[c&15])
	}
	return dst
}

func eventName(e tracker.Event) string {
	switch e {
	case tracker.EventStarted:
		return "started"
	case tracker.EventCompleted:
		return "completed"
	case tracker.EventStopped:
		return "stopped"
	}
	return ""
}
