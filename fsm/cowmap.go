package fsm

import (
	"cmp"
	"maps"
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

type bucket[K refKey, V any] struct {
	gen uint64
	m   map[K]V
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
			v, ok := bk.m[k]
			return v, ok
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
		bk = &bucket[K, V]{gen: gen, m: make(map[K]V)}
		b.b[i] = bk
	case bk.gen != gen:
		bk = &bucket[K, V]{gen: gen, m: maps.Clone(bk.m)}
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
	old, existed = bk.m[k]
	bk.m[k] = v
	if !existed {
		b.n++
	}
	return old, existed
}

func (m *cowMap[K, V]) grow(gen uint64) {
	b := &bigMap[K, V]{gen: gen, n: len(m.small)}
	for _, e := range m.small {
		b.bucketMut(bucketOf(e.k), gen).m[e.k] = e.v
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
	} else if _, ok := bk.m[k]; !ok {
		return old, false
	}
	b := m.bigMut(gen)
	bk := b.bucketMut(i, gen)
	old = bk.m[k]
	delete(bk.m, k)
	b.n--
	if len(bk.m) == 0 {
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
		if bk == nil {
			continue
		}
		for k, v := range bk.m {
			if !fn(k, v) {
				return
			}
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
