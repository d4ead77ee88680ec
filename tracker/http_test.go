package tracker_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"fileshare/internal/poll"
	"fileshare/tracker"
)

// scripted is a Backend that records what it is asked and answers what
// the test set.
type scripted struct {
	mu      sync.Mutex
	last    tracker.AnnounceRequest
	hashes  []tracker.InfoHash
	reply   tracker.AnnounceReply
	entries []tracker.ScrapeEntry
	err     error
}

func (s *scripted) Announce(ctx context.Context, req *tracker.AnnounceRequest) (*tracker.AnnounceReply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = *req
	if s.err != nil {
		return nil, s.err
	}
	r := s.reply
	return &r, nil
}

func (s *scripted) Scrape(ctx context.Context, hashes []tracker.InfoHash) ([]tracker.ScrapeEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hashes = append([]tracker.InfoHash(nil), hashes...)
	if s.err != nil {
		return nil, s.err
	}
	return s.entries[:len(hashes)], nil
}

var fixedIntervals = tracker.Config{Intervals: tracker.Intervals{Interval: 1800 * time.Second, MinInterval: 900 * time.Second}}

var goldenPeers = []tracker.Peer{
	{ID: tracker.PeerID([]byte(strings.Repeat("A", 20))), Addr: netip.MustParseAddrPort("10.0.0.1:6881")},
	{ID: tracker.PeerID([]byte(strings.Repeat("B", 20))), Addr: netip.MustParseAddrPort("[2001:db8::1]:51413")},
	{ID: tracker.PeerID([]byte(strings.Repeat("C", 20))), Addr: netip.MustParseAddrPort("[::ffff:10.0.0.3]:7000")},
}

const replyHead = "d8:completei2e10:incompletei3e8:intervali1800e12:min intervali900e"

// Golden replies: the exact bytes a client gets for each reply form.
func TestHTTPGoldenReplies(t *testing.T) {
	ih := escapeAll(hash20, false)
	v6 := "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\xc8\xd5"
	for _, tc := range []struct {
		name, target, want string
		status             int
	}{
		{"compact splits peers and peers6", "/announce?" + baseQuery(ih) + "&compact=1",
			replyHead + "5:peers12:\x0a\x00\x00\x01\x1a\xe1\x0a\x00\x00\x03\x1b\x58" + "6:peers618:" + v6 + "e", 200},
		{"compact is the default", "/announce?" + baseQuery(ih),
			replyHead + "5:peers12:\x0a\x00\x00\x01\x1a\xe1\x0a\x00\x00\x03\x1b\x58" + "6:peers618:" + v6 + "e", 200},
		{"numwant cuts the list", "/announce?" + baseQuery(ih) + "&numwant=1",
			replyHead + "5:peers6:\x0a\x00\x00\x01\x1a\xe1e", 200},
		{"non-compact", "/announce?" + baseQuery(ih) + "&compact=0",
			replyHead + "5:peersl" +
				"d2:ip8:10.0.0.17:peer id20:" + strings.Repeat("A", 20) + "4:porti6881ee" +
				"d2:ip11:2001:db8::17:peer id20:" + strings.Repeat("B", 20) + "4:porti51413ee" +
				"d2:ip8:10.0.0.37:peer id20:" + strings.Repeat("C", 20) + "4:porti7000ee" +
				"ee", 200},
		{"non-compact without peer ids", "/announce?" + baseQuery(ih) + "&compact=0&no_peer_id=1",
			replyHead + "5:peersl" +
				"d2:ip8:10.0.0.14:porti6881ee" + "d2:ip11:2001:db8::14:porti51413ee" + "d2:ip8:10.0.0.34:porti7000ee" +
				"ee", 200},
		{"refusal is a 200 failure", "/announce?" + baseQuery(ih[:6]),
			"d14:failure reason58:info_hash must be exactly 20 bytes after unescaping; got 2e", 200},
		{"missing port", "/announce?info_hash=" + ih + "&peer_id=" + peer20 + "&left=0",
			"d14:failure reason59:missing port: the TCP port this peer accepts connections one", 200},
		{"other paths are 404", "/announce.php?" + baseQuery(ih),
			"d14:failure reason55:no such path: this tracker serves /announce and /scrapee", 404},
		// A full scrape; this Backend serves none (see stats_test.go).
		{"scrape without hash", "/scrape",
			"d14:failure reason61:this tracker does not serve full scrapes; scrape by info_hashe", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &scripted{reply: tracker.AnnounceReply{Complete: 2, Incomplete: 3, Peers: goldenPeers}}
			h := tracker.NewHTTPHandler(b, tracker.HTTPConfig{Config: fixedIntervals})
			r := httptest.NewRequest("GET", tc.target, nil)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.status || w.Body.String() != tc.want {
				t.Errorf("got %d %q\nwant %d %q", w.Code, w.Body.String(), tc.status, tc.want)
			}
		})
	}
}

func TestHTTPScrapeMultiHash(t *testing.T) {
	b := &scripted{entries: []tracker.ScrapeEntry{{Complete: 1, Incomplete: 2, Downloaded: 3}, {Complete: 4, Incomplete: 5, Downloaded: 6}}}
	h := tracker.NewHTTPHandler(b, tracker.HTTPConfig{})
	hi, lo := strings.Repeat("\xff", 20), strings.Repeat("a", 20)
	// Given high first and repeated: the reply's keys are sorted and unique.
	r := httptest.NewRequest("GET", "/scrape?info_hash="+escapeAll(hi, false)+"&info_hash="+lo+"&info_hash="+escapeAll(hi, true), nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	want := "d5:filesd20:" + lo + "d8:completei1e10:downloadedi3e10:incompletei2ee" +
		"20:" + hi + "d8:completei4e10:downloadedi6e10:incompletei5eeee"
	if w.Body.String() != want {
		t.Errorf("got %q\nwant %q", w.Body.String(), want)
	}
	if len(b.hashes) != 2 || string(b.hashes[0][:]) != lo {
		t.Errorf("backend asked for %x, want the two distinct hashes sorted", b.hashes)
	}
	if _, err := tracker.DecodeBencode(w.Body.Bytes()); err != nil {
		t.Errorf("scrape reply is not canonical bencode: %v", err)
	}
}

// The backend sees the request's source IP (IPv4-mapped unmapped), never
// the ip parameter; its errors reach the client as a generic reason unless
// they are Refusals.
func TestHTTPSourceAddressAndBackendErrors(t *testing.T) {
	b := &scripted{}
	h := tracker.NewHTTPHandler(b, tracker.HTTPConfig{})
	r := httptest.NewRequest("GET", "/announce?"+baseQuery(escapeAll(hash20, false))+"&ip=203.0.113.1", nil)
	r.RemoteAddr = "[::ffff:198.51.100.4]:40000"
	h.ServeHTTP(httptest.NewRecorder(), r)
	if want := netip.MustParseAddrPort("198.51.100.4:6881"); b.last.Addr != want {
		t.Errorf("backend saw addr %v, want %v", b.last.Addr, want)
	}

	b.err = errors.New("raft: leadership lost while committing")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if body := w.Body.String(); strings.Contains(body, "raft") || !strings.HasPrefix(body, "d14:failure reason") {
		t.Errorf("backend error leaked or not a failure: %q", body)
	}
	b.err = tracker.Refuse("torrent not allowed here")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if want := "d14:failure reason24:torrent not allowed heree"; w.Body.String() != want {
		t.Errorf("refusal: got %q, want %q", w.Body.String(), want)
	}
	st := h.Stats()
	if st.Announces.Load() != 1 || st.Failures.Load() != 2 || st.BackendErrors.Load() != 1 {
		t.Errorf("stats: announces %d failures %d backend errors %d, want 1 2 1", st.Announces.Load(), st.Failures.Load(), st.BackendErrors.Load())
	}
}

// Each reply's interval is Interval ± Jitter, and they are not all equal.
func TestHTTPIntervalJitter(t *testing.T) {
	cfg := tracker.Config{Intervals: tracker.Intervals{Interval: 1000 * time.Second, MinInterval: 100 * time.Second, Jitter: 200 * time.Second}}
	h := tracker.NewHTTPHandler(&scripted{}, tracker.HTTPConfig{Config: cfg})
	seen := map[int64]bool{}
	for range 50 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/announce?"+baseQuery(escapeAll(hash20, false)), nil))
		v, err := tracker.DecodeBencode(w.Body.Bytes())
		if err != nil {
			t.Fatalf("reply %q: %v", w.Body.String(), err)
		}
		d := v.(map[string]any)
		iv := d["interval"].(int64)
		if iv < 800 || iv > 1200 || d["min interval"].(int64) != 100 {
			t.Fatalf("interval %d, min interval %v; want 800..1200 and 100", iv, d["min interval"])
		}
		seen[iv] = true
	}
	if len(seen) < 2 {
		t.Errorf("50 replies all had interval %v; want jitter", seen)
	}
}

func startHTTP(t *testing.T, b tracker.Backend, cfg tracker.HTTPConfig) (*tracker.HTTPServer, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := tracker.NewHTTPServer(b, cfg)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return s, ln.Addr().String()
}

// ctorrent sends HTTP/1.0 without a Host header; it must get its reply.
func TestHTTP10WithoutHost(t *testing.T) {
	b := &scripted{reply: tracker.AnnounceReply{Complete: 1, Peers: goldenPeers[:1]}}
	_, addr := startHTTP(t, b, tracker.HTTPConfig{Config: fixedIntervals})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// Bytes 0x80 and up left literal, as some clients send them, must pass
	// net/http's request-line parsing untouched.
	io.WriteString(c, "GET /announce?"+baseQuery("%12%34%56%78\x9a\xbc\xde\xf0+%00ABCDEFGHIJ")+" HTTP/1.0\r\nUser-Agent: CTorrent\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	want := "d8:completei1e10:incompletei0e8:intervali1800e12:min intervali900e5:peers6:\x0a\x00\x00\x01\x1a\xe1e"
	if resp.StatusCode != 200 || string(body) != want {
		t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	if string(b.last.InfoHash[:]) != hash20 {
		t.Errorf("backend saw info_hash %q, want %q", b.last.InfoHash[:], hash20)
	}
	if b.last.Addr.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("backend saw %v, want the loopback source", b.last.Addr)
	}
}

// A source IP at its connection cap gets further connections closed at
// once, and gets a slot back when one of its connections closes.
func TestHTTPPerIPConnectionCap(t *testing.T) {
	s, addr := startHTTP(t, &scripted{}, tracker.HTTPConfig{MaxConnsPerIP: 1})
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	second.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := second.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second connection read %d bytes, %v; want it closed by the server", n, err)
	}
	poll.Until(t, 5*time.Second, "the refused connection counted as dropped", func() bool { return s.Stats().Dropped.Load() == 1 })
	first.Close()
	url := "http://" + addr + "/announce?" + baseQuery(escapeAll(hash20, false))
	poll.Until(t, 10*time.Second, "a new connection served after the first closed", func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.HasPrefix(string(body), "d8:complete")
	})
	http.DefaultClient.CloseIdleConnections()
}
