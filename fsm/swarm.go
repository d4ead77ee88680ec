package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync/atomic"
)

// Swarm state layout.
//
// Memory is the constraint: a tracker holds millions of (swarm, peer)
// records, most swarms are small, and the target is under 100 heap bytes
// per record. So a record is a fixed-size struct without pointers (56
// bytes), a swarm keeps its records in one slice grown by small steps, and
// only a swarm above swarmIndexMax records gets a map from peer to slot.
//
// Within a swarm the leechers come first: recs[:nLeech] are leechers,
// recs[nLeech:] seeders. Keeping that partition costs at most two swaps per
// change and makes "leechers for a seeder" and the complete/incomplete
// counts O(1). Removal swaps the last element of the partition into the
// hole, so the slice order depends on the order of applies; it is
// deterministic (every replica applies the same log), and snapshots keep
// it, so a restored replica hands out the same peer lists.
//
// Copy-on-write: swarms live in nShards shards keyed by the first byte of
// the info-hash, each swarm and shard stamped with a generation exactly
// like peers and files (see state). The first change to a swarm after a
// Snapshot copies its record slice: O(records of that swarm), about 1 ms
// for a 100k-peer swarm, once per snapshot, and nothing for swarms that do
// not change. That keeps Snapshot O(nShards) and never stalls Apply for
// longer than one swarm copy.

// swarmRec is one (swarm, peer) record.
type swarmRec struct {
	changed int64 // replicated: Time of the last Announce applied to it
	peer    SwarmPeerID
	ip      [16]byte
	key     uint32 // 0 unless flags&recHasKey
	// seen is soft liveness, in Unix seconds rounded up: not replicated,
	// not in the digest or the snapshot. It is written by TouchSwarmPeer
	// under the read lock, so every access outside the write lock is
	// atomic, and code that may run concurrently with it (queries,
	// Persist) reads the other fields one by one, never the whole struct.
	seen  uint32
	port  uint16
	flags uint8
}

const (
	recSeeder uint8 = 1 << iota
	recHasKey
	recFlagsMask = recSeeder | recHasKey
)

// swarmIndexMax is the size above which a swarm indexes its records by
// peer; a swarm that shrinks to swarmIndexMin drops the index.
const (
	swarmIndexMax = 32
	swarmIndexMin = 16
)

// swarm is one info-hash's records. Same immutability rule as peer: once
// its gen is older than the state's it may be shared with a snapshot, and
// state.mutSwarm copies it before a change.
type swarm struct {
	gen        uint64
	downloaded uint64                // completed events counted, replicated
	recs       []swarmRec            // leechers in [0, nLeech), then seeders
	idx        map[SwarmPeerID]int32 // slot of each peer; nil while small
	nLeech     int32
}

func (sw *swarm) find(p SwarmPeerID) int {
	if sw.idx != nil {
		if i, ok := sw.idx[p]; ok {
			return int(i)
		}
		return -1
	}
	for i := range sw.recs {
		if sw.recs[i].peer == p {
			return i
		}
	}
	return -1
}

// swap exchanges two slots, keeping the index current.
func (sw *swarm) swap(i, j int) {
	if i == j {
		return
	}
	sw.recs[i], sw.recs[j] = sw.recs[j], sw.recs[i]
	if sw.idx != nil {
		sw.idx[sw.recs[i].peer] = int32(i)
		sw.idx[sw.recs[j].peer] = int32(j)
	}
}

// insert adds r (not present) in its partition and returns its slot.
func (sw *swarm) insert(r swarmRec) int {
	n := len(sw.recs)
	if n == cap(sw.recs) {
		// Small steps: most swarms stay small, and doubling would waste
		// up to half of each swarm's slice.
		grown := make([]swarmRec, n, n+max(1, n/8))
		copy(grown, sw.recs)
		sw.recs = grown
	}
	sw.recs = append(sw.recs, r)
	if sw.idx != nil {
		sw.idx[r.peer] = int32(n)
	} else if n+1 > swarmIndexMax {
		sw.idx = make(map[SwarmPeerID]int32, n+1)
		for i := range sw.recs {
			sw.idx[sw.recs[i].peer] = int32(i)
		}
	}
	if r.flags&recSeeder != 0 {
		return n
	}
	sw.swap(n, int(sw.nLeech))
	sw.nLeech++
	return int(sw.nLeech) - 1
}

// remove deletes slot i.
func (sw *swarm) remove(i int) {
	last := len(sw.recs) - 1
	if i < int(sw.nLeech) {
		sw.swap(i, int(sw.nLeech)-1)
		sw.swap(int(sw.nLeech)-1, last)
		sw.nLeech--
	} else {
		sw.swap(i, last)
	}
	if sw.idx != nil {
		delete(sw.idx, sw.recs[last].peer)
	}
	sw.recs[last] = swarmRec{}
	sw.recs = sw.recs[:last]
	if sw.idx != nil && last <= swarmIndexMin {
		sw.idx = nil
	}
	if c := cap(sw.recs); c > 8 && c >= 2*last {
		sw.recs = append(make([]swarmRec, 0, last+last/8), sw.recs...)
	}
}

// setSeeder moves slot i into the seeder or leecher partition and returns
// its new slot.
func (sw *swarm) setSeeder(i int, seeder bool) int {
	was := sw.recs[i].flags&recSeeder != 0
	switch {
	case seeder && !was:
		j := int(sw.nLeech) - 1
		sw.swap(i, j)
		sw.nLeech--
		sw.recs[j].flags |= recSeeder
		return j
	case !seeder && was:
		j := int(sw.nLeech)
		sw.swap(i, j)
		sw.nLeech++
		sw.recs[j].flags &^= recSeeder
		return j
	}
	return i
}

type swarmShard struct {
	gen uint64
	m   map[InfoHash]*swarm
}

// ipShard counts swarm records per address key (see ipKeyOf).
type ipShard struct {
	gen uint64
	t   ipTable
}

// ipKeyOf is the per-address counting key: an IPv4 address counts alone,
// an IPv6 address by its /64 prefix (one subscriber usually gets a whole
// /64, so counting single IPv6 addresses would let one host claim
// unboundedly many). IPv4 keys carry 0xff in the top byte, which no valid
// IPv6 record has (multicast ff00::/8 is refused by Validate).
func ipKeyOf(ip [16]byte) uint64 {
	if isV4Mapped(ip) {
		return 0xff<<56 | uint64(binary.BigEndian.Uint32(ip[12:]))
	}
	return binary.BigEndian.Uint64(ip[:8])
}

func isV4Mapped(ip [16]byte) bool {
	return ip[10] == 0xff && ip[11] == 0xff && [10]byte(ip[:10]) == [10]byte{}
}

func ipShardOf(k uint64) int { return int((k * 0x9E3779B97F4A7C15) >> 56) }

// trackerPolicy is the replicated tracker policy; same copy-on-write rule.
type trackerPolicy struct {
	gen   uint64
	mode  TrackerMode
	allow map[InfoHash]struct{}
	deny  map[InfoHash]struct{}
	// Dedup ring of TrackerPolicy request IDs, as in peer.
	next uint64
	reqs []uint64
}

func (p *trackerPolicy) allowed(ih InfoHash) bool {
	if _, denied := p.deny[ih]; denied {
		return false
	}
	if p.mode == TrackerAllowlist {
		_, ok := p.allow[ih]
		return ok
	}
	return true
}

// swarmState is the swarm half of state.
type swarmState struct {
	swarms     [nShards]*swarmShard
	ips        [nShards]*ipShard
	policy     *trackerPolicy
	nSwarms    int
	nSwarmRecs int
}

func (s *swarmState) initSwarms(gen uint64) {
	for i := range s.swarms {
		s.swarms[i] = &swarmShard{gen: gen, m: make(map[InfoHash]*swarm)}
		s.ips[i] = &ipShard{gen: gen}
	}
	s.policy = &trackerPolicy{gen: gen, allow: map[InfoHash]struct{}{}, deny: map[InfoHash]struct{}{}}
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
	c.reqs = slices.Clone(p.reqs)
	s.policy = &c
	return &c
}

func (s *state) ipAdd(ip [16]byte, delta int) {
	k := ipKeyOf(ip)
	i := ipShardOf(k)
	sh := s.ips[i]
	if sh.gen != s.gen {
		sh = &ipShard{gen: s.gen, t: sh.t.clone()}
		s.ips[i] = sh
	}
	sh.t.add(k, delta)
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

func errSwarmAddress(ih InfoHash, p SwarmPeerID) error {
	return fmt.Errorf("%w: peer_id %s is in swarm %s from another address; announce from that address, or send the same key as before",
		ErrUnauthorized, p, ih)
}

func (f *FSM) announce(c Announce) Response {
	s := &f.st
	ih := c.InfoHash
	if !s.policy.allowed(ih) {
		return Response{Err: errNotTracked(ih)}
	}
	sw := s.swarm(ih)
	i := -1
	if sw != nil {
		i = sw.find(c.Peer)
	}
	if i >= 0 {
		r := &sw.recs[i]
		if r.ip != c.IP && !(c.HasKey && r.flags&recHasKey != 0 && r.key == c.Key) {
			return Response{Err: errSwarmAddress(ih, c.Peer)}
		}
	}
	if c.Event == SwarmStopped {
		if i >= 0 {
			sw = s.mutSwarm(ih, sw)
			f.removeRec(ih, sw, i)
			f.dropIfEmpty(ih, sw)
		}
		return Response{}
	}
	seeder := c.Seeder || c.Event == SwarmCompleted
	if sw == nil {
		sw = &swarm{gen: s.gen}
		s.swarmShardMut(ih).m[ih] = sw
		s.nSwarms++
		f.add(f.h.swarm(ih, 0))
	} else {
		sw = s.mutSwarm(ih, sw)
	}
	count := c.Event == SwarmCompleted
	if i < 0 {
		r := swarmRec{changed: c.Time, peer: c.Peer, ip: c.IP, port: c.Port}
		if c.HasKey {
			r.key, r.flags = c.Key, recHasKey
		}
		if seeder {
			r.flags |= recSeeder
		}
		i = sw.insert(r)
		s.ipAdd(c.IP, 1)
		s.nSwarmRecs++
	} else {
		r := &sw.recs[i]
		f.sub(f.h.swarmRec(ih, r))
		count = count && r.flags&recSeeder == 0
		if r.ip != c.IP {
			s.ipAdd(r.ip, -1)
			s.ipAdd(c.IP, 1)
		}
		r.ip, r.port, r.changed = c.IP, c.Port, c.Time
		if c.HasKey && r.flags&recHasKey == 0 {
			r.key = c.Key
			r.flags |= recHasKey
		}
		i = sw.setSeeder(i, seeder)
	}
	r := &sw.recs[i]
	atomic.StoreUint32(&r.seen, ceilSecs(c.Time))
	f.add(f.h.swarmRec(ih, r))
	if count {
		f.sub(f.h.swarm(ih, sw.downloaded))
		sw.downloaded++
		f.add(f.h.swarm(ih, sw.downloaded))
	}
	return Response{}
}

// removeRec deletes slot i of the mutable swarm sw.
func (f *FSM) removeRec(ih InfoHash, sw *swarm, i int) {
	r := &sw.recs[i]
	f.sub(f.h.swarmRec(ih, r))
	f.st.ipAdd(r.ip, -1)
	f.st.nSwarmRecs--
	sw.remove(i)
}

// dropIfEmpty deletes a swarm that has neither records nor a downloaded
// count to remember.
func (f *FSM) dropIfEmpty(ih InfoHash, sw *swarm) {
	if len(sw.recs) == 0 && sw.downloaded == 0 {
		f.sub(f.h.swarm(ih, 0))
		delete(f.st.swarmShardMut(ih).m, ih)
		f.st.nSwarms--
	}
}

// dropSwarm deletes a swarm with all its records. It only reads the swarm,
// which may be shared with a snapshot.
func (f *FSM) dropSwarm(ih InfoHash) {
	s := &f.st
	sw := s.swarm(ih)
	if sw == nil {
		return
	}
	for i := range sw.recs {
		r := &sw.recs[i]
		f.sub(f.h.swarmRec(ih, r))
		s.ipAdd(r.ip, -1)
	}
	s.nSwarmRecs -= len(sw.recs)
	f.sub(f.h.swarm(ih, sw.downloaded))
	delete(s.swarmShardMut(ih).m, ih)
	s.nSwarms--
}

func (f *FSM) expireSwarmPeers(c ExpireSwarmPeers) Response {
	s := &f.st
	n := 0
	for _, e := range c.Entries {
		sw := s.swarm(e.InfoHash)
		if sw == nil {
			continue
		}
		i := sw.find(e.Peer)
		if i < 0 || sw.recs[i].changed > c.Time {
			continue
		}
		sw = s.mutSwarm(e.InfoHash, sw)
		f.removeRec(e.InfoHash, sw, i)
		f.dropIfEmpty(e.InfoHash, sw)
		n++
	}
	return Response{ExpiredSwarmPeers: n}
}

func (f *FSM) trackerPolicy(c TrackerPolicy) Response {
	s := &f.st
	if slices.Contains(s.policy.reqs, c.RequestID) {
		return Response{Duplicate: true}
	}
	p := s.mutPolicy()
	for _, ih := range c.Allow {
		if _, ok := p.allow[ih]; !ok {
			p.allow[ih] = struct{}{}
			f.add(f.h.policyHash(recAllow, ih))
		}
		if _, ok := p.deny[ih]; ok {
			delete(p.deny, ih)
			f.sub(f.h.policyHash(recDeny, ih))
		}
	}
	for _, ih := range c.Deny {
		if _, ok := p.deny[ih]; !ok {
			p.deny[ih] = struct{}{}
			f.add(f.h.policyHash(recDeny, ih))
		}
		if _, ok := p.allow[ih]; ok {
			delete(p.allow, ih)
			f.sub(f.h.policyHash(recAllow, ih))
		}
		f.dropSwarm(ih)
	}
	if c.SetMode && c.Mode != p.mode {
		if p.mode != TrackerOpen {
			f.sub(f.h.policyMode(p.mode))
		}
		p.mode = c.Mode
		if p.mode != TrackerOpen {
			f.add(f.h.policyMode(p.mode))
		}
		if p.mode == TrackerAllowlist {
			var drop []InfoHash
			for _, sh := range s.swarms {
				for ih := range sh.m {
					if !p.allowed(ih) {
						drop = append(drop, ih)
					}
				}
			}
			for _, ih := range drop {
				f.dropSwarm(ih)
			}
		}
	}
	// Remember the request, evicting the oldest when the window is full.
	seq := p.next
	if uint64(len(p.reqs)) < DedupWindow {
		p.reqs = append(p.reqs, c.RequestID)
	} else {
		i := seq % DedupWindow
		f.sub(f.h.policyReq(seq-DedupWindow, p.reqs[i]))
		p.reqs[i] = c.RequestID
	}
	f.add(f.h.policyReq(seq, c.RequestID))
	p.next++
	return Response{}
}

// policyEntries calls fn for each remembered policy request, oldest first.
func (p *trackerPolicy) entries(fn func(seq, req uint64)) {
	n := uint64(len(p.reqs))
	for s := p.next - n; s < p.next; s++ {
		fn(s, p.reqs[s%DedupWindow])
	}
}

// Record tags of the swarm records hashed into the digest.
const (
	recSwarm     = 'S' // info-hash, downloaded
	recSwarmPeer = 'T' // info-hash, peer, ip, port, flags, key, changed
	recMode      = 'M' // tracker mode, only when not TrackerOpen
	recAllow     = 'A' // an allowed info-hash
	recDeny      = 'D' // a denied info-hash
	recPolicyReq = 'Q' // a remembered TrackerPolicy request: seq, id
)

func (h *hasher) swarm(ih InfoHash, downloaded uint64) [32]byte {
	b := append(h.buf[:0], recSwarm)
	b = append(b, ih[:]...)
	b = binary.BigEndian.AppendUint64(b, downloaded)
	h.buf = b
	return sha256.Sum256(b)
}

// swarmRec hashes the replicated fields of r, read one by one (see seen).
func (h *hasher) swarmRec(ih InfoHash, r *swarmRec) [32]byte {
	b := append(h.buf[:0], recSwarmPeer)
	b = append(b, ih[:]...)
	b = append(b, r.peer[:]...)
	b = append(b, r.ip[:]...)
	b = binary.BigEndian.AppendUint16(b, r.port)
	b = append(b, r.flags)
	b = binary.BigEndian.AppendUint32(b, r.key)
	b = binary.BigEndian.AppendUint64(b, uint64(r.changed))
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) policyHash(tag byte, ih InfoHash) [32]byte {
	b := append(h.buf[:0], tag)
	b = append(b, ih[:]...)
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) policyMode(m TrackerMode) [32]byte {
	b := append(h.buf[:0], recMode, byte(m))
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) policyReq(seq, req uint64) [32]byte {
	b := append(h.buf[:0], recPolicyReq)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint64(b, req)
	h.buf = b
	return sha256.Sum256(b)
}

// recomputeSwarms adds every swarm and policy record of s to sum.
func (h *hasher) recomputeSwarms(s *state, sum *sum256) {
	for _, sh := range s.swarms {
		for ih, sw := range sh.m {
			sum.add(h.swarm(ih, sw.downloaded))
			for i := range sw.recs {
				sum.add(h.swarmRec(ih, &sw.recs[i]))
			}
		}
	}
	p := s.policy
	if p.mode != TrackerOpen {
		sum.add(h.policyMode(p.mode))
	}
	for ih := range p.allow {
		sum.add(h.policyHash(recAllow, ih))
	}
	for ih := range p.deny {
		sum.add(h.policyHash(recDeny, ih))
	}
	p.entries(func(seq, req uint64) { sum.add(h.policyReq(seq, req)) })
}
