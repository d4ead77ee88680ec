package fsm

import (
	"cmp"
	"math/bits"
	"slices"
)

// refKey is a cowMap key: a peer or file reference (see peerRef, fileRef).
type refKey interface{ ~uint32 }

// Shape of a cowMap. Most files have one holder and most peers a handful of
// files, so a map starts as a sorted slice (one allocation, no per-entry
// overhead) and becomes bucketed only when it grows past smallMax entries.
const (
	smallMax   = 16 // a sorted slice holds at most this many entries
	smallMin   = 8  // a bucketed map at or below this size turns back into a slice
	bigBuckets = 64 // buckets of a bucketed map; a clone after a snapshot copies one bucket at a time
)

type kv[K, V any] struct {
	k K
	v V
}

// cowMap is a copy-on-write map from 32-bit references to values: a peer's
// set of files, or a file's holders beyond the first. It is owned by an object that carries a
// generation (see state); the object's clone calls clone, and every mutation
// passes the current generation so that a bucketed map shared with a
// snapshot is copied, one bucket at a time, before it is changed. Iteration
// of a bucketed map is unordered; callers that need order use appendSorted.
//
// The zero value is an empty map.
type cowMap[K refKey, V any] struct {
	small []kv[K, V] // sorted by key; used while big == nil
	big   *bigMap[K, V]
}

type bigMap[K refKey, V any] struct {
	gen uint64
	n   int
	b   [bigBuckets]*bucket[K, V] // nil means empty
}

// bucket is an open-addressing hash table with linear probing and
// backward-shift deletion, like ipTable: 4 bytes plus a V a slot at a load
// between about 0.44 and 0.875, where a Go map of uint32 would cost 10 to
// 20 bytes an entry.
type bucket[K refKey, V any] struct {
	gen  uint64
	keys []uint32 // key+1; 0 marks an empty slot
	vals []V
	n    int
}

const bucketMin = 8

func (b *bucket[K, V]) home(key uint32) int {
	hi, _ := bits.Mul64(mix64(uint64(key)), uint64(len(b.keys)))
	return int(hi)
}

// find returns k's slot, or the empty slot where it would go.
func (b *bucket[K, V]) find(k K) (int, bool) {
	if len(b.keys) == 0 {
		return 0, false
	}
	key := uint32(k) + 1
	i := b.home(key)
	for b.keys[i] != 0 {
		if b.keys[i] == key {
			return i, true
		}
		if i++; i == len(b.keys) {
			i = 0
		}
	}
	return i, false
}

func (b *bucket[K, V]) get(k K) (V, bool) {
	if i, ok := b.find(k); ok {
		return b.vals[i], true
	}
	var zero V
	return zero, false
}

func (b *bucket[K, V]) put(k K, v V) (old V, existed bool) {
	if (b.n+1)*8 > len(b.keys)*7 {
		b.resize(max(bucketMin, len(b.keys)+len(b.keys)/2))
	}
	i, ok := b.find(k)
	if ok {
		old, b.vals[i] = b.vals[i], v
		return old, true
	}
	b.keys[i], b.vals[i] = uint32(k)+1, v
	b.n++
	return old, false
}

func (b *bucket[K, V]) remove(k K) (old V, existed bool) {
	i, ok := b.find(k)
	if !ok {
		return old, false
	}
	old = b.vals[i]
	size := len(b.keys)
	var zero V
	for j := i; ; {
		if j++; j == size {
			j = 0
		}
		if b.keys[j] == 0 {
			break
		}
		h := b.home(b.keys[j])
		// Move j to i unless its home lies cyclically in (i, j].
		if (j > i && (h <= i || h > j)) || (j < i && h <= i && h > j) {
			b.keys[i], b.vals[i] = b.keys[j], b.vals[j]
			i = j
		}
	}
	b.keys[i], b.vals[i] = 0, zero
	b.n--
	if len(b.keys) > bucketMin && b.n*4 < len(b.keys) {
		b.resize(max(bucketMin, len(b.keys)/2))
	}
	return old, true
}

func (b *bucket[K, V]) resize(size int) {
	keys, vals := b.keys, b.vals
	b.keys, b.vals = make([]uint32, size), make([]V, size)
	for i, key := range keys {
		if key != 0 {
			j, _ := b.find(K(key - 1))
			b.keys[j], b.vals[j] = key, vals[i]
		}
	}
}

// each calls fn for every entry until fn returns false, and reports
// whether it did not stop.
func (b *bucket[K, V]) each(fn func(K, V) bool) bool {
	for i, key := range b.keys {
		if key != 0 && !fn(K(key-1), b.vals[i]) {
			return false
		}
	}
	return true
}

// fnv32 is FNV-1a: deterministic across processes, unlike maphash, so that
// the peer shard of an ID never depends on a random seed.
func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// bucketOf spreads references (handed out densely by the FSM itself, so
// not chosen by any client) over the buckets by a multiplicative hash.
func bucketOf[K refKey](k K) int { return int(uint32(k) * 0x9E3779B1 >> 26) }

func (m *cowMap[K, V]) len() int {
	if m.big != nil {
		return m.big.n
	}
	return len(m.small)
}

func (m *cowMap[K, V]) search(k K) (int, bool) {
	return slices.BinarySearchFunc(m.small, k, func(e kv[K, V], k K) int { return cmp.Compare(e.k, k) })
}

func (m *cowMap[K, V]) get(k K) (V, bool) {
	if m.big != nil {
		if bk := m.big.b[bucketOf(k)]; bk != nil {
			return bk.get(k)
		}
		var zero V
		return zero, false
	}
	if i, ok := m.search(k); ok {
		return m.small[i].v, true
	}
	var zero V
	return zero, false
}

// clone returns a map that can be mutated at a newer generation without
// disturbing m: the slice is copied now, the buckets later, on write.
func (m *cowMap[K, V]) clone() cowMap[K, V] {
	return cowMap[K, V]{small: slices.Clone(m.small), big: m.big}
}

func (m *cowMap[K, V]) bigMut(gen uint64) *bigMap[K, V] {
	if m.big.gen != gen {
		b := *m.big
		b.gen = gen
		m.big = &b
	}
	return m.big
}

func (b *bigMap[K, V]) bucketMut(i int, gen uint64) *bucket[K, V] {
	bk := b.b[i]
	switch {
	case bk == nil:
		bk = &bucket[K, V]{gen: gen}
		b.b[i] = bk
	case bk.gen != gen:
		bk = &bucket[K, V]{gen: gen, keys: slices.Clone(bk.keys), vals: slices.Clone(bk.vals), n: bk.n}
		b.b[i] = bk
	}
	return bk
}

// set stores v under k and returns the previous value, if any.
func (m *cowMap[K, V]) set(k K, v V, gen uint64) (old V, existed bool) {
	if m.big == nil {
		i, ok := m.search(k)
		if ok {
			old, m.small[i].v = m.small[i].v, v
			return old, true
		}
		if len(m.small) < smallMax {
			m.small = slices.Insert(m.small, i, kv[K, V]{k, v})
			return old, false
		}
		m.grow(gen)
	}
	b := m.bigMut(gen)
	bk := b.bucketMut(bucketOf(k), gen)
	old, existed = bk.put(k, v)
	if !existed {
		b.n++
	}
	return old, existed
}

func (m *cowMap[K, V]) grow(gen uint64) {
	b := &bigMap[K, V]{gen: gen, n: len(m.small)}
	for _, e := range m.small {
		b.bucketMut(bucketOf(e.k), gen).put(e.k, e.v)
	}
	m.big, m.small = b, nil
}

// del removes k and returns its value, if it was present.
func (m *cowMap[K, V]) del(k K, gen uint64) (old V, existed bool) {
	if m.big == nil {
		i, ok := m.search(k)
		if !ok {
			return old, false
		}
		old = m.small[i].v
		m.small = slices.Delete(m.small, i, i+1)
		if len(m.small) == 0 {
			m.small = nil
		}
		return old, true
	}
	i := bucketOf(k)
	if bk := m.big.b[i]; bk == nil {
		return old, false
	} else if _, ok := bk.find(k); !ok {
		return old, false
	}
	b := m.bigMut(gen)
	bk := b.bucketMut(i, gen)
	old, _ = bk.remove(k)
	b.n--
	if bk.n == 0 {
		b.b[i] = nil
	}
	if b.n <= smallMin {
		m.small = m.appendSorted(make([]kv[K, V], 0, b.n))
		m.big = nil
	}
	return old, true
}

// each calls fn for every entry, in no particular order, until fn returns
// false.
func (m *cowMap[K, V]) each(fn func(K, V) bool) {
	if m.big == nil {
		for _, e := range m.small {
			if !fn(e.k, e.v) {
				return
			}
		}
		return
	}
	for _, bk := range m.big.b {
		if bk != nil && !bk.each(fn) {
			return
		}
	}
}

// appendSorted appends copies of all entries to dst, sorted by key.
func (m *cowMap[K, V]) appendSorted(dst []kv[K, V]) []kv[K, V] {
	if m.big == nil {
		return append(dst, m.small...)
	}
	start := len(dst)
	m.each(func(k K, v V) bool {
		dst = append(dst, kv[K, V]{k, v})
		return true
	})
	slices.SortFunc(dst[start:], func(a, b kv[K, V]) int { return cmp.Compare(a.k, b.k) })
	return dst
}
