package fsm

import (
	"math"
	"slices"
	"sync/atomic"
)

// SwarmPeerInfo is one swarm record as the queries report it.
type SwarmPeerInfo struct {
	Peer   SwarmPeerID
	IP     [16]byte // IPv4 as v4-mapped
	Port   uint16
	Seeder bool
	Key    uint32 // 0 unless HasKey
	HasKey bool
}

// info reads the replicated fields one by one: TouchSwarmPeer may be
// writing seen concurrently.
func (r *swarmRec) info() SwarmPeerInfo {
	return SwarmPeerInfo{
		Peer: r.peer, IP: r.ip, Port: r.port,
		Seeder: r.flags&recSeeder != 0, Key: r.key, HasKey: r.flags&recHasKey != 0,
	}
}

// SwarmPeer returns the first record of peer p in swarm ih, whatever its
// address; ok is false if there is none. It scans the swarm: tools and
// tests use it, announces use SwarmPeerAt.
func (f *FSM) SwarmPeer(ih InfoHash, p SwarmPeerID) (info SwarmPeerInfo, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	sw := f.st.swarm(ih)
	if sw == nil {
		return SwarmPeerInfo{}, false
	}
	i := sw.findPeer(p)
	if i < 0 {
		return SwarmPeerInfo{}, false
	}
	return sw.recs[i].info(), true
}

// SwarmPeerAt returns the record an announce from peer p at address ip
// (with the key, if hasKey) is about — see Announce; ok is false if there
// is none.
func (f *FSM) SwarmPeerAt(ih InfoHash, p SwarmPeerID, ip [16]byte, hasKey bool, key uint32) (info SwarmPeerInfo, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	sw := f.st.swarm(ih)
	if sw == nil {
		return SwarmPeerInfo{}, false
	}
	i := sw.lookup(p, ip, hasKey, key)
	if i < 0 {
		return SwarmPeerInfo{}, false
	}
	return sw.recs[i].info(), true
}

// SwarmPeers returns at most want records of swarm ih for an announce from
// exclude, never exclude itself, with the swarm's seeder (complete) and
// leecher (incomplete) counts, which include exclude.
//
// For a seeder (forSeeder) the leechers come first, from an offset derived
// from rnd, then seeders if want is not reached. Otherwise the records are
// a spread sample of the whole swarm — leechers and seeders roughly in
// proportion — chosen by a start and stride derived from rnd. The caller
// passes fresh randomness (the FSM reads no random source); the same state
// and rnd give the same answer. The cost is O(want), whatever the swarm's
// size.
func (f *FSM) SwarmPeers(ih InfoHash, exclude SwarmPeerID, want int, forSeeder bool, rnd uint64) (peers []SwarmPeerInfo, complete, incomplete int) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	sw := f.st.swarm(ih)
	if sw == nil {
		return nil, 0, 0
	}
	n, nl := len(sw.recs), int(sw.nLeech)
	complete, incomplete = n-nl, nl
	if want <= 0 || n == 0 {
		return nil, complete, incomplete
	}
	peers = make([]SwarmPeerInfo, 0, min(want, n))
	take := func(i int) {
		if r := &sw.recs[i]; r.peer != exclude {
			peers = append(peers, r.info())
		}
	}
	if forSeeder {
		for _, part := range [2][2]int{{0, nl}, {nl, n}} {
			lo, m := part[0], part[1]-part[0]
			start := 0
			if m > 0 {
				start = int(rnd % uint64(m))
			}
			for k := 0; k < m && len(peers) < want; k++ {
				take(lo + (start+k)%m)
			}
			rnd = rnd>>32 | rnd<<32
		}
		return peers, complete, incomplete
	}
	start := rnd % uint64(n)
	step := strideFor(n, want, rnd>>32)
	for k, i := 0, start; k < n && len(peers) < want; k++ {
		take(int(i))
		i = (i + step) % uint64(n)
	}
	return peers, complete, incomplete
}

// SwarmView is what an announce's answer needs from one read: the swarm's
// counts, the record the announce is about (see SwarmPeerAt), and the log
// index applied when they were read.
type SwarmView struct {
	Complete, Incomplete int
	Record               SwarmPeerInfo
	Present              bool
	Applied              uint64
}

// SwarmViewAt reads a SwarmView for an announce from peer p at ip (with
// the key, if hasKey) under one lock.
func (f *FSM) SwarmViewAt(ih InfoHash, p SwarmPeerID, ip [16]byte, hasKey bool, key uint32) SwarmView {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v := SwarmView{Applied: f.st.applied}
	sw := f.st.swarm(ih)
	if sw == nil {
		return v
	}
	v.Complete, v.Incomplete = len(sw.recs)-int(sw.nLeech), int(sw.nLeech)
	if i := sw.lookup(p, ip, hasKey, key); i >= 0 {
		v.Record, v.Present = sw.recs[i].info(), true
	}
	return v
}

// strideFor returns a step coprime to n, about n/want (with some jitter from
// r), so that want steps from any start visit distinct, evenly spread slots.
func strideFor(n, want int, r uint64) uint64 {
	if n <= 1 {
		return 1
	}
	step := uint64(max(1, n/max(want, 1)))
	step += r % (step/2 + 1)
	step %= uint64(n)
	for step == 0 || gcd(step, uint64(n)) != 1 {
		step++
		if step >= uint64(n) {
			step = 1
		}
	}
	return step
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Scrape returns swarm ih's seeder and leecher counts and how many
// completed events it has counted (kept while the swarm is tracked, even
// when it has no records). An unknown swarm is all zeros.
func (f *FSM) Scrape(ih InfoHash) (complete, incomplete, downloaded int) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	sw := f.st.swarm(ih)
	if sw == nil {
		return 0, 0, 0
	}
	return len(sw.recs) - int(sw.nLeech), int(sw.nLeech), int(min(sw.downloaded, math.MaxInt))
}

// SwarmExists reports whether the index holds swarm ih (with records, or
// with only a downloaded count).
func (f *FSM) SwarmExists(ih InfoHash) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.swarm(ih) != nil
}

// TrackerAllowed reports whether the policy tracks ih: an Announce for it
// would not fail with ErrNotTracked.
func (f *FSM) TrackerAllowed(ih InfoHash) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.policy.allowed(ih)
}

// TrackerPolicyState returns the tracker mode and the allow and deny sets,
// each sorted.
func (f *FSM) TrackerPolicyState() (mode TrackerMode, allow, deny []InfoHash) {
	f.mu.RLock()
	p := f.st.policy
	mode = p.mode
	for ih := range p.allow {
		allow = append(allow, ih)
	}
	for ih := range p.deny {
		deny = append(deny, ih)
	}
	f.mu.RUnlock()
	slices.SortFunc(allow, cmpHash)
	slices.SortFunc(deny, cmpHash)
	return mode, allow, deny
}

// SwarmEntriesFrom returns how many swarm records, over all swarms, have
// the address ip, plus the empty swarms whose last record had it (see
// ExpireSwarmPeers). It is replicated state, so every master enforces the
// same per-address quota.
func (f *FSM) SwarmEntriesFrom(ip [16]byte) int {
	addr, _, _ := f.SwarmQuotaUse(ip)
	return addr
}

// SwarmQuotaUse returns what SwarmEntriesFrom counts for ip's address and,
// for IPv6, for the /64 and the /48 holding it (0 for IPv4).
func (f *FSM) SwarmQuotaUse(ip [16]byte) (addr, net64, net48 int) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	u := f.st.ipUse(ip)
	return u[levelAddr], u[level64], u[level48]
}

// SwarmStats returns the number of swarms held (including swarms that have
// no records left but remember a downloaded count) and of swarm records.
func (f *FSM) SwarmStats() (swarms, peers int) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.nSwarms, f.st.nSwarmRecs
}

// Soft liveness.
//
// Each swarm record carries a "seen" time that is NOT replicated: it is in
// neither the digest nor the snapshot, and Apply reads it nowhere. The
// master writes it outside Apply (TouchSwarmPeer, for a re-announce that
// changes nothing, and when a new leader gives everyone a fresh lease);
// applying an Announce sets it to the command's Time, and Restore sets it to
// each record's changed time. The leader reads it with SilentSwarmPeers and
// proposes ExpireSwarmPeers for what it returns; since the expiry compares
// the replicated changed time, replicas whose seen times differ still apply
// it identically. It is kept in whole seconds, rounded up when stored and
// compared with a bound rounded down, so a record is never reported silent
// early, and at most two seconds late.

// TouchSwarmPeer records that peer p of swarm ih at address ip was heard
// from at nowUnixNano, and reports whether the record exists. A zero ip
// (a renewal from a master that predates addressed records) touches every
// record of p, scanning the swarm. It takes only the read lock and is safe
// concurrently with every other method.
func (f *FSM) TouchSwarmPeer(ih InfoHash, p SwarmPeerID, ip [16]byte, nowUnixNano int64) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	sw := f.st.swarm(ih)
	if sw == nil {
		return false
	}
	secs := ceilSecs(nowUnixNano)
	if ip == ([16]byte{}) {
		found := false
		for i := range sw.recs {
			if sw.recs[i].peer == p {
				atomic.StoreUint32(&sw.recs[i].seen, secs)
				found = true
			}
		}
		return found
	}
	i := sw.find(p, ip)
	if i < 0 {
		return false
	}
	atomic.StoreUint32(&sw.recs[i].seen, secs)
	return true
}

// SilentSwarmPeers returns at most max records last seen before
// beforeUnixNano (see TouchSwarmPeer), in no particular order. It scans
// every swarm, holding the read lock for one shard (1/256 of the swarms) at
// a time, so it never holds up Apply for long.
func (f *FSM) SilentSwarmPeers(beforeUnixNano int64, max int) []SwarmRef {
	if max <= 0 {
		return nil
	}
	before := floorSecs(beforeUnixNano)
	var out []SwarmRef
	for i := range nShards {
		f.mu.RLock()
		for ih, sw := range f.st.swarms[i].m {
			for j := range sw.recs {
				r := &sw.recs[j]
				if atomic.LoadUint32(&r.seen) < before {
					out = append(out, SwarmRef{InfoHash: ih, Peer: r.peer, IP: r.ip})
					if len(out) == max {
						f.mu.RUnlock()
						return out
					}
				}
			}
		}
		f.mu.RUnlock()
	}
	return out
}

// EmptySwarms returns at most max swarms that have no records and emptied
// (lost their last record) at or before beforeUnixNano, in no particular
// order; the leader proposes their end (ExpireSwarmPeers.Swarms). It scans
// like SilentSwarmPeers.
func (f *FSM) EmptySwarms(beforeUnixNano int64, max int) []InfoHash {
	if max <= 0 {
		return nil
	}
	var out []InfoHash
	for i := range nShards {
		f.mu.RLock()
		for ih, sw := range f.st.swarms[i].m {
			if len(sw.recs) == 0 && sw.emptied <= beforeUnixNano {
				out = append(out, ih)
				if len(out) == max {
					f.mu.RUnlock()
					return out
				}
			}
		}
		f.mu.RUnlock()
	}
	return out
}

// TouchAllSwarmPeers marks every swarm record seen at nowUnixNano: a new
// leader gives every record a full lifetime on its own clock, since the
// seen times it holds were set by other masters' clocks or by commands. It
// takes the read lock one shard at a time, like SilentSwarmPeers.
func (f *FSM) TouchAllSwarmPeers(nowUnixNano int64) {
	secs := ceilSecs(nowUnixNano)
	for i := range nShards {
		f.mu.RLock()
		for _, sw := range f.st.swarms[i].m {
			for j := range sw.recs {
				atomic.StoreUint32(&sw.recs[j].seen, secs)
			}
		}
		f.mu.RUnlock()
	}
}
