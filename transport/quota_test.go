package transport

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

func src(s string) Source { return sourceOfIP(netip.MustParseAddr(s)) }

// One IPv6 /64 cannot take more than twice the per-address cap however
// many addresses it uses, and one /48 not more than four times; IPv4
// addresses (also written IPv4-mapped) are capped one by one.
func TestQuotaIsHierarchicalForIPv6(t *testing.T) {
	q := &quota{max: 1000, perSource: 3}
	took := 0
	for i := range 100 { // 100 addresses of one /64
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(i + 1)})
		for q.tryAcquire(sourceOfIP(a), 1) {
			took++
		}
	}
	if took != 6 {
		t.Fatalf("one /64 took %d slots, want 2×3 = 6", took)
	}
	took = 0
	for i := range 100 { // 100 other /64s of the same /48
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, byte(i + 2), 0, 0, 0, 0, 0, 0, 0, 1})
		for q.tryAcquire(sourceOfIP(a), 1) {
			took++
		}
	}
	if took != 6 {
		t.Fatalf("the rest of one /48 took %d more slots, want 4×3 − 6 = 6", took)
	}
	if !q.tryAcquire(src("2001:db8:2::1"), 1) {
		t.Fatal("another /48 was refused")
	}
	for range 3 {
		if !q.tryAcquire(src("::ffff:192.0.2.1"), 1) {
			t.Fatal("an IPv4 address was refused below its cap")
		}
	}
	if q.tryAcquire(src("192.0.2.1"), 1) {
		t.Fatal("an IPv4 address got past its cap by changing notation")
	}
	if !q.tryAcquire(src("192.0.2.2"), 1) {
		t.Fatal("the next IPv4 address was refused")
	}
}

// The cap holds exactly under concurrency: many goroutines racing for a
// cap of 1,000 take exactly 1,000.
func TestQuotaIsExactUnderConcurrency(t *testing.T) {
	q := &quota{max: 1000, perSource: 1 << 20}
	var took atomic.Int64
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Go(func() {
			s := SourceOf(&net.TCPAddr{IP: net.IPv4(10, 0, byte(g), 1)})
			for range 100 {
				if q.tryAcquire(s, 1) {
					took.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := took.Load(); n != 1000 {
		t.Fatalf("racing callers took %d, want exactly the cap of 1000", n)
	}
}

// A method's expected reply weight follows heavy replies at once, and
// light replies cannot train it below a share of the heaviest recent one.
func TestReplyWeightCannotBeTrainedDown(t *testing.T) {
	h := &handler{}
	if got := h.expect(); got != initialWeight {
		t.Fatalf("a fresh method expects %d, want %d", got, initialWeight)
	}
	h.observe(3 << 20)
	if got := h.expect(); got != 3<<20 {
		t.Fatalf("after a 3 MiB reply the method expects %d, want 3 MiB", got)
	}
	for range 10000 {
		h.observe(100)
	}
	if got := h.expect(); got < (3<<20)/peakShare {
		t.Fatalf("after many light replies the method expects %d, want at least %d", got, (3<<20)/peakShare)
	}
	light := &handler{}
	for range 1000 {
		light.observe(100)
	}
	if got := light.expect(); got > 1024 {
		t.Fatalf("a method of light replies expects %d, want it near their size", got)
	}
}
