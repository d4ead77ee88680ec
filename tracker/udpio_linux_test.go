//go:build linux

package tracker

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// A destination written into a batch reads back the same: IPv4 on an
// IPv4 socket, IPv4-mapped and link-local IPv6 (with its interface) on an
// IPv6 one.
func TestMmsgSockaddrRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		v6       bool
		to, want string
	}{
		{false, "192.0.2.1:6881", "192.0.2.1:6881"},
		{false, "[::ffff:192.0.2.1]:6881", "192.0.2.1:6881"},
		{true, "192.0.2.1:6881", "[::ffff:192.0.2.1]:6881"},
		{true, "[2001:db8::1]:1", "[2001:db8::1]:1"},
		{true, "[fe80::1%7]:65535", "[fe80::1%7]:65535"},
	} {
		m := &mmsgIO{v6: tc.v6, hdrs: make([]mmsghdr, 1), names: make([]unix.RawSockaddrInet6, 1)}
		if !m.setSockaddr(0, netip.MustParseAddrPort(tc.to)) {
			t.Errorf("%s (v6 socket %v): not encoded", tc.to, tc.v6)
			continue
		}
		if got := m.sockaddr(0).String(); got != tc.want {
			t.Errorf("%s (v6 socket %v): read back %s, want %s", tc.to, tc.v6, got, tc.want)
		}
	}
	m := &mmsgIO{hdrs: make([]mmsghdr, 1), names: make([]unix.RawSockaddrInet6, 1)}
	if m.setSockaddr(0, netip.MustParseAddrPort("[2001:db8::1]:1")) {
		t.Error("an IPv6 destination was encoded for an IPv4 socket")
	}
}
