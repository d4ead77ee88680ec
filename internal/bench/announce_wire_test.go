package bench

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"testing"

	"fileshare/btclient"
	"fileshare/tracker"
)

func testParams() *btclient.Announce {
	p := &btclient.Announce{Port: 6881, Left: 12345, Event: tracker.EventStarted, Key: 0xbeef, HasKey: true, NumWant: 50}
	for i := range p.InfoHash {
		// Every kind of byte: controls, '%', '+', '&', '=', space, high.
		p.InfoHash[i] = []byte{0, '%', '+', '&', '=', ' ', 0x7f, 0x80, 0xff, 'a', '~', '.', '-', '_', '/', '?', '#', 1, 2, 3}[i]
		p.PeerID[i] = byte(255 - i)
	}
	return p
}

// The HTTP announce carries the raw 20-byte info_hash and peer_id intact
// through %XX escapes, and every parameter a tracker needs.
func TestHTTPAnnounceCarriesRawBytesAndEveryParameter(t *testing.T) {
	p := testParams()
	raw := appendHTTPAnnounce(nil, "127.0.0.1:6969", "/announce", p)
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("the request does not parse as HTTP: %v\n%s", err, raw)
	}
	if req.Method != "GET" || req.URL.Path != "/announce" || req.Host != "127.0.0.1:6969" || req.Close {
		t.Fatalf("got %s %s host %q close=%v, want a keep-alive GET /announce to 127.0.0.1:6969", req.Method, req.URL.Path, req.Host, req.Close)
	}
	for _, c := range req.URL.RawQuery {
		if c == '+' || c == ' ' || c > 0x7e {
			t.Fatalf("query %q holds %q, which trackers read differently; want it escaped", req.URL.RawQuery, c)
		}
	}
	q, err := url.ParseQuery(req.URL.RawQuery)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"info_hash": string(p.InfoHash[:]), "peer_id": string(p.PeerID[:]), "port": "6881",
		"left": "12345", "uploaded": "0", "downloaded": "0", "compact": "1", "numwant": "50",
		"event": "started", "key": "beef",
	}
	for k, v := range want {
		if got := q.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	p.Event = tracker.EventNone
	raw = appendHTTPAnnounce(nil, "h:1", "/announce", p)
	if bytes.Contains(raw, []byte("event=")) {
		t.Errorf("a re-announce sends an event parameter: %s", raw)
	}
}
