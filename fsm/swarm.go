package fsm

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
		sw.acct[last] = recAcct{} // drop its chain of earlier epochs too
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
