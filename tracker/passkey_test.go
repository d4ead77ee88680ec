package tracker

import (
	"bytes"
	"testing"
)

const testKey = "0123456789abcdef0123456789ABCDEF"

func TestParseTrackerPath(t *testing.T) {
	want := Passkey{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}
	for _, tc := range []struct {
		path string
		ep   Endpoint
		st   PasskeyStatus
	}{
		{"/announce", EndpointAnnounce, PasskeyNone},
		{"/scrape", EndpointScrape, PasskeyNone},
		{"/" + testKey + "/announce", EndpointAnnounce, PasskeyOK},
		{"/announce/" + testKey, EndpointAnnounce, PasskeyOK},
		{"/" + testKey + "/scrape", EndpointScrape, PasskeyOK},
		{"/scrape/" + testKey, EndpointScrape, PasskeyOK},
		{"/" + testKey + "/announce?info_hash=x", EndpointAnnounce, PasskeyOK},
		{"/nothex/announce", EndpointAnnounce, PasskeyMalformed},
		{"/announce/" + testKey[:31], EndpointAnnounce, PasskeyMalformed},
		{"/announce/", EndpointAnnounce, PasskeyMalformed},
		{"/a/b/announce", EndpointUnknown, PasskeyNone},
		{"/" + testKey + "/other", EndpointUnknown, PasskeyNone},
		{"announce", EndpointUnknown, PasskeyNone},
		{"", EndpointUnknown, PasskeyNone},
		{"/", EndpointUnknown, PasskeyNone},
	} {
		ep, key, st := ParseTrackerPath(tc.path)
		if ep != tc.ep || st != tc.st || st == PasskeyOK && key != want || st != PasskeyOK && key != (Passkey{}) {
			t.Errorf("ParseTrackerPath(%q) = %v, %x, %v; want %v, status %v", tc.path, ep, key, st, tc.ep, tc.st)
		}
	}
}

// A passkey split over several BEP 41 URLData options is put back
// together; options after EndOfOptions are ignored.
func TestBEP41PasskeySplitOverOptions(t *testing.T) {
	path := "/" + testKey + "/announce"
	opts := []byte{0x1, 0x2, 10}
	opts = append(opts, path[:10]...)
	opts = append(opts, 0x2, byte(len(path)-10))
	opts = append(opts, path[10:]...)
	opts = append(opts, 0x0, 0x2, 3, 'x', 'y', 'z')
	var buf [256]byte
	got, ok := parseURLData(buf[:0], opts)
	if !ok || string(got) != path {
		t.Fatalf("parseURLData = %q, %v; want %q", got, ok, path)
	}
	if ep, _, st := parseTrackerPath(got); ep != EndpointAnnounce || st != PasskeyOK {
		t.Fatalf("parseTrackerPath(%q) = %v, %v", got, ep, st)
	}
}

func TestParseTrackerPathDoesNotAllocate(t *testing.T) {
	b := []byte("/" + testKey + "/announce")
	if n := testing.AllocsPerRun(100, func() { parseTrackerPath(b) }); n != 0 {
		t.Fatalf("%v allocations per parse, want 0", n)
	}
}

func FuzzParseTrackerPath(f *testing.F) {
	f.Add("/" + testKey + "/announce")
	f.Add("/announce/" + testKey + "?x=1")
	f.Fuzz(func(t *testing.T, path string) {
		ep, key, st := ParseTrackerPath(path)
		if ep == EndpointUnknown && st != PasskeyNone {
			t.Fatalf("unknown endpoint with passkey status %v", st)
		}
		if st != PasskeyOK && key != (Passkey{}) {
			t.Fatal("a key without PasskeyOK")
		}
		if ep2, key2, st2 := parseTrackerPath([]byte(path)); ep2 != ep || key2 != key || st2 != st {
			t.Fatal("string and []byte parses differ")
		}
	})
}

func FuzzParseURLData(f *testing.F) {
	f.Add([]byte{0x2, 3, '/', 'a', 'b', 0x1, 0x0})
	f.Fuzz(func(t *testing.T, opts []byte) {
		var buf [256]byte
		got, _ := parseURLData(buf[:0], opts)
		if len(got) > len(buf) || !bytes.Equal(got, buf[:len(got)]) {
			t.Fatalf("URL data of %d bytes escaped its buffer", len(got))
		}
	})
}
