package transport

import (
	"net"
	"net/netip"
	"sync"
)

// Source is the address a quota charges: the remote IP, seen at three
// levels for IPv6 so that one host cannot take a node's capacity by
// spreading over the addresses its network gives it. An IPv6 address is
// charged to its /128, its /64 (a subnet, usually one site) and its /48
// (usually one customer); an IPv4 address (or an IPv4-mapped IPv6 one) to
// its /32 alone. A quota of N per address allows 2N per /64 and 4N per
// /48, so one /64 cannot fill a node, and neither can one /48.
type Source struct {
	levels [3]netip.Prefix // zero Prefix: level unused
	n      int
}

// SourceOf returns the Source of a remote address; an address with no IP
// (a pipe in a test) is one source of its own.
func SourceOf(addr net.Addr) Source {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if addr != nil {
			if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
				ip = ap.Addr()
			}
		}
	}
	return sourceOfIP(ip)
}

func sourceOfIP(ip netip.Addr) Source {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return Source{n: 1} // one shared, unnamed source
	}
	if ip.Is4() {
		return Source{levels: [3]netip.Prefix{netip.PrefixFrom(ip, 32)}, n: 1}
	}
	ip = ip.WithZone("")
	p64, _ := ip.Prefix(64)
	p48, _ := ip.Prefix(48)
	return Source{levels: [3]netip.Prefix{netip.PrefixFrom(ip, 128), p64, p48}, n: 3}
}

// Levels returns the prefixes a quota charges for s, narrowest first: an
// IPv4 /32 alone, or an IPv6 /128, /64 and /48. Level i may hold
// LevelScale(i) times a per-address quota.
func (s Source) Levels() []netip.Prefix { return s.levels[:s.n:s.n] }

// LevelScale is how many times a per-address quota level i of Levels may
// hold: 1, 2, 4.
func LevelScale(i int) int { return levelScale[i] }

// String returns the source's narrowest prefix.
func (s Source) String() string {
	if s.n == 0 || !s.levels[0].IsValid() {
		return "unknown"
	}
	if s.levels[0].Addr().Is4() || s.levels[0].Bits() == 128 {
		return s.levels[0].Addr().String()
	}
	return s.levels[0].String()
}

// levelScale is how much more than one address each level may hold: the
// address itself, its /64, its /48.
var levelScale = [3]int{1, 2, 4}

// quota counts a resource (connections, handler slots, reply bytes) in
// total and per source, exactly: every check and charge happens under one
// lock, so concurrent callers can never take a count past its cap. A cap
// of zero or less means no cap at that level.
type quota struct {
	max       int // total
	perSource int // per address; ×2 per /64, ×4 per /48

	mu      sync.Mutex
	total   int
	used    map[netip.Prefix]int
	waiters int
	wake    chan struct{} // closed and replaced when something is released while someone waits
}

// fits reports whether n more fit for src; the caller holds q.mu. A
// charge to an empty level always fits, so one request larger than a cap
// still makes progress when nothing else is charged.
func (q *quota) fits(src Source, n int) bool {
	if q.max > 0 && q.total > 0 && q.total+n > q.max {
		return false
	}
	if q.perSource > 0 {
		for i := range src.n {
			if u := q.used[src.levels[i]]; u > 0 && u+n > q.perSource*levelScale[i] {
				return false
			}
		}
	}
	return true
}

func (q *quota) charge(src Source, n int) {
	q.total += n
	if q.perSource > 0 && src.n > 0 {
		if q.used == nil {
			q.used = make(map[netip.Prefix]int)
		}
		for i := range src.n {
			q.used[src.levels[i]] += n
		}
	}
}

// tryAcquire charges n to src if it fits, and reports whether it did.
func (q *quota) tryAcquire(src Source, n int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.fits(src, n) {
		return false
	}
	q.charge(src, n)
	return true
}

// force charges n to src whether it fits or not: a reply turned out
// heavier than expected, and it exists already.
func (q *quota) force(src Source, n int) {
	q.mu.Lock()
	q.charge(src, n)
	q.mu.Unlock()
}

// release returns n charged to src, and wakes whoever waits.
func (q *quota) release(src Source, n int) {
	if n == 0 {
		return
	}
	q.mu.Lock()
	q.total -= n
	if q.perSource > 0 && src.n > 0 {
		for i := range src.n {
			if q.used[src.levels[i]] -= n; q.used[src.levels[i]] <= 0 {
				delete(q.used, src.levels[i])
			}
		}
	}
	if q.waiters > 0 && q.wake != nil {
		close(q.wake)
		q.wake = nil
	}
	q.mu.Unlock()
}

// waitCh returns a channel closed at the next release; the caller must
// call doneWaiting once it stops waiting on it.
func (q *quota) waitCh() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.waiters++
	if q.wake == nil {
		q.wake = make(chan struct{})
	}
	return q.wake
}

func (q *quota) doneWaiting() {
	q.mu.Lock()
	q.waiters--
	q.mu.Unlock()
}

// usedBy returns what src holds at its narrowest level, and in total.
func (q *quota) usedBy(src Source) (bySource, total int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if src.n > 0 {
		bySource = q.used[src.levels[0]]
	}
	return bySource, q.total
}
