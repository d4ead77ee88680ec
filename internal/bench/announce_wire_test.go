package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"fileshare/tracker"
)

func testParams() *announceParams {
	p := &announceParams{Port: 6881, Left: 12345, Event: evStarted, Key: 0xbeef, NumWant: 50}
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
	p.Event = evNone
	raw = appendHTTPAnnounce(nil, "h:1", "/announce", p)
	if bytes.Contains(raw, []byte("event=")) {
		t.Errorf("a re-announce sends an event parameter: %s", raw)
	}
}

// The UDP packets have BEP 15's layout, byte for byte.
func TestUDPPacketsFollowBEP15(t *testing.T) {
	c := appendUDPConnect(nil, 0xa1b2c3d4)
	if len(c) != 16 || binary.BigEndian.Uint64(c) != 0x41727101980 || binary.BigEndian.Uint32(c[8:]) != 0 || binary.BigEndian.Uint32(c[12:]) != 0xa1b2c3d4 {
		t.Fatalf("connect request %x: want protocol id 0x41727101980, action 0, the transaction ID", c)
	}
	p := testParams()
	a := appendUDPAnnounce(nil, 0x1122334455667788, 7, p)
	if len(a) != 98 {
		t.Fatalf("announce request is %d bytes, want 98", len(a))
	}
	be := binary.BigEndian
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"connection id", be.Uint64(a[0:]), 0x1122334455667788},
		{"action", uint64(be.Uint32(a[8:])), 1},
		{"transaction id", uint64(be.Uint32(a[12:])), 7},
		{"downloaded", be.Uint64(a[56:]), 0},
		{"left", be.Uint64(a[64:]), 12345},
		{"uploaded", be.Uint64(a[72:]), 0},
		{"event", uint64(be.Uint32(a[80:])), 2},
		{"ip", uint64(be.Uint32(a[84:])), 0},
		{"key", uint64(be.Uint32(a[88:])), 0xbeef},
		{"num_want", uint64(be.Uint32(a[92:])), 50},
		{"port", uint64(be.Uint16(a[96:])), 6881},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if !bytes.Equal(a[16:36], p.InfoHash[:]) || !bytes.Equal(a[36:56], p.PeerID[:]) {
		t.Errorf("info_hash/peer_id at 16..56 = %x, want %x%x", a[16:56], p.InfoHash, p.PeerID)
	}
}

func TestParseHTTPReply(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     httpReply
		bad      bool
	}{
		{"compact peers", "d8:completei1e10:incompletei2e8:intervali1800e5:peers12:abcdefghijkle", httpReply{Interval: 1800, Peers: 2}, false},
		{"peers and peers6", "d8:intervali60e5:peers6:abcdef6:peers618:0123456789abcdefghe", httpReply{Interval: 60, Peers: 2}, false},
		{"nested values skipped", "d1:xld1:ai1eee8:intervali5e5:peers0:e", httpReply{Interval: 5}, false},
		{"failure", "d14:failure reason11:not allowede", httpReply{Failure: "not allowed"}, false},
		{"empty failure", "d14:failure reason0:e", httpReply{Failure: "(empty failure reason)"}, false},
		{"not a dict", "li1ee", httpReply{}, true},
		{"empty", "", httpReply{}, true},
		{"unterminated", "d8:intervali5e", httpReply{}, true},
		{"trailing bytes", "d8:intervali5eeXX", httpReply{}, true},
		{"no interval", "d5:peers0:e", httpReply{}, true},
		{"peers not multiple of 6", "d8:intervali5e5:peers5:abcdee", httpReply{}, true},
		{"string longer than input", "d8:intervali5e5:peers99:abce", httpReply{}, true},
		{"bad integer", "d8:intervali5xee", httpReply{}, true},
		{"html", "<html>502 Bad Gateway</html>", httpReply{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseHTTPReply([]byte(tc.in))
			if tc.bad {
				if !errors.Is(err, errBadReply) {
					t.Fatalf("got %+v, %v; want errBadReply", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestParseUDPReply(t *testing.T) {
	be := binary.BigEndian
	conn := be.AppendUint64(be.AppendUint32(be.AppendUint32(nil, 0), 9), 0xabc)
	ann := append(be.AppendUint32(be.AppendUint32(be.AppendUint32(be.AppendUint32(be.AppendUint32(nil, 1), 9), 1800), 3), 1), make([]byte, 12)...)
	fail := append(be.AppendUint32(be.AppendUint32(nil, 3), 9), "connection ID expired"...)
	for _, tc := range []struct {
		name string
		in   []byte
		want udpReply
		bad  bool
	}{
		{"connect", conn, udpReply{Action: 0, TID: 9, ConnID: 0xabc}, false},
		{"announce with two peers", ann, udpReply{Action: 1, TID: 9, Peers: 2}, false},
		{"error", fail, udpReply{Action: 3, TID: 9, Failure: "connection ID expired"}, false},
		{"short", []byte{0, 0, 0}, udpReply{}, true},
		{"short connect", conn[:12], udpReply{}, true},
		{"ragged peers", ann[:len(ann)-1], udpReply{}, true},
		{"unknown action", be.AppendUint32(be.AppendUint32(nil, 7), 9), udpReply{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseUDPReply(tc.in)
			if tc.bad {
				if !errors.Is(err, errBadReply) {
					t.Fatalf("got %+v, %v; want errBadReply", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// A tracker's reply is untrusted input: no bytes crash the decoder, and
// an accepted reply is self-consistent.
func FuzzParseHTTPReply(f *testing.F) {
	f.Add([]byte("d8:intervali1800e5:peers6:abcdefe"))
	f.Add([]byte("d14:failure reason3:note"))
	f.Add([]byte(strings.Repeat("l", 100)))
	f.Add([]byte("d1:xd1:yi99999999999999999999eee"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseHTTPReply(b)
		if err != nil {
			if !errors.Is(err, errBadReply) {
				t.Fatalf("error %v does not wrap errBadReply", err)
			}
			return
		}
		if r.Peers < 0 || (r.Failure == "" && r.Interval <= 0) || r.Peers*6 > len(b) {
			t.Fatalf("accepted an inconsistent reply %+v from %q", r, b)
		}
	})
}

func FuzzParseUDPReply(f *testing.F) {
	be := binary.BigEndian
	f.Add(be.AppendUint64(be.AppendUint32(be.AppendUint32(nil, 0), 1), 5))
	f.Add(append(be.AppendUint32(be.AppendUint32(nil, 1), 1), make([]byte, 18)...))
	f.Add(append(be.AppendUint32(be.AppendUint32(nil, 3), 1), "no"...))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseUDPReply(b)
		if err != nil {
			if !errors.Is(err, errBadReply) {
				t.Fatalf("error %v does not wrap errBadReply", err)
			}
			return
		}
		if r.Action > 3 || r.Peers < 0 || (r.Action == tracker.UDPActionAnnounce && udpAnnounceHead+6*r.Peers != len(b)) {
			t.Fatalf("accepted an inconsistent reply %+v from %x", r, b)
		}
	})
}
