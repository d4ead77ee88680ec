package btclient

import (
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"
	"time"

	"fileshare/tracker"
	"fileshare/tracker/trackertest"
)

// refusingBackend refuses every announce and scrape with a reason.
type refusingBackend struct{}

func (refusingBackend) Announce(context.Context, *tracker.AnnounceRequest) (*tracker.AnnounceReply, error) {
	return nil, tracker.Refuse("no swarms here")
}

func (refusingBackend) Scrape(context.Context, []tracker.InfoHash) ([]tracker.ScrapeEntry, error) {
	return nil, tracker.Refuse("no swarms here")
}

// serveUDP answers b's tracker over UDP on a loopback socket until the test
// ends and returns the socket's address.
func serveUDP(t *testing.T, b tracker.Backend) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := tracker.NewUDPServer(b, tracker.UDPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ctx, pc) }()
	t.Cleanup(func() { cancel(); pc.Close(); <-done })
	return pc.LocalAddr().String()
}

func peerID(s string) (id tracker.PeerID) { copy(id[:], s); return id }

// Both transports: a second peer learns the first from the tracker, the
// counts follow the events, and a completion shows in the scrape.
func TestAnnounceAndScrapeOverHTTPAndUDP(t *testing.T) {
	for _, transport := range []string{"http", "udp"} {
		t.Run(transport, func(t *testing.T) {
			b := new(trackertest.MemoryBackend)
			var announce func(Announce) (Response, error)
			var scrape func(...tracker.InfoHash) ([]tracker.ScrapeEntry, error)
			if transport == "http" {
				srv := httptest.NewServer(tracker.NewHTTPHandler(b, tracker.HTTPConfig{}))
				t.Cleanup(srv.Close)
				u := srv.URL + "/announce"
				announce = func(a Announce) (Response, error) { return AnnounceHTTP(t.Context(), srv.Client(), u, a) }
				scrape = func(h ...tracker.InfoHash) ([]tracker.ScrapeEntry, error) {
					return ScrapeHTTP(t.Context(), srv.Client(), u, h...)
				}
			} else {
				addr := serveUDP(t, b)
				c := &UDPClient{Retransmit: time.Second}
				announce = func(a Announce) (Response, error) { return c.Announce(t.Context(), addr, a) }
				scrape = func(h ...tracker.InfoHash) ([]tracker.ScrapeEntry, error) { return c.Scrape(t.Context(), addr, h...) }
			}
			ih := tracker.InfoHash{1, 2, 3}
			seed := Announce{InfoHash: ih, PeerID: peerID("-SEED-000000000000001"), Port: 6001, Event: tracker.EventStarted}
			if _, err := announce(seed); err != nil {
				t.Fatalf("seeder's started: %v", err)
			}
			leech := Announce{InfoHash: ih, PeerID: peerID("-LEECH-00000000000001"), Port: 6002, Left: 100, Event: tracker.EventStarted, Key: 7, HasKey: true}
			r, err := announce(leech)
			if err != nil {
				t.Fatalf("leecher's started: %v", err)
			}
			want := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:6001")}
			if !slices.Equal(r.Peers, want) || r.Complete != 1 || r.Incomplete != 1 || r.Interval <= 0 {
				t.Fatalf("leecher got %+v, want peers %v, 1 seeder, 1 leecher, an interval", r, want)
			}
			leech.Event, leech.Left, leech.Downloaded = tracker.EventCompleted, 0, 100
			if _, err := announce(leech); err != nil {
				t.Fatalf("completed: %v", err)
			}
			got, err := scrape(ih, tracker.InfoHash{9})
			if err != nil {
				t.Fatalf("scrape: %v", err)
			}
			wantScrape := []tracker.ScrapeEntry{{Complete: 2, Downloaded: 1}, {}}
			if !slices.Equal(got, wantScrape) {
				t.Fatalf("scrape got %+v, want %+v", got, wantScrape)
			}
		})
	}
}

// A tracker's refusal reaches the caller word for word, as a FailureError.
func TestRefusalIsAFailureError(t *testing.T) {
	srv := httptest.NewServer(tracker.NewHTTPHandler(refusingBackend{}, tracker.HTTPConfig{}))
	defer srv.Close()
	a := Announce{InfoHash: tracker.InfoHash{1}, PeerID: peerID("-X-"), Port: 1}
	var fe *FailureError
	if _, err := AnnounceHTTP(t.Context(), srv.Client(), srv.URL+"/announce", a); !errors.As(err, &fe) || fe.Reason != "no swarms here" {
		t.Fatalf("HTTP announce to a refusing tracker: %v, want FailureError \"no swarms here\"", err)
	}
	c := &UDPClient{Retransmit: time.Second}
	if _, err := c.Announce(t.Context(), serveUDP(t, refusingBackend{}), a); !errors.As(err, &fe) || fe.Reason != "no swarms here" {
		t.Fatalf("UDP announce to a refusing tracker: %v, want FailureError \"no swarms here\"", err)
	}
}

// A connection ID the tracker no longer takes (it restarted with another
// secret) costs a retransmit and a new connect, never an error.
func TestUDPReconnectsWhenTheTrackerDropsItsID(t *testing.T) {
	b := new(trackertest.MemoryBackend)
	first := serveUDP(t, b)
	c := &UDPClient{Retransmit: 200 * time.Millisecond}
	a := Announce{InfoHash: tracker.InfoHash{4}, PeerID: peerID("-A-"), Port: 1, Event: tracker.EventStarted}
	if _, err := c.Announce(t.Context(), first, a); err != nil {
		t.Fatal(err)
	}
	// Hand the same address's cached ID to a tracker with another secret.
	second := serveUDP(t, b)
	c.mu.Lock()
	c.ids[second] = c.ids[first]
	c.mu.Unlock()
	a.Event = tracker.EventNone
	if _, err := c.Announce(t.Context(), second, a); err != nil {
		t.Fatalf("announce with an ID the tracker does not take: %v, want a reconnect and an answer", err)
	}
}

// With nobody answering, the context bounds the wait.
func TestUDPGivesUpWithTheContext(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	var c UDPClient // BEP 15's 15 s retransmit: only the context can end it
	if _, err := c.Announce(ctx, pc.LocalAddr().String(), Announce{Port: 1}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("announce to a silent tracker: %v, want the context's deadline", err)
	}
}

func TestScrapeURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"http://h:1/announce", "http://h:1/scrape"},
		{"http://h:1/x/announce.php?k=v", "http://h:1/x/scrape.php?k=v"},
		{"http://h:1/abc/announce", "http://h:1/abc/scrape"},
		{"http://h:1/a", ""},
		{"http://h:1/announce/passkey", ""},
	} {
		got, err := ScrapeURL(tc.in)
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("ScrapeURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// Whatever a tracker sends, reading its HTTP reply never panics, and
// compact peers decode to whole entries only.
func FuzzDecodeAnnounce(f *testing.F) {
	f.Add([]byte("d8:completei1e10:incompletei0e8:intervali1800e5:peers6:\x7f\x00\x00\x01\x17\x70e"))
	f.Add([]byte("d5:peersld2:ip9:127.0.0.14:porti1eeee"))
	f.Add([]byte("d6:peers618:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01e"))
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := tracker.DecodeBencode(body)
		d, ok := v.(map[string]any)
		if err != nil || !ok {
			return
		}
		r, err := decodeAnnounce(d)
		if err == nil {
			for _, p := range r.Peers {
				if !p.IsValid() {
					t.Fatalf("invalid peer %v from %q", p, body)
				}
			}
		}
	})
}
