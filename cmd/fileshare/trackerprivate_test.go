package main

import "testing"

// The announce URLs user add prints name a host clients can dial: the
// tracker's own listen host, or the master's host when the tracker listens
// on every address, or the host the operator gave.
func TestPublicHostPort(t *testing.T) {
	for _, tc := range []struct{ listen, master, host, want string }{
		{"10.0.0.5:6969", "10.0.0.5:7001", "", "10.0.0.5:6969"},
		{"0.0.0.0:6969", "tracker1.example:7001", "", "tracker1.example:6969"},
		{"[::]:6969", "[2001:db8::1]:7001", "", "[2001:db8::1]:6969"},
		{":6969", "m1:7001", "", "m1:6969"},
		{"10.0.0.5:6969", "10.0.0.5:7001", "t.example.org", "t.example.org:6969"},
	} {
		if got := publicHostPort(tc.listen, tc.master, tc.host); got != tc.want {
			t.Errorf("publicHostPort(%q, %q, %q) = %q, want %q", tc.listen, tc.master, tc.host, got, tc.want)
		}
	}
}
