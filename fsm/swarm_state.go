package fsm

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
)

// The tracker's state around the swarms: shards, per-address quotas, the
// policy, and the copy-on-write accessors.

type swarmShard struct {
	gen uint64
	m   map[InfoHash]*swarm
}

// ipShard counts swarm records per address key (see ipKeysOf).
type ipShard struct {
	gen uint64
	t   ipTable
}

// Quota levels. A record counts against its address and, for IPv6, against
// the /64 and the /48 holding it: one host gets a /128, one subscriber
// usually a /64, one site a /48, and counting only one of them would let
// its holder claim unboundedly many of the smaller ones.
const (
	levelAddr = iota // an IPv4 address or an IPv6 /128
	level64          // an IPv6 /64
	level48          // an IPv6 /48
	nLevels
)

// Tags of the aggregate keys, in the top byte 0xff, which no counted
// IPv6 address has (multicast ff00::/8 is refused by Validate).
const (
	ipTagV4 = 0xff<<56 | 4
	ipTag64 = 0xff<<56 | 64
	ipTag48 = 0xff<<56 | 48
)

// ipKeysOf returns ip's counting keys, one per level; an IPv4 address has
// only levelAddr (n is 1), an IPv6 address all three.
func ipKeysOf(ip [16]byte) (keys [nLevels]ipKey, n int) {
	if isV4Mapped(ip) {
		keys[levelAddr] = ipKey{ipTagV4, uint64(binary.BigEndian.Uint32(ip[12:]))}
		return keys, 1
	}
	hi, lo := binary.BigEndian.Uint64(ip[:8]), binary.BigEndian.Uint64(ip[8:])
	keys[levelAddr] = ipKey{hi, lo}
	keys[level64] = ipKey{ipTag64, hi}
	keys[level48] = ipKey{ipTag48, hi &^ 0xffff}
	return keys, nLevels
}

func isV4Mapped(ip [16]byte) bool {
	return ip[10] == 0xff && ip[11] == 0xff && [10]byte(ip[:10]) == [10]byte{}
}

func ipShardOf(k ipKey) int {
	return int(((k.hi ^ k.lo*0xC2B2AE3D27D4EB4F) * 0x9E3779B97F4A7C15) >> 56)
}

// trackerPolicy is the replicated tracker policy; same copy-on-write rule.
type trackerPolicy struct {
	gen   uint64
	mode  TrackerMode
	allow map[InfoHash]struct{}
	deny  map[InfoHash]struct{}
	reqs  reqWindow // of TrackerPolicy requests
}

func (p *trackerPolicy) allowed(ih InfoHash) bool {
	if _, denied := p.deny[ih]; denied {
		return false
	}
	if p.mode != TrackerOpen { // allowlist and private
		_, ok := p.allow[ih]
		return ok
	}
	return true
}

// connIDSecret is one UDP connection-ID secret and the Time it was set.
type connIDSecret struct {
	time   int64
	secret [ConnIDSecretSize]byte
}

// swarmState is the swarm half of state.
type swarmState struct {
	swarms     [nShards]*swarmShard
	ips        [nShards]*ipShard
	policy     *trackerPolicy
	priv       *privState // the private tracker (privstate.go)
	nSwarms    int
	nSwarmRecs int
	// connIDs are the UDP connection-ID secrets, newest first, at most
	// maxConnIDSecrets. The slice is never changed in place (snapshots
	// share it).
	connIDs []connIDSecret
}

func (s *swarmState) initSwarms(gen uint64) {
	for i := range s.swarms {
		s.swarms[i] = &swarmShard{gen: gen, m: make(map[InfoHash]*swarm)}
		s.ips[i] = &ipShard{gen: gen}
	}
	s.policy = &trackerPolicy{gen: gen, allow: map[InfoHash]struct{}{}, deny: map[InfoHash]struct{}{}}
	s.priv = newPrivState(gen)
}

func (s *state) swarm(ih InfoHash) *swarm { return s.swarms[ih[0]].m[ih] }

func (s *state) swarmShardMut(ih InfoHash) *swarmShard {
	sh := s.swarms[ih[0]]
	if sh.gen != s.gen {
		sh = &swarmShard{gen: s.gen, m: maps.Clone(sh.m)}
		s.swarms[ih[0]] = sh
	}
	return sh
}

// mutSwarm returns sw itself if it is private to the live state, or else a
// copy installed in its place.
func (s *state) mutSwarm(ih InfoHash, sw *swarm) *swarm {
	if sw.gen == s.gen {
		return sw
	}
	c := *sw
	c.gen = s.gen
	n := len(sw.recs)
	c.recs = append(make([]swarmRec, 0, n+n/8), sw.recs...)
	if sw.idx != nil {
		c.idx = maps.Clone(sw.idx)
	}
	if sw.acct != nil {
		c.acct = append(make([]recAcct, 0, n+n/8), sw.acct...)
	}
	s.swarmShardMut(ih).m[ih] = &c
	return &c
}

func (s *state) mutPolicy() *trackerPolicy {
	p := s.policy
	if p.gen == s.gen {
		return p
	}
	c := *p
	c.gen = s.gen
	c.allow = maps.Clone(p.allow)
	c.deny = maps.Clone(p.deny)
	c.reqs = p.reqs.clone()
	s.policy = &c
	return &c
}

func (s *state) ipAdd(ip [16]byte, delta int) {
	keys, n := ipKeysOf(ip)
	for _, k := range keys[:n] {
		i := ipShardOf(k)
		sh := s.ips[i]
		if sh.gen != s.gen {
			sh = &ipShard{gen: s.gen, t: sh.t.clone()}
			s.ips[i] = sh
		}
		sh.t.add(k, delta)
	}
}

// ipUse returns the records counted against each of ip's levels (0 for a
// level an IPv4 address does not have).
func (s *state) ipUse(ip [16]byte) (use [nLevels]int) {
	keys, n := ipKeysOf(ip)
	for l, k := range keys[:n] {
		use[l] = int(s.ips[ipShardOf(k)].t.get(k))
	}
	return use
}

// ceilSecs converts Unix nanoseconds to the seconds stored in seen, rounded
// up and clamped to uint32, so that a stored seen is never earlier than the
// moment it records.
func ceilSecs(ns int64) uint32 {
	if ns <= 0 {
		return 0
	}
	s := (ns-1)/1e9 + 1
	return uint32(min(s, math.MaxUint32))
}

// floorSecs is ceilSecs rounding down.
func floorSecs(ns int64) uint32 {
	if ns <= 0 {
		return 0
	}
	return uint32(min(ns/1e9, math.MaxUint32))
}

func errNotTracked(ih InfoHash) error {
	return fmt.Errorf("%w: this tracker does not track info-hash %s; ask its operator to allow it", ErrNotTracked, ih)
}

func errSwarmFull(what string, limit int) error {
	return fmt.Errorf("%w: the tracker holds its limit of %d %s; retry later", ErrTrackerFull, limit, what)
}

func errSwarmQuota(level int, limit int) error {
	where := [nLevels]string{"address", "IPv6 /64", "IPv6 /48"}[level]
	return fmt.Errorf("%w: %d swarm entries from this %s, the limit; stop some torrents or retry later", ErrSwarmQuota, limit, where)
}

// checkLimits returns the error that an announce creating a record (or
// moving one to ip, if !insert) would break lim with, or nil.
func (s *state) checkLimits(lim *SwarmLimits, ip [16]byte, insert, newSwarm bool) error {
	if lim == nil {
		return nil
	}
	if insert && lim.MaxPeers > 0 && s.nSwarmRecs >= int(lim.MaxPeers) {
		return errSwarmFull("swarm entries", int(lim.MaxPeers))
	}
	if newSwarm && lim.MaxSwarms > 0 && s.nSwarms >= int(lim.MaxSwarms) {
		return errSwarmFull("swarms", int(lim.MaxSwarms))
	}
	use := s.ipUse(ip)
	for l, max := range [nLevels]uint32{lim.PerAddr, lim.Per64, lim.Per48} {
		if max > 0 && use[l] >= int(max) {
			if l > levelAddr && isV4Mapped(ip) {
				continue
			}
			return errSwarmQuota(l, int(max))
		}
	}
	return nil
}

// swarmHash hashes the swarm-level fields of sw.
func (f *FSM) swarmHash(ih InfoHash, sw *swarm) [32]byte {
	return f.h.swarm(ih, sw.downloaded, sw.emptied, sw.charge)
}
