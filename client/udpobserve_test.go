package client

import (
	"net/netip"
	"testing"
)

// A binding response round-trips, never outgrows the request, and the
// decoders reject everything else without panicking.
func FuzzBindingMessages(f *testing.F) {
	var id [bindingIDLen]byte
	f.Add(AppendBindingRequest(nil, id), "203.0.113.7:40000")
	f.Add(AppendBindingResponse(nil, id, netip.MustParseAddrPort("[2001:db8::1]:7")), "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535")
	f.Add([]byte{0x02, 'F', 'S', 'U'}, "")
	f.Fuzz(func(t *testing.T, b []byte, addr string) {
		_, _ = ParseBindingRequest(b)
		_, _, _ = ParseBindingResponse(b)
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return
		}
		copy(id[:], b)
		resp := AppendBindingResponse(nil, id, ap)
		if len(resp) > BindingRequestLen {
			t.Fatalf("a response of %d bytes outgrows the %d-byte request", len(resp), BindingRequestLen)
		}
		gotID, got, err := ParseBindingResponse(resp)
		if err != nil || gotID != id || got != ap {
			t.Fatalf("round trip of %v: %v %v %v", ap, gotID, got, err)
		}
		req := AppendBindingRequest(nil, id)
		if gotID, err := ParseBindingRequest(req); err != nil || gotID != id {
			t.Fatalf("request round trip: %v %v", gotID, err)
		}
	})
}

func TestBindingResponseDropsTheZone(t *testing.T) {
	var id [bindingIDLen]byte
	resp := AppendBindingResponse(nil, id, netip.MustParseAddrPort("[fe80::1%a-very-long-interface-name-indeed-it-is]:9"))
	if _, got, err := ParseBindingResponse(resp); err != nil || got.String() != "[fe80::1]:9" {
		t.Fatalf("got %v, %v", got, err)
	}
}
