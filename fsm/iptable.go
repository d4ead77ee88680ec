package fsm

import "math/bits"

// ipKey is a counting key: an address, or a network (see ipKeysOf).
type ipKey struct{ hi, lo uint64 }

// ipTable counts swarm records per address key (see ipKeysOf). It is an
// open-addressing hash table with linear probing and backward-shift
// deletion, in two flat slices: 12 bytes a slot, and with its load kept
// between about 0.58 and 0.875 (it grows by half, and the slot of a key is
// found by multiply-high rather than a power-of-two mask), 14 to 21 bytes
// an address. A Go map would cost 19 to 39, which at one address per
// record is a third of the swarm memory budget.
//
// The zero value is an empty table.
type ipTable struct {
	keys   []ipKey
	counts []uint32 // 0 marks an empty slot
	n      int      // occupied slots
}

const ipTableMin = 8

// ipMix hashes a key with the splitmix64 finalizer. It differs from the shard hash
// (ipShardOf), so keys of one shard still spread over the shard's table.
func ipMix(key ipKey) uint64 { return mix64(key.hi*0x9E3779B97F4A7C15 ^ key.lo) }

// mix64 is the splitmix64 finalizer.
func mix64(k uint64) uint64 {
	k ^= k >> 30
	k *= 0xBF58476D1CE4E5B9
	k ^= k >> 27
	k *= 0x94D049BB133111EB
	return k ^ k>>31
}

func (t *ipTable) home(k ipKey) int {
	hi, _ := bits.Mul64(ipMix(k), uint64(len(t.keys)))
	return int(hi)
}

// find returns k's slot, or the empty slot where it would go, and whether
// it is present. The table must not be empty.
func (t *ipTable) find(k ipKey) (int, bool) {
	i := t.home(k)
	for t.counts[i] != 0 {
		if t.keys[i] == k {
			return i, true
		}
		if i++; i == len(t.keys) {
			i = 0
		}
	}
	return i, false
}

func (t *ipTable) get(k ipKey) uint32 {
	if t.n == 0 {
		return 0
	}
	if i, ok := t.find(k); ok {
		return t.counts[i]
	}
	return 0
}

// add changes k's count by delta (+1 or -1); a count that reaches 0 leaves
// the table.
func (t *ipTable) add(k ipKey, delta int) {
	if delta > 0 {
		if (t.n+1)*8 > len(t.keys)*7 {
			t.resize(max(ipTableMin, len(t.keys)+len(t.keys)/2))
		}
		i, ok := t.find(k)
		if !ok {
			t.keys[i] = k
			t.n++
		}
		t.counts[i] += uint32(delta)
		return
	}
	if t.n == 0 {
		return
	}
	i, ok := t.find(k)
	if !ok {
		return
	}
	if c := int(t.counts[i]) + delta; c > 0 {
		t.counts[i] = uint32(c)
		return
	}
	t.deleteSlot(i)
	t.n--
	if len(t.keys) > ipTableMin && t.n*4 < len(t.keys) {
		t.resize(max(ipTableMin, len(t.keys)/2))
	}
}

// deleteSlot empties slot i and shifts later members of its probe run
// back, so that no lookup needs a tombstone.
func (t *ipTable) deleteSlot(i int) {
	size := len(t.keys)
	j := i
	for {
		if j++; j == size {
			j = 0
		}
		if t.counts[j] == 0 {
			break
		}
		h := t.home(t.keys[j])
		// Move j to i unless its home lies cyclically in (i, j].
		if (j > i && (h <= i || h > j)) || (j < i && h <= i && h > j) {
			t.keys[i], t.counts[i] = t.keys[j], t.counts[j]
			i = j
		}
	}
	t.keys[i], t.counts[i] = ipKey{}, 0
}

func (t *ipTable) resize(size int) {
	old := *t
	t.keys = make([]ipKey, size)
	t.counts = make([]uint32, size)
	for i, c := range old.counts {
		if c != 0 {
			j, _ := t.find(old.keys[i])
			t.keys[j], t.counts[j] = old.keys[i], c
		}
	}
}

// clone returns an independent copy.
func (t *ipTable) clone() ipTable {
	return ipTable{keys: append([]ipKey(nil), t.keys...), counts: append([]uint32(nil), t.counts...), n: t.n}
}
