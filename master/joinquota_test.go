package master

import (
	"fmt"
	"net"
	"testing"

	"fileshare/fsm"
)

// The join quota counts IPv6 sources hierarchically: spreading over the
// addresses of one /64 gets twice the per-address quota, of one /48 four
// times, and no more.
func TestJoinQuotaIsHierarchicalForIPv6(t *testing.T) {
	q := &joinQuota{max: 2}
	never := func(fsm.PeerID) bool { return false }
	joined := 0
	for i := range 64 {
		addr := &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("2001:db8:1:%x::%x", i/8, i%8+1))}
		if q.admit(addr, fsm.PeerID(fmt.Sprintf("p%d", i)), never) == nil {
			joined++
		}
	}
	if joined != 8 {
		t.Fatalf("one /48 got %d peers joined, want 4×2 = 8", joined)
	}
	// Peers that left make room again.
	if err := q.admit(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:7::1")}, "late", func(fsm.PeerID) bool { return true }); err != nil {
		t.Fatalf("a join after every counted peer left: %v", err)
	}
	if err := q.admit(&net.TCPAddr{IP: net.ParseIP("2001:db8:2::1")}, "other", never); err != nil {
		t.Fatalf("another /48: %v", err)
	}
}
