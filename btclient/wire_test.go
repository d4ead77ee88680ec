package btclient

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"fileshare/tracker"
)

func testAnnounce() *Announce {
	a := &Announce{Port: 6881, Left: 12345, Event: tracker.EventStarted, Key: 0xbeef, HasKey: true, NumWant: 50}
	for i := range a.InfoHash {
		a.InfoHash[i] = []byte{0, '%', '+', '&', '=', ' ', 0x7f, 0x80, 0xff, 'a', '~', '.', '-', '_', '/', '?', '#', 1, 2, 3}[i]
		a.PeerID[i] = byte(255 - i)
	}
	return a
}

// The UDP packets have BEP 15's layout, byte for byte.
func TestUDPPacketsFollowBEP15(t *testing.T) {
	c := AppendConnectRequest(nil, 0xa1b2c3d4)
	if len(c) != 16 || binary.BigEndian.Uint64(c) != 0x41727101980 || binary.BigEndian.Uint32(c[8:]) != 0 || binary.BigEndian.Uint32(c[12:]) != 0xa1b2c3d4 {
		t.Fatalf("connect request %x: want protocol id 0x41727101980, action 0, the transaction ID", c)
	}
	p := testAnnounce()
	a := AppendAnnounceRequest(nil, 0x1122334455667788, 7, p)
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

func TestParseAnnounceSummary(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     AnnounceSummary
		bad      bool
	}{
		{"compact peers", "d8:completei1e10:incompletei2e8:intervali1800e5:peers12:abcdefghijkle", AnnounceSummary{Interval: 1800, Peers: 2}, false},
		{"peers and peers6", "d8:intervali60e5:peers6:abcdef6:peers618:0123456789abcdefghe", AnnounceSummary{Interval: 60, Peers: 2}, false},
		{"nested values skipped", "d1:xld1:ai1eee8:intervali5e5:peers0:e", AnnounceSummary{Interval: 5}, false},
		{"failure", "d14:failure reason11:not allowede", AnnounceSummary{Failure: "not allowed"}, false},
		{"empty failure", "d14:failure reason0:e", AnnounceSummary{Failure: "(empty failure reason)"}, false},
		{"not a dict", "li1ee", AnnounceSummary{}, true},
		{"empty", "", AnnounceSummary{}, true},
		{"unterminated", "d8:intervali5e", AnnounceSummary{}, true},
		{"trailing bytes", "d8:intervali5eeXX", AnnounceSummary{}, true},
		{"no interval", "d5:peers0:e", AnnounceSummary{}, true},
		{"peers not multiple of 6", "d8:intervali5e5:peers5:abcdee", AnnounceSummary{}, true},
		{"string longer than input", "d8:intervali5e5:peers99:abce", AnnounceSummary{}, true},
		{"bad integer", "d8:intervali5xee", AnnounceSummary{}, true},
		{"html", "<html>502 Bad Gateway</html>", AnnounceSummary{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAnnounceSummary([]byte(tc.in))
			if tc.bad {
				if !errors.Is(err, ErrMalformedReply) {
					t.Fatalf("got %+v, %v; want ErrMalformedReply", got, err)
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
		want UDPReply
		bad  bool
	}{
		{"connect", conn, UDPReply{Action: 0, TID: 9, ConnID: 0xabc}, false},
		{"announce with two peers", ann, UDPReply{Action: 1, TID: 9, Peers: 2}, false},
		{"error", fail, UDPReply{Action: 3, TID: 9, Failure: "connection ID expired"}, false},
		{"short", []byte{0, 0, 0}, UDPReply{}, true},
		{"short connect", conn[:12], UDPReply{}, true},
		{"ragged peers", ann[:len(ann)-1], UDPReply{}, true},
		{"unknown action", be.AppendUint32(be.AppendUint32(nil, 7), 9), UDPReply{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseUDPReply(tc.in)
			if tc.bad {
				if !errors.Is(err, ErrMalformedReply) {
					t.Fatalf("got %+v, %v; want ErrMalformedReply", got, err)
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
func FuzzParseAnnounceSummary(f *testing.F) {
	f.Add([]byte("d8:intervali1800e5:peers6:abcdefe"))
	f.Add([]byte("d14:failure reason3:note"))
	f.Add([]byte(strings.Repeat("l", 100)))
	f.Add([]byte("d1:xd1:yi99999999999999999999eee"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseAnnounceSummary(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedReply) {
				t.Fatalf("error %v does not wrap ErrMalformedReply", err)
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
		r, err := ParseUDPReply(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedReply) {
				t.Fatalf("error %v does not wrap ErrMalformedReply", err)
			}
			return
		}
		if r.Action > 3 || r.Peers < 0 || (r.Action == tracker.UDPActionAnnounce && announceReplyHead+6*r.Peers != len(b)) {
			t.Fatalf("accepted an inconsistent reply %+v from %x", r, b)
		}
	})
}

// The wire functions serve load generators: building a request into a
// reused buffer and reading a reply allocate nothing.
func TestWireFunctionsDoNotAllocate(t *testing.T) {
	a := testAnnounce()
	buf := make([]byte, 0, 512)
	reply := append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, tracker.UDPActionAnnounce), 9), make([]byte, 12+6*50)...)
	for name, f := range map[string]func(){
		"connect":  func() { buf = AppendConnectRequest(buf[:0], 1) },
		"announce": func() { buf = AppendAnnounceRequest(buf[:0], 2, 3, a) },
		"query":    func() { buf = AppendAnnounceQuery(buf[:0], a) },
		"reply": func() {
			if _, err := ParseUDPReply(reply); err != nil {
				t.Fatal(err)
			}
		},
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
}
