package fsm

import (
	"bytes"
	"encoding/hex"
	"hash/maphash"
	"maps"
	"math"
	"math/bits"
	"slices"
	"strings"
	"unsafe"
)

// File index layout.
//
// Memory is the constraint: the index holds millions of files, most with
// one holder, and the budget is about 120 heap bytes per file plus
// holding. So a file is a fixed-size record without pointers (64 bytes)
// that keeps its first holder inline, in a per-shard slice; a shard finds a
// record by its binary ID through an open-addressing table of 4-byte slot
// numbers (like ipTable); names live in a per-shard byte arena; holders
// beyond the first go into a small side map of the few files that have
// them; and peers and files refer to each other by 32-bit references
// (peerRef, fileRef) instead of strings.
//
// Copy-on-write: a shard carries a generation like every other object of
// the state (see state). Its first change after a Snapshot copies the
// record slice, the free list and the table (1/nShards of the index); the
// name arena is shared, since it is only ever appended to: the bytes of a
// name never change once written, and a compaction writes a new arena.
//
// References are handed out in apply order and reused LIFO, so two replicas
// with the same log have the same layout; a restored replica may lay the
// same state out differently. No query, digest or snapshot depends on the
// layout: they order by PeerID and FileID.

// peerRef names a joined peer within one state; 0 is no peer. The peer
// table maps it to the PeerID.
type peerRef uint32

// fileRef names a file record: its shard in the top 8 bits, its slot in the
// shard in the low slotBits.
type fileRef uint32

const (
	slotBits = 24
	// maxShardFiles is the most files one shard (all IDs with one first
	// byte) can hold: the slot must fit a fileRef.
	maxShardFiles = 1<<slotBits - 1
	// maxArena is the most name bytes a shard can hold: offsets are 32
	// bits.
	maxArena = math.MaxUint32
	// indexMin is the smallest non-empty slot table.
	indexMin = 8
	// compactMin is the dead name bytes below which a shard never
	// compacts its arena.
	compactMin = 4 << 10
)

func refOf(shard int, slot uint32) fileRef { return fileRef(uint32(shard)<<slotBits | slot) }
func (r fileRef) shard() int               { return int(r >> slotBits) }
func (r fileRef) slot() uint32             { return uint32(r) & (1<<slotBits - 1) }

// nameRef locates a name in its shard's arena. Names are 1..MaxNameLen
// bytes, so n fits a byte.
type nameRef struct {
	off uint32
	n   uint8
}

// fileRec is one indexed file. A free slot has peer == 0.
type fileRec struct {
	id       [32]byte
	size     int64
	grams    uint64  // search prefilter; see gramsOf and refreshGrams
	peer     peerRef // the first holder
	nameOff  uint32  // the first holder's name
	holders  uint32  // number of holders, >= 1; beyond the first they are in fileShard.more
	nameLen  uint8
	pieceLog uint8 // log2 of the piece size
}

func (r *fileRec) name0() nameRef     { return nameRef{r.nameOff, r.nameLen} }
func (r *fileRec) setName0(n nameRef) { r.nameOff, r.nameLen = n.off, n.n }
func (r *fileRec) pieceSize() int64   { return 1 << r.pieceLog }

// hexID returns the file's FileID.
func (r *fileRec) hexID() FileID { return FileID(hex.EncodeToString(r.id[:])) }

// moreHolders are a file's holders beyond the first; same immutability rule
// as peer.
type moreHolders struct {
	gen uint64
	m   cowMap[peerRef, nameRef]
}

// fileShard holds the files whose ID starts with one byte.
type fileShard struct {
	gen   uint64
	seed  maphash.Seed // hashes IDs for index; decides only where a slot number sits
	recs  []fileRec
	free  []uint32 // free slots of recs, reused last first
	index []uint32 // open addressing, linear probing: slot+1, 0 empty
	n     int      // files
	names []byte   // arena: only appended to, replaced by compact
	dead  int      // arena bytes no name refers to
	// refs counts the names that several holders of one file share:
	// arena offset → number of references, present only when >= 2.
	refs map[uint32]uint32
	more map[uint32]*moreHolders // by slot; only files with holders > 1
}

func newFileShard(gen uint64) *fileShard {
	return &fileShard{gen: gen, seed: maphash.MakeSeed()}
}

// clone returns a copy that can be changed at generation gen without
// disturbing sh.
func (sh *fileShard) clone(gen uint64) *fileShard {
	c := *sh
	c.gen = gen
	c.recs = slices.Clone(sh.recs)
	c.free = slices.Clone(sh.free)
	c.index = slices.Clone(sh.index)
	c.refs = maps.Clone(sh.refs)
	c.more = maps.Clone(sh.more)
	return &c
}

func (sh *fileShard) home(id *[32]byte) int {
	hi, _ := bits.Mul64(maphash.Bytes(sh.seed, id[:]), uint64(len(sh.index)))
	return int(hi)
}

// find returns id's slot, and its position in index or the empty position
// where it would go.
func (sh *fileShard) find(id *[32]byte) (pos int, slot uint32, ok bool) {
	if len(sh.index) == 0 {
		return 0, 0, false
	}
	i := sh.home(id)
	for {
		v := sh.index[i]
		if v == 0 {
			return i, 0, false
		}
		if sh.recs[v-1].id == *id {
			return i, v - 1, true
		}
		if i++; i == len(sh.index) {
			i = 0
		}
	}
}

func (sh *fileShard) lookup(id *[32]byte) (uint32, bool) {
	_, slot, ok := sh.find(id)
	return slot, ok
}

// insert stores r (whose ID is not present) and returns its slot.
func (sh *fileShard) insert(r fileRec) uint32 {
	if (sh.n+1)*8 > len(sh.index)*7 {
		sh.resize(max(indexMin, len(sh.index)+len(sh.index)/2))
	}
	var slot uint32
	if k := len(sh.free); k > 0 {
		slot = sh.free[k-1]
		sh.free = sh.free[:k-1]
		sh.recs[slot] = r
	} else {
		slot = uint32(len(sh.recs))
		sh.recs = appendSmallStep(sh.recs, r)
	}
	pos, _, _ := sh.find(&r.id)
	sh.index[pos] = slot + 1
	sh.n++
	return slot
}

// appendSmallStep appends r, growing a full slice by an eighth rather than
// append's quarter to double: records are most of the index's memory, and
// a shard's slice is copied whole anyway after every snapshot.
func appendSmallStep(recs []fileRec, r fileRec) []fileRec {
	if n := len(recs); n == cap(recs) {
		grown := make([]fileRec, n, n+max(4, n/8))
		copy(grown, recs)
		recs = grown
	}
	return append(recs, r)
}

// remove deletes the file in slot, with its extra holders. The caller has
// released its names.
func (sh *fileShard) remove(slot uint32) {
	pos, _, ok := sh.find(&sh.recs[slot].id)
	if !ok {
		return // unreachable: every live slot is indexed
	}
	sh.deleteAt(pos)
	sh.recs[slot] = fileRec{}
	delete(sh.more, slot)
	sh.n--
	switch {
	case sh.n == 0:
		sh.recs, sh.free, sh.index = nil, nil, nil
	default:
		sh.free = append(sh.free, slot)
		if len(sh.index) > indexMin && sh.n*4 < len(sh.index) {
			sh.resize(max(indexMin, len(sh.index)/2))
		}
	}
}

// deleteAt empties position i and shifts later members of its probe run
// back, so that no lookup needs a tombstone.
func (sh *fileShard) deleteAt(i int) {
	size := len(sh.index)
	j := i
	for {
		if j++; j == size {
			j = 0
		}
		v := sh.index[j]
		if v == 0 {
			break
		}
		h := sh.home(&sh.recs[v-1].id)
		// Move j to i unless its home lies cyclically in (i, j].
		if (j > i && (h <= i || h > j)) || (j < i && h <= i && h > j) {
			sh.index[i] = v
			i = j
		}
	}
	sh.index[i] = 0
}

func (sh *fileShard) resize(size int) {
	sh.index = make([]uint32, size)
	for slot := range sh.recs {
		if r := &sh.recs[slot]; r.peer != 0 {
			pos, _, _ := sh.find(&r.id)
			sh.index[pos] = uint32(slot) + 1
		}
	}
}

// name returns the bytes of n as a string without copying. Arena bytes
// never change once written, so the string stays valid, and keeps its
// arena alive, for as long as it is referenced; results handed to callers
// are cloned so that they do not pin an arena.
func (sh *fileShard) name(n nameRef) string {
	return unsafe.String(&sh.names[n.off], int(n.n))
}

func (sh *fileShard) live() int { return len(sh.names) - sh.dead }

// addName appends s (1..MaxNameLen bytes) to the arena. The caller made
// room for it (registerFiles compacts an arena that would outgrow
// maxArena).
func (sh *fileShard) addName(s string) nameRef {
	off := len(sh.names)
	if len(sh.names)+len(s) > cap(sh.names) {
		grown := make([]byte, len(sh.names), len(sh.names)+max(len(s), len(sh.names)/8))
		copy(grown, sh.names)
		sh.names = grown
	}
	sh.names = append(sh.names, s...)
	return nameRef{off: uint32(off), n: uint8(len(s))}
}

// share records one more reference to the arena bytes of n.
func (sh *fileShard) share(n nameRef) {
	if sh.refs == nil {
		sh.refs = make(map[uint32]uint32)
	}
	if c, ok := sh.refs[n.off]; ok {
		sh.refs[n.off] = c + 1
	} else {
		sh.refs[n.off] = 2
	}
}

// release drops one reference to the arena bytes of n.
func (sh *fileShard) release(n nameRef) {
	if c, ok := sh.refs[n.off]; ok {
		if c > 2 {
			sh.refs[n.off] = c - 1
		} else {
			delete(sh.refs, n.off)
		}
		return
	}
	sh.dead += int(n.n)
}

// maybeCompact rewrites the arena once most of it is dead.
func (sh *fileShard) maybeCompact(gen uint64) {
	if sh.dead >= compactMin && sh.dead*2 > len(sh.names) {
		sh.compact(gen)
	}
}

// compact copies the live names to a new arena and updates every
// reference. The old arena is left as it was: a snapshot may be reading it.
func (sh *fileShard) compact(gen uint64) {
	names := make([]byte, 0, sh.live())
	moved := make(map[uint32]uint32, len(sh.refs)) // old → new offset of shared names
	move := func(n nameRef) nameRef {
		if _, shared := sh.refs[n.off]; shared {
			if o, ok := moved[n.off]; ok {
				return nameRef{o, n.n}
			}
			moved[n.off] = uint32(len(names))
		}
		off := uint32(len(names))
		names = append(names, sh.names[n.off:n.off+uint32(n.n)]...)
		return nameRef{off, n.n}
	}
	var scratch []kv[peerRef, nameRef]
	for slot := range sh.recs {
		r := &sh.recs[slot]
		if r.peer == 0 {
			continue
		}
		r.setName0(move(r.name0()))
		if r.holders > 1 {
			mh := sh.moreMut(uint32(slot), gen)
			scratch = mh.m.appendSorted(scratch[:0])
			for _, e := range scratch {
				mh.m.set(e.k, move(e.v), gen)
			}
		}
	}
	var refs map[uint32]uint32
	if len(sh.refs) > 0 {
		refs = make(map[uint32]uint32, len(sh.refs))
		for old, c := range sh.refs {
			refs[moved[old]] = c
		}
	}
	sh.names, sh.dead, sh.refs = names, 0, refs
}

// moreMut returns slot's extra holders, private to generation gen,
// creating them if needed.
func (sh *fileShard) moreMut(slot uint32, gen uint64) *moreHolders {
	mh := sh.more[slot]
	switch {
	case mh == nil:
		mh = &moreHolders{gen: gen}
		if sh.more == nil {
			sh.more = make(map[uint32]*moreHolders)
		}
		sh.more[slot] = mh
	case mh.gen != gen:
		mh = &moreHolders{gen: gen, m: mh.m.clone()}
		sh.more[slot] = mh
	}
	return mh
}

// holder returns the name peer p gives the file in slot.
func (sh *fileShard) holder(slot uint32, p peerRef) (nameRef, bool) {
	r := &sh.recs[slot]
	if r.peer == p {
		return r.name0(), true
	}
	if r.holders > 1 {
		return sh.more[slot].m.get(p)
	}
	return nameRef{}, false
}

// eachHolder calls fn for every holder of the file in slot, the first
// holder first, until fn returns false.
func (sh *fileShard) eachHolder(slot uint32, fn func(peerRef, nameRef) bool) {
	r := &sh.recs[slot]
	if !fn(r.peer, r.name0()) || r.holders == 1 {
		return
	}
	sh.more[slot].m.each(fn)
}

// setHolder stores p's name for the file in slot (the shard is private to
// gen) and reports whether p already held it. The caller releases the old
// name.
func (sh *fileShard) setHolder(slot uint32, p peerRef, n nameRef, gen uint64) (old nameRef, existed bool) {
	r := &sh.recs[slot]
	if r.peer == p {
		old = r.name0()
		r.setName0(n)
		return old, true
	}
	old, existed = sh.moreMut(slot, gen).m.set(p, n, gen)
	if !existed {
		r.holders++
	}
	return old, existed
}

// delHolder removes holder p (not the last one) from the file in slot and
// returns its name, which the caller releases. When the first holder
// leaves, the extra holder with the smallest reference takes its place.
func (sh *fileShard) delHolder(slot uint32, p peerRef, gen uint64) nameRef {
	r := &sh.recs[slot]
	mh := sh.moreMut(slot, gen)
	var old nameRef
	if r.peer == p {
		old = r.name0()
		first := true
		var next peerRef
		mh.m.each(func(q peerRef, _ nameRef) bool {
			if first || q < next {
				next, first = q, false
			}
			return true
		})
		n, _ := mh.m.del(next, gen)
		r.peer = next
		r.setName0(n)
	} else {
		old, _ = mh.m.del(p, gen)
	}
	r.holders--
	if r.holders == 1 {
		delete(sh.more, slot)
	}
	return old
}

// minName is the lexicographically smallest name among the holders of the
// file in slot.
func (sh *fileShard) minName(slot uint32) string {
	best := sh.name(sh.recs[slot].name0())
	sh.eachHolder(slot, func(_ peerRef, n nameRef) bool {
		if s := sh.name(n); s < best {
			best = s
		}
		return true
	})
	return best
}

// refreshGrams updates the search filter of the file in slot after its
// holders changed; added is the name just added, if any. The filter is
// exact while the file has at most smallMax holders and may keep stale
// bits above that.
func (sh *fileShard) refreshGrams(slot uint32, added string) {
	r := &sh.recs[slot]
	if r.holders > smallMax {
		r.grams |= gramsOfName(added)
		return
	}
	r.grams = sh.exactGrams(slot)
}

// exactGrams is the filter of all names of the file in slot.
func (sh *fileShard) exactGrams(slot uint32) uint64 {
	var m uint64
	sh.eachHolder(slot, func(_ peerRef, n nameRef) bool {
		m |= gramsOfName(sh.name(n))
		return true
	})
	return m
}

// gramsOfName is gramsOf(strings.ToLower(name)), without allocating for
// ASCII names.
func gramsOfName(name string) uint64 {
	var m uint64
	for i := 0; i+1 < len(name); i++ {
		a, b := name[i], name[i+1]
		if a >= 0x80 || b >= 0x80 {
			return gramsOf(strings.ToLower(name))
		}
		m |= 1 << ((uint32(lowerASCII(a))<<8 | uint32(lowerASCII(b))) * 0x9E3779B1 >> 26)
	}
	return m
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// appendLower appends strings.ToLower(name) to dst, without allocating for
// ASCII names.
func appendLower(dst []byte, name string) []byte {
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			return append(dst, strings.ToLower(name)...)
		}
	}
	for i := 0; i < len(name); i++ {
		dst = append(dst, lowerASCII(name[i]))
	}
	return dst
}

// rawID converts a FileID to its 32 bytes; ok is false if id is not valid.
func rawID(id FileID) (raw [32]byte, ok bool) {
	if len(id) != FileIDLen {
		return raw, false
	}
	for i := range raw {
		hi, lo := unhex(id[2*i]), unhex(id[2*i+1])
		if hi < 0 || lo < 0 {
			return raw, false
		}
		raw[i] = byte(hi<<4 | lo)
	}
	return raw, true
}

func cmpRec(a, b *fileRec) int { return bytes.Compare(a.id[:], b.id[:]) }

// peerChunkLen is the number of PeerIDs in one chunk of the peer table.
const peerChunkLen = 256

type peerChunk struct {
	gen uint64
	ids [peerChunkLen]PeerID
}

// peerTable maps each peerRef to its PeerID. It is stored by value in the
// state; mut makes its slices private to the live generation, chunkMut one
// chunk.
type peerTable struct {
	gen    uint64
	chunks []*peerChunk
	free   []peerRef // released references, reused last first
	n      peerRef   // references ever handed out
}

func (t *peerTable) id(r peerRef) PeerID {
	i := int(r - 1)
	return t.chunks[i/peerChunkLen].ids[i%peerChunkLen]
}

func (t *peerTable) mut(gen uint64) {
	if t.gen != gen {
		t.chunks = slices.Clone(t.chunks)
		t.free = slices.Clone(t.free)
		t.gen = gen
	}
}

func (t *peerTable) put(r peerRef, id PeerID, gen uint64) {
	i := int(r - 1)
	c := t.chunks[i/peerChunkLen]
	if c.gen != gen {
		cc := *c
		cc.gen = gen
		c = &cc
		t.chunks[i/peerChunkLen] = c
	}
	c.ids[i%peerChunkLen] = id
}

// alloc hands out a reference for id.
func (t *peerTable) alloc(id PeerID, gen uint64) peerRef {
	t.mut(gen)
	var r peerRef
	if k := len(t.free); k > 0 {
		r = t.free[k-1]
		t.free = t.free[:k-1]
	} else {
		t.n++
		r = t.n
		if int(r-1)/peerChunkLen == len(t.chunks) {
			t.chunks = append(t.chunks, &peerChunk{gen: gen})
		}
	}
	t.put(r, id, gen)
	return r
}

// release frees r for reuse.
func (t *peerTable) release(r peerRef, gen uint64) {
	t.mut(gen)
	t.put(r, "", gen)
	t.free = append(t.free, r)
}
