package tracker

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// sourceLimiter is a per-source token bucket for UDP datagrams, held in a
// bounded table, with temporary bans for sources that keep sending bad
// connection IDs.
//
// A source is an IPv4 address or an IPv6 /64 (one subscriber's LAN: its
// owner has 2⁶⁴ addresses, so a limit per /128 would limit nothing); an
// IPv6 packet also draws on its /48's bucket, whose rate and burst are
// v6SiteFactor times larger, so that one site cannot get around the
// limit by using many /64s.
//
// Each bucket is kept as GCRA's theoretical arrival time (tat): a packet
// at now is allowed if tat-now ≤ burst·interval, and then moves tat to
// max(tat, now)+interval. A ban moves tat past the ban's end. This is one
// int64 per source, and an idle source's entry (tat ≤ now) holds nothing
// worth keeping.
//
// The table is set-associative: a source hashes (with a random seed, so
// nobody can aim at another's set) to a set of limiterWays entries; a new
// source replaces the entry with the smallest tat, which is an idle one
// unless the whole set is busy. So the memory is fixed (MaxSources × 40
// bytes) and a flood of new sources costs the entries of idle ones — that
// only resets them to a full bucket — before it costs any in use.
type sourceLimiter struct {
	interval int64 // ns between packets at the sustained rate
	burst    int64 // ns of credit: burst × interval
	banAfter uint32
	banFor   int64
	seed     uint64
	sets     []limiterSet
	mask     uint64
}

const (
	limiterWays  = 8
	v6SiteFactor = 8
)

type limiterKey struct {
	prefix uint64
	kind   uint8 // 0 none, 4 IPv4, 64 IPv6 /64, 48 IPv6 /48
}

type limiterEntry struct {
	key     limiterKey
	tat     int64
	strikes uint32
}

type limiterSet struct {
	mu sync.Mutex
	e  [limiterWays]limiterEntry
}

// Verdicts of sourceLimiter.allow.
const (
	limitAllow   = iota
	limitRate    // over the rate
	limitBanned  // banned for bad connection IDs
	limitStrikes // allowed, and the source has bad connection IDs counted
)

func newSourceLimiter(rate float64, burst, sources, banAfter int, banFor time.Duration) *sourceLimiter {
	l := &sourceLimiter{
		interval: max(int64(float64(time.Second)/rate), 1),
		banAfter: uint32(banAfter),
		banFor:   int64(banFor),
		seed:     rand.Uint64(),
	}
	l.burst = l.interval * int64(burst)
	n := 1
	for n*limiterWays < sources {
		n <<= 1
	}
	l.sets = make([]limiterSet, n)
	l.mask = uint64(n - 1)
	return l
}

// keys returns a's source key and, for IPv6, its site's.
func sourceKeys(a netip.Addr) (src, site limiterKey) {
	if a.Is4() {
		b := a.As4()
		return limiterKey{prefix: uint64(binary.BigEndian.Uint32(b[:])), kind: 4}, limiterKey{}
	}
	b := a.As16()
	p := binary.BigEndian.Uint64(b[:8])
	return limiterKey{prefix: p, kind: 64}, limiterKey{prefix: p >> 16, kind: 48}
}

func (l *sourceLimiter) set(k limiterKey) *limiterSet {
	h := (k.prefix ^ l.seed) + uint64(k.kind)
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return &l.sets[h&l.mask]
}

// entry returns k's entry in s, taking over the least busy one if k has
// none. s.mu is held.
func (s *limiterSet) entry(k limiterKey, now int64) *limiterEntry {
	victim := &s.e[0]
	for i := range s.e {
		e := &s.e[i]
		if e.key == k {
			return e
		}
		if e.tat < victim.tat {
			victim = e
		}
	}
	*victim = limiterEntry{key: k, tat: now}
	return victim
}

// allow charges one packet from a at now (ns) and says whether it may be
// handled.
func (l *sourceLimiter) allow(a netip.Addr, now int64) int {
	src, site := sourceKeys(a)
	v := l.charge(src, now, l.interval, l.burst)
	if v != limitAllow && v != limitStrikes {
		return v
	}
	if site.kind != 0 {
		if sv := l.charge(site, now, l.interval/v6SiteFactor, l.burst); sv != limitAllow && sv != limitStrikes {
			return sv
		}
	}
	return v
}

func (l *sourceLimiter) charge(k limiterKey, now, interval, burst int64) int {
	s := l.set(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(k, now)
	tat := max(e.tat, now)
	if tat-now > burst {
		if e.strikes >= l.banAfter && l.banAfter > 0 {
			return limitBanned
		}
		return limitRate
	}
	e.tat = tat + interval
	if e.strikes > 0 {
		return limitStrikes
	}
	return limitAllow
}

// strike counts a bad connection ID from a; at banAfter in a row it bans
// the source for banFor and returns true (once per ban).
func (l *sourceLimiter) strike(a netip.Addr, now int64) (banned bool) {
	if l.banAfter == 0 {
		return false
	}
	src, _ := sourceKeys(a)
	s := l.set(src)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(src, now)
	e.strikes++
	if e.strikes == l.banAfter {
		e.tat = max(e.tat, now) + l.banFor + l.burst
		return true
	}
	if e.strikes > l.banAfter && e.tat-now <= l.burst {
		// The ban ran out and the source is still at it: ban again.
		e.strikes = l.banAfter
		e.tat = max(e.tat, now) + l.banFor + l.burst
		return true
	}
	return false
}

// clear forgets a's bad connection IDs: it sent a good one.
func (l *sourceLimiter) clear(a netip.Addr, now int64) {
	src, _ := sourceKeys(a)
	s := l.set(src)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.e {
		if s.e[i].key == src {
			s.e[i].strikes = 0
		}
	}
}
