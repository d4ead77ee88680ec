package tracker_test

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"
	"testing"

	"fileshare/tracker"
)

// hash20 is a 20-byte value with bytes that need escaping, '+' (0x2B) and
// plain letters.
const hash20 = "\x12\x34\x56\x78\x9a\xbc\xde\xf0\x2b\x00ABCDEFGHIJ"

// escapeAll escapes every byte, with upper- or lower-case hex.
func escapeAll(s string, lower bool) string {
	f := "%%%02X"
	if lower {
		f = "%%%02x"
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, f, s[i])
	}
	return b.String()
}

var src = netip.MustParseAddr("192.0.2.7")

const peer20 = "-qB4520-abcdefghijkl"

func baseQuery(ih string) string {
	return "info_hash=" + ih + "&peer_id=" + peer20 + "&port=6881&uploaded=1&downloaded=2&left=3"
}

func fnv32(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// Every way real clients escape an info_hash gives the same 20 bytes, and
// '+' is the byte 0x2B, not a space.
func TestParseAnnounceEscapes(t *testing.T) {
	for name, ih := range map[string]string{
		"upper":   escapeAll(hash20, false),
		"lower":   escapeAll(hash20, true),
		"literal": "%124Vx%9A%bc%de%F0+%00ABCDEFGHIJ",
	} {
		req, _, err := tracker.ParseAnnounce(baseQuery(ih), src, nil)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if string(req.InfoHash[:]) != hash20 {
			t.Errorf("%s: info_hash %q, want %q", name, req.InfoHash[:], hash20)
		}
		if string(req.PeerID[:]) != peer20 {
			t.Errorf("%s: peer_id %q", name, req.PeerID[:])
		}
	}
}

func TestParseAnnounceFields(t *testing.T) {
	ih := escapeAll(hash20, false)
	req, format, err := tracker.ParseAnnounce(baseQuery(ih)+"&event=started&ip=203.0.113.9&numwant=20", src, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := tracker.AnnounceRequest{
		PeerID:   tracker.PeerID([]byte(peer20)),
		InfoHash: tracker.InfoHash([]byte(hash20)),
		Addr:     netip.AddrPortFrom(src, 6881), // the ip parameter is ignored
		Uploaded: 1, Downloaded: 2, Left: 3,
		Event:   tracker.EventStarted,
		NumWant: 20,
	}
	if req != want {
		t.Errorf("got %+v\nwant %+v", req, want)
	}
	if !format.Compact || format.NoPeerID {
		t.Errorf("format %+v, want compact by default", format)
	}
}

func TestParseAnnounceKeyForms(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want uint32
	}{
		{"DEADBEEF", 0xdeadbeef},
		{"deadbeef", 0xdeadbeef},
		{"12345678", 0x12345678}, // 8 hex digits win over decimal
		{"12345", 12345},
		{"-1", 0xffffffff},
		{"-2147483648", 0x80000000},
		{"4294967295", 0xffffffff},
		{"4294967296", fnv32("4294967296")},
		{"%01%02%03%04", fnv32("\x01\x02\x03\x04")},
		{"aBcXyZqW", fnv32("aBcXyZqW")},
		{"+7", 7},
	} {
		req, _, err := tracker.ParseAnnounce(baseQuery(escapeAll(hash20, false))+"&key="+tc.key, src, nil)
		if err != nil {
			t.Errorf("key=%s: %v", tc.key, err)
			continue
		}
		if !req.HasKey || req.Key != tc.want {
			t.Errorf("key=%s: got %#x (has %v), want %#x", tc.key, req.Key, req.HasKey, tc.want)
		}
	}
	req, _, _ := tracker.ParseAnnounce(baseQuery(escapeAll(hash20, false)), src, nil)
	if req.HasKey {
		t.Error("no key parameter, yet HasKey")
	}
}

func TestParseAnnounceNumWantAndFormat(t *testing.T) {
	q := baseQuery(escapeAll(hash20, false))
	for _, tc := range []struct {
		extra string
		cfg   *tracker.Config
		want  int
	}{
		{"", nil, 50},
		{"&numwant=500", nil, 200},
		{"&numwant=-1", nil, 50},
		{"&numwant=0", nil, 0},
		{"&numwant=80&event=stopped", nil, 0},
		{"&numwant=80", &tracker.Config{MaxNumWant: 30}, 30},
		{"", &tracker.Config{DefaultNumWant: 10}, 10},
		{"&numwant=7&event=paused", nil, 7},
	} {
		req, _, err := tracker.ParseAnnounce(q+tc.extra, src, tc.cfg)
		if err != nil || req.NumWant != tc.want {
			t.Errorf("%q: numwant %d, %v; want %d", tc.extra, req.NumWant, err, tc.want)
		}
	}
	_, f, _ := tracker.ParseAnnounce(q+"&compact=0&no_peer_id=1", src, nil)
	if f.Compact || !f.NoPeerID {
		t.Errorf("compact=0&no_peer_id=1: got %+v", f)
	}
}

// Each refusal names what is wrong, so the user can tell from the client's
// tracker status.
func TestParseAnnounceRefusals(t *testing.T) {
	ih := escapeAll(hash20, false)
	for _, tc := range []struct {
		q, want string
	}{
		{baseQuery(escapeAll(hash20[:19], false)), "info_hash must be exactly 20 bytes after unescaping; got 19"},
		{baseQuery(escapeAll(hash20+"x", false)), "info_hash must be exactly 20 bytes after unescaping; got more"},
		{baseQuery("%G1" + ih[3:]), "info_hash has a malformed %-escape"},
		{baseQuery(ih[:len(ih)-1]), "info_hash has a malformed %-escape"},
		{"peer_id=" + peer20 + "&port=1&left=0", "missing info_hash"},
		{"info_hash=" + ih + "&port=1&left=0", "missing peer_id"},
		{"info_hash=" + ih + "&peer_id=" + peer20 + "&left=0", "missing port"},
		{"info_hash=" + ih + "&peer_id=" + peer20 + "&port=1", "missing left"},
		{"info_hash=" + ih + "&peer_id=short&port=1&left=0", "peer_id must be exactly 20 bytes"},
		{strings.Replace(baseQuery(ih), "port=6881", "port=0", 1), "port must be a number from 1 to 65535"},
		{strings.Replace(baseQuery(ih), "port=6881", "port=65536", 1), "port must be a number from 1 to 65535"},
		{strings.Replace(baseQuery(ih), "port=6881", "port=http", 1), "port must be a number from 1 to 65535"},
		{strings.Replace(baseQuery(ih), "left=3", "left=-3", 1), "left must be an unsigned decimal number"},
		{baseQuery(ih) + "&event=begun", "event must be started, completed, stopped, empty or paused"},
		{baseQuery(ih) + "&numwant=lots", "numwant must be a decimal number"},
		{baseQuery(ih) + "&info_hash=" + ih, "info_hash given more than once"},
	} {
		_, _, err := tracker.ParseAnnounce(tc.q, src, nil)
		reason, refusal := tracker.ReasonOf(err)
		if err == nil || !refusal || !strings.HasPrefix(reason, tc.want) {
			t.Errorf("%q: got %v, want a refusal starting %q", tc.q, err, tc.want)
		}
	}
}

func TestParseScrape(t *testing.T) {
	a, b := escapeAll(hash20, false), escapeAll(strings.Repeat("z", 20), true)
	got, err := tracker.ParseScrape("info_hash="+a+"&x=1&info_hash="+b, nil)
	if err != nil || len(got) != 2 || string(got[0][:]) != hash20 || string(got[1][:]) != strings.Repeat("z", 20) {
		t.Errorf("two hashes: got %x, %v", got, err)
	}
	if _, err := tracker.ParseScrape("", nil); err == nil {
		t.Error("a scrape without info_hash was accepted; want a refusal (no full dump)")
	}
	if _, err := tracker.ParseScrape("info_hash=abc", nil); err == nil {
		t.Error("a 3-byte info_hash was accepted")
	}
	many := strings.Repeat("info_hash="+a+"&", tracker.MaxScrapeHashes+1)
	if _, err := tracker.ParseScrape(many, nil); err == nil {
		t.Errorf("%d hashes accepted; the limit is %d", tracker.MaxScrapeHashes+1, tracker.MaxScrapeHashes)
	}
}

// The parser never panics, and what it accepts is consistent: the source
// IP, a real port, numwant within the cap, and the same request again when
// re-encoded with every byte escaped.
func FuzzParseAnnounce(f *testing.F) {
	f.Add(baseQuery(escapeAll(hash20, false)) + "&key=-5&numwant=80&compact=0")
	f.Add(baseQuery("%124Vx%9A%bc%de%F0+%00ABCDEFGHIJ") + "&event=stopped")
	f.Add("info_hash=%&peer_id=&&=&port=99999")
	f.Fuzz(func(t *testing.T, q string) {
		req, format, err := tracker.ParseAnnounce(q, src, nil)
		if err != nil {
			if _, refusal := tracker.ReasonOf(err); !refusal {
				t.Fatalf("%q: error %v is not a Refusal", q, err)
			}
			return
		}
		if req.Addr.Addr() != src || req.Addr.Port() == 0 {
			t.Fatalf("%q: addr %v", q, req.Addr)
		}
		if req.NumWant < 0 || req.NumWant > tracker.MaxNumWant {
			t.Fatalf("%q: numwant %d", q, req.NumWant)
		}
		q2 := fmt.Sprintf("info_hash=%s&peer_id=%s&port=%d&uploaded=%d&downloaded=%d&left=%d&numwant=%d",
			escapeAll(string(req.InfoHash[:]), true), escapeAll(string(req.PeerID[:]), false),
			req.Addr.Port(), req.Uploaded, req.Downloaded, req.Left, req.NumWant)
		req2, _, err := tracker.ParseAnnounce(q2, src, nil)
		if err != nil {
			t.Fatalf("re-encoded %q: %v", q2, err)
		}
		req2.Event, req2.Key, req2.HasKey = req.Event, req.Key, req.HasKey
		if req.Event == tracker.EventStopped {
			req2.NumWant = 0
		}
		if req2 != req {
			t.Fatalf("round trip of %q: %+v became %+v", q, req, req2)
		}
		_ = format
	})
}
