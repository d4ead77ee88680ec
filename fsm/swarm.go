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
	// recCounted marks a record whose completion the swarm's downloaded
	// count holds: a record counts one completion in its lifetime.
	recCounted
	recFlagsMask = recSeeder | recHasKey | recCounted
)

// recKey identifies a record within its swarm: a peer_id is the client's
// own choice and anyone who saw it can send it, so it names a record only
// together with the address (see Announce).
type recKey struct {
	peer SwarmPeerID
	ip   [16]byte
}

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
	downloaded uint64           // completed events counted, replicated
	recs       []swarmRec       // leechers in [0, nLeech), then seeders
	idx        map[recKey]int32 // slot of each (peer, address); nil while small
	// acct holds each record's private tracker baseline, parallel to
	// recs; nil until the swarm has a private record (privstate.go).
	acct   []recAcct
	nLeech int32
	// While the swarm has no records but keeps its downloaded count,
	// emptied is the Time it lost its last record (0 if unknown: restored
	// from an older snapshot) and charge the address of that record,
	// which holds one unit of that address's quota until the swarm ends.
	// Both are replicated; both are zero while the swarm has records.
	emptied int64
	charge  [16]byte
}

// find returns the slot of peer p at address ip, or -1.
func (sw *swarm) find(p SwarmPeerID, ip [16]byte) int {
	if sw.idx != nil {
		if i, ok := sw.idx[recKey{p, ip}]; ok {
			return int(i)
		}
		return -1
	}
	for i := range sw.recs {
		if sw.recs[i].peer == p && sw.recs[i].ip == ip {
			return i
		}
	}
	return -1
}

// findPeer returns the first slot of peer p at any address, or -1. It
// scans the swarm.
func (sw *swarm) findPeer(p SwarmPeerID) int {
	for i := range sw.recs {
		if sw.recs[i].peer == p {
			return i
		}
	}
	return -1
}

// findKeyed returns the first slot of peer p whose record holds key k, or
// -1. It scans the swarm; only an announce from an address the peer has no
// record at, carrying a key, needs it.
func (sw *swarm) findKeyed(p SwarmPeerID, k uint32) int {
	for i := range sw.recs {
		r := &sw.recs[i]
		if r.peer == p && r.flags&recHasKey != 0 && r.key == k {
			return i
		}
	}
	return -1
}

// lookup finds the record an announce from (p, ip) is about: the one at
// ip, or else, if the announce carries a key, one of p's records holding
// that key (the same client, moved).
func (sw *swarm) lookup(p SwarmPeerID, ip [16]byte, hasKey bool, key uint32) int {
	if i := sw.find(p, ip); i >= 0 {
		return i
	}
	if hasKey {
		return sw.findKeyed(p, key)
	}
	return -1
}

// swap exchanges two slots, keeping the index current.
func (sw *swarm) swap(i, j int) {
	if i == j {
		return
	}
	sw.recs[i], sw.recs[j] = sw.recs[j], sw.recs[i]
	if sw.acct != nil {
		sw.acct[i], sw.acct[j] = sw.acct[j], sw.acct[i]
	}
	if sw.idx != nil {
		sw.idx[sw.recs[i].key2()] = int32(i)
		sw.idx[sw.recs[j].key2()] = int32(j)
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
	if sw.acct != nil {
		sw.acct = append(sw.acct, recAcct{})
	}
	if sw.idx != nil {
		sw.idx[r.key2()] = int32(n)
	} else if n+1 > swarmIndexMax {
		sw.buildIndex()
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
		delete(sw.idx, sw.recs[last].key2())
	}
	sw.recs[last] = swarmRec{}
	sw.recs = sw.recs[:last]
	if sw.acct != nil {
		sw.acct = sw.acct[:last]
	}
	if sw.idx != nil && last <= swarmIndexMin {
		sw.idx = nil
	}
	if c := cap(sw.recs); c > 8 && c >= 2*last {
		sw.recs = append(make([]swarmRec, 0, last+last/8), sw.recs...)
		if sw.acct != nil {
			sw.acct = append(make([]recAcct, 0, last+last/8), sw.acct...)
		}
	}
}

// key2 is the record's index key.
func (r *swarmRec) key2() recKey { return recKey{r.peer, r.ip} }

// buildIndex indexes every record.
func (sw *swarm) buildIndex() {
	sw.idx = make(map[recKey]int32, len(sw.recs))
	for i := range sw.recs {
		sw.idx[sw.recs[i].key2()] = int32(i)
	}
}

// move changes slot i's address, keeping the index current.
func (sw *swarm) move(i int, ip [16]byte) {
	if sw.idx != nil {
		delete(sw.idx, sw.recs[i].key2())
		sw.idx[recKey{sw.recs[i].peer, ip}] = int32(i)
	}
	sw.recs[i].ip = ip
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
	// Dedup ring of TrackerPolicy request IDs, as in peer.
	next uint64
	reqs []uint64
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
	c.reqs = slices.Clone(p.reqs)
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

// announce applies c; lim, if not nil, are the limits a record created or
// moved by c must stay within (see AnnounceBatch).
func (f *FSM) announce(c Announce, lim *SwarmLimits) Response {
	s := &f.st
	ih := c.InfoHash
	if !s.policy.allowed(ih) {
		return Response{Err: errNotTracked(ih)}
	}
	sw := s.swarm(ih)
	i := -1
	if sw != nil {
		i = sw.lookup(c.Peer, c.IP, c.HasKey, c.Key)
	}
	if c.Event == SwarmStopped {
		if i >= 0 {
			sw = s.mutSwarm(ih, sw)
			ip := sw.recs[i].ip
			f.removeRec(ih, sw, i)
			f.emptied(ih, sw, ip, c.Time)
		}
		return Response{}
	}
	moving := i >= 0 && sw.recs[i].ip != c.IP
	if i < 0 || moving {
		if err := s.checkLimits(lim, c.IP, i < 0, sw == nil); err != nil {
			return Response{Err: err}
		}
	}
	seeder := c.Seeder || c.Event == SwarmCompleted
	if sw == nil {
		sw = &swarm{gen: s.gen}
		s.swarmShardMut(ih).m[ih] = sw
		s.nSwarms++
		f.add(f.swarmHash(ih, sw))
	} else {
		sw = s.mutSwarm(ih, sw)
	}
	if sw.emptied != 0 || sw.charge != ([16]byte{}) {
		// An empty swarm gets a record again: it no longer holds its
		// last address's quota.
		f.sub(f.swarmHash(ih, sw))
		if sw.charge != ([16]byte{}) {
			s.ipAdd(sw.charge, -1)
		}
		sw.emptied, sw.charge = 0, [16]byte{}
		f.add(f.swarmHash(ih, sw))
	}
	count := false
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
		// A completion counts once per record, and only for a record
		// that was downloading: a client cannot add to the count by
		// announcing completed for a record it has just created.
		count = c.Event == SwarmCompleted && r.flags&(recSeeder|recCounted) == 0
		if count {
			r.flags |= recCounted
		}
		if moving {
			s.ipAdd(r.ip, -1)
			s.ipAdd(c.IP, 1)
			sw.move(i, c.IP)
		}
		r.port, r.changed = c.Port, c.Time
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
		f.sub(f.swarmHash(ih, sw))
		sw.downloaded++
		f.add(f.swarmHash(ih, sw))
	}
	return Response{}
}

// AnnounceChanges reports what applying c now would do: change is false
// if it would leave the state as it is (a stopped for a record that does
// not exist, a started or completed that repeats what the record holds);
// err is the error it would fail with, limits checked against lim (nil:
// none). The leader answers an announce that changes nothing without
// proposing it.
func (f *FSM) AnnounceChanges(c Announce, lim *SwarmLimits) (change bool, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := &f.st
	if !s.policy.allowed(c.InfoHash) {
		return false, errNotTracked(c.InfoHash)
	}
	sw := s.swarm(c.InfoHash)
	i := -1
	if sw != nil {
		i = sw.lookup(c.Peer, c.IP, c.HasKey, c.Key)
	}
	if c.Event == SwarmStopped {
		return i >= 0, nil
	}
	if i < 0 {
		return true, s.checkLimits(lim, c.IP, true, sw == nil)
	}
	r := &sw.recs[i]
	if r.ip != c.IP {
		return true, s.checkLimits(lim, c.IP, false, false)
	}
	seeder := c.Seeder || c.Event == SwarmCompleted
	switch {
	case r.port != c.Port, (r.flags&recSeeder != 0) != seeder,
		c.HasKey && r.flags&recHasKey == 0,
		c.Event == SwarmCompleted && r.flags&(recSeeder|recCounted) == 0:
		return true, nil
	}
	return false, nil
}

// removeRec deletes slot i of the mutable swarm sw.
func (f *FSM) removeRec(ih InfoHash, sw *swarm, i int) {
	r := &sw.recs[i]
	f.dropAcct(ih, sw, i)
	f.sub(f.h.swarmRec(ih, r))
	f.st.ipAdd(r.ip, -1)
	f.st.nSwarmRecs--
	sw.remove(i)
}

// emptied is called after a record at ip left the mutable swarm sw at
// time t. A swarm left without records ends, unless it has counted
// completions: then it stays, so scrapes keep its count, until the leader
// expires it (ExpireSwarmPeers.Swarms), and meanwhile holds one unit of
// ip's quota, so nobody piles up empty swarms for free.
func (f *FSM) emptied(ih InfoHash, sw *swarm, ip [16]byte, t int64) {
	if len(sw.recs) != 0 {
		return
	}
	if sw.downloaded == 0 {
		f.sub(f.swarmHash(ih, sw))
		delete(f.st.swarmShardMut(ih).m, ih)
		f.st.nSwarms--
		return
	}
	f.sub(f.swarmHash(ih, sw))
	sw.emptied, sw.charge = max(t, 1), ip
	f.st.ipAdd(ip, 1)
	f.add(f.swarmHash(ih, sw))
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
		f.dropAcct(ih, sw, i)
		f.sub(f.h.swarmRec(ih, r))
		s.ipAdd(r.ip, -1)
	}
	if sw.charge != ([16]byte{}) {
		s.ipAdd(sw.charge, -1)
	}
	s.nSwarmRecs -= len(sw.recs)
	f.sub(f.swarmHash(ih, sw))
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
		var i int
		if e.IP == ([16]byte{}) {
			i = sw.findPeer(e.Peer) // an entry proposed before records had addresses in their key
		} else {
			i = sw.find(e.Peer, e.IP)
		}
		if i < 0 || sw.recs[i].changed > c.Time {
			continue
		}
		sw = s.mutSwarm(e.InfoHash, sw)
		ip := sw.recs[i].ip
		f.removeRec(e.InfoHash, sw, i)
		f.emptied(e.InfoHash, sw, ip, c.Time)
		n++
	}
	for _, ih := range c.Swarms {
		if sw := s.swarm(ih); sw != nil && len(sw.recs) == 0 && sw.emptied <= c.Time {
			f.dropSwarm(ih)
			n++
		}
	}
	return Response{ExpiredSwarmPeers: n}
}

func (f *FSM) setConnIDSecret(c SetConnIDSecret) Response {
	s := &f.st
	var newest int64
	if len(s.connIDs) > 0 {
		newest = s.connIDs[0].time
	}
	if c.After != newest {
		return Response{Duplicate: true}
	}
	s.lastTime = max(s.lastTime, c.Time)
	for i := range s.connIDs {
		f.sub(f.h.connID(i, &s.connIDs[i]))
	}
	next := []connIDSecret{{time: c.Time, secret: [ConnIDSecretSize]byte(c.Secret)}}
	next = append(next, s.connIDs[:min(len(s.connIDs), maxConnIDSecrets-1)]...)
	s.connIDs = next
	for i := range s.connIDs {
		f.add(f.h.connID(i, &s.connIDs[i]))
	}
	return Response{}
}

// maxConnIDSecrets is how many connection-ID secrets the FSM keeps: the
// next one, the one to sign with, and the one before.
const maxConnIDSecrets = 3

// ConnIDSecrets returns the UDP connection-ID secrets, the one to sign
// with first, and the Time the newest was set (0 if there is none).
//
// The newest secret is not signed with until the next one arrives: every
// master accepts it for a whole rotation before any master signs with it,
// so a master that applies a rotation a little late never refuses an ID
// another master signed. With one secret it is the one to sign with; with
// two or three, the second newest signs, and the others (the next one,
// and the previous one, for the IDs issued just before the rotation) are
// accepted. The slices are copies.
func (f *FSM) ConnIDSecrets() (secrets [][]byte, newest int64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	c := f.st.connIDs
	order := []int{0}
	switch len(c) {
	case 0:
		return nil, 0
	case 2:
		order = []int{1, 0}
	case 3:
		order = []int{1, 0, 2}
	}
	for _, i := range order {
		secrets = append(secrets, append([]byte(nil), c[i].secret[:]...))
	}
	return secrets, c[0].time
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
		if p.mode != TrackerOpen {
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
	recConnID    = 'K' // a connection-ID secret: position, time, secret
)

func (h *hasher) connID(pos int, c *connIDSecret) [32]byte {
	b := append(h.buf[:0], recConnID, byte(pos))
	b = binary.BigEndian.AppendUint64(b, uint64(c.time))
	b = append(b, c.secret[:]...)
	h.buf = b
	return sha256.Sum256(b)
}

// swarm hashes a swarm's own fields. emptied and charge are appended only
// when set, so a swarm hashes as it did before they existed.
func (h *hasher) swarm(ih InfoHash, downloaded uint64, emptied int64, charge [16]byte) [32]byte {
	b := append(h.buf[:0], recSwarm)
	b = append(b, ih[:]...)
	b = binary.BigEndian.AppendUint64(b, downloaded)
	if emptied != 0 || charge != ([16]byte{}) {
		b = binary.BigEndian.AppendUint64(b, uint64(emptied))
		b = append(b, charge[:]...)
	}
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
			sum.add(h.swarm(ih, sw.downloaded, sw.emptied, sw.charge))
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
	for i := range s.connIDs {
		sum.add(h.connID(i, &s.connIDs[i]))
	}
	h.recomputePrivate(s, sum)
}
