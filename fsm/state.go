package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"maps"
	"math/bits"
	"slices"
)

const (
	// nShards is the number of peer shards and of file shards. A snapshot
	// copies two arrays of nShards pointers; the first write to a shard
	// after a snapshot copies that shard's map (about 1/nShards of the
	// index), so the cost of copy-on-write is spread over many applies.
	nShards = 256

	// DedupWindow is how many recent request IDs the FSM remembers per
	// peer. A retry older than that is applied again (harmlessly for
	// RegisterFiles, UnregisterFiles and JoinPeer, which are idempotent).
	DedupWindow = 128
)

// outcome is the remembered result of a deduplicated request.
type outcome uint8

const (
	outcomeOK       outcome = 0
	outcomeConflict outcome = 1 // detail is the conflicting FileID
)

// note holds the detail of a remembered outcome other than outcomeOK.
type note struct {
	req    uint64
	detail string
}

// peer is one joined peer. Objects reachable from a state are immutable once
// their gen is older than state.gen: they may be shared with a snapshot that
// Persist is reading on another goroutine. state.mutPeer clones them.
type peer struct {
	gen      uint64
	id       PeerID
	addr     string
	token    Token
	joinedAt int64
	lastJoin int64
	files    cowMap[FileID, struct{}]

	// Dedup ring: the request with sequence number s (0, 1, 2, ... in
	// apply order) lives at index s % DedupWindow; len(reqs) ==
	// len(codes) == min(next, DedupWindow).
	next  uint64
	reqs  []uint64
	codes []outcome
	notes []note // one per entry whose code is not outcomeOK
}

// recall returns the remembered outcome of request req, if any.
func (p *peer) recall(req uint64) (Response, bool) {
	for i, r := range p.reqs {
		if r == req {
			return Response{Duplicate: true, Err: outcomeErr(p.codes[i], p.noteFor(r))}, true
		}
	}
	return Response{}, false
}

func (p *peer) noteFor(req uint64) string {
	for _, n := range p.notes {
		if n.req == req {
			return n.detail
		}
	}
	return ""
}

// entries calls fn for each remembered request in sequence order.
func (p *peer) entries(fn func(seq, req uint64, code outcome, detail string)) {
	n := uint64(len(p.reqs))
	for s := p.next - n; s < p.next; s++ {
		i := s % DedupWindow
		detail := ""
		if p.codes[i] != outcomeOK {
			detail = p.noteFor(p.reqs[i])
		}
		fn(s, p.reqs[i], p.codes[i], detail)
	}
}

// holderName is what one holder calls a file, with a lower-cased copy for
// Search (the same string when the name has no upper case).
type holderName struct {
	name  string
	lower string
}

// file is one indexed file; same immutability rule as peer.
type file struct {
	gen       uint64
	id        FileID
	size      int64
	pieceSize int64
	holders   cowMap[PeerID, holderName]
}

// minName is the lexicographically smallest name among the holders.
func (fl *file) minName() string {
	var best string
	first := true
	fl.holders.each(func(_ PeerID, h holderName) bool {
		if first || h.name < best {
			best, first = h.name, false
		}
		return true
	})
	return best
}

type peerShard struct {
	gen uint64
	m   map[PeerID]*peer
}

type fileShard struct {
	gen uint64
	m   map[FileID]fileSlot
}

// fileSlot is a file shard's map value. grams lets Search reject most files
// without dereferencing them: it has one bit set per byte bigram of the
// holders' lower-cased names (see gramsOf). It is exact while the file has
// at most smallMax holders and may keep stale bits above that, so it can
// over-approximate but never under-approximate. It is a search cache, not
// replicated state: it is in neither the digest nor the snapshot.
type fileSlot struct {
	f     *file
	grams uint64
}

// gramsOf returns the bigram filter of s: for every two adjacent bytes, one
// of 64 bits chosen by a multiplicative hash. If w is a substring of s then
// gramsOf(w) &^ gramsOf(s) == 0.
func gramsOf(s string) uint64 {
	var m uint64
	for i := 0; i+1 < len(s); i++ {
		m |= 1 << ((uint32(s[i])<<8 | uint32(s[i+1])) * 0x9E3779B1 >> 26)
	}
	return m
}

// exactGrams is the filter of all of fl's holder names.
func exactGrams(fl *file) uint64 {
	var m uint64
	fl.holders.each(func(_ PeerID, h holderName) bool {
		m |= gramsOf(h.lower)
		return true
	})
	return m
}

func peerShardOf(id PeerID) int { return int(fnv32(string(id)) % nShards) }

// fileShardOf takes the first byte of the (valid) FileID, so that walking the
// shards in order and each shard in sorted order visits files sorted by ID.
func fileShardOf(id FileID) int { return unhex(id[0])<<4 | unhex(id[1]) }

// state is the replicated state plus its bookkeeping. Copying a state value
// (as Snapshot does) freezes a view: everything reachable from it has a gen
// older than the live state's gen after the bump, so the live state copies
// before writing.
type state struct {
	gen     uint64
	applied uint64
	counts  Counts
	digest  sum256
	peers   [nShards]*peerShard
	files   [nShards]*fileShard
	swarmState
}

func (s *state) init(gen uint64) {
	s.gen = gen
	for i := range s.peers {
		s.peers[i] = &peerShard{gen: gen, m: make(map[PeerID]*peer)}
		s.files[i] = &fileShard{gen: gen, m: make(map[FileID]fileSlot)}
	}
	s.initSwarms(gen)
}

func (s *state) peer(id PeerID) *peer { return s.peers[peerShardOf(id)].m[id] }
func (s *state) file(id FileID) *file { return s.files[fileShardOf(id)].m[id].f }

func (s *state) peerShardMut(id PeerID) *peerShard {
	i := peerShardOf(id)
	sh := s.peers[i]
	if sh.gen != s.gen {
		sh = &peerShard{gen: s.gen, m: maps.Clone(sh.m)}
		s.peers[i] = sh
	}
	return sh
}

func (s *state) fileShardMut(id FileID) *fileShard {
	i := fileShardOf(id)
	sh := s.files[i]
	if sh.gen != s.gen {
		sh = &fileShard{gen: s.gen, m: maps.Clone(sh.m)}
		s.files[i] = sh
	}
	return sh
}

// mutPeer returns p itself if it is private to the live state, or else a
// clone installed in p's place.
func (s *state) mutPeer(p *peer) *peer {
	if p.gen == s.gen {
		return p
	}
	c := *p
	c.gen = s.gen
	c.files = p.files.clone()
	c.reqs = slices.Clone(p.reqs)
	c.codes = slices.Clone(p.codes)
	c.notes = slices.Clone(p.notes)
	s.peerShardMut(p.id).m[p.id] = &c
	return &c
}

// mutFile is mutPeer for files.
func (s *state) mutFile(fl *file) *file {
	if fl.gen == s.gen {
		return fl
	}
	c := *fl
	c.gen = s.gen
	c.holders = fl.holders.clone()
	sh := s.fileShardMut(fl.id)
	slot := sh.m[fl.id]
	slot.f = &c
	sh.m[fl.id] = slot
	return &c
}

// refreshGrams updates fl's search filter after its holders changed; added
// is the lower-cased name just added, if any.
func (s *state) refreshGrams(fl *file, added string) {
	sh := s.fileShardMut(fl.id)
	slot := sh.m[fl.id]
	if fl.holders.len() <= smallMax {
		slot.grams = exactGrams(fl)
	} else {
		slot.grams |= gramsOf(added)
	}
	sh.m[fl.id] = slot
}

// sum256 is a 256-bit unsigned integer, least significant limb first. The
// state digest is the sum modulo 2^256 of the SHA-256 of every canonical
// record of the state (see hasher). Addition is commutative, so the digest
// does not depend on the order records were added, and a change costs one
// subtraction and one addition.
type sum256 [4]uint64

func (s *sum256) add(h [32]byte) {
	var c uint64
	for i := range s {
		s[i], c = bits.Add64(s[i], binary.BigEndian.Uint64(h[24-8*i:]), c)
	}
}

func (s *sum256) sub(h [32]byte) {
	var b uint64
	for i := range s {
		s[i], b = bits.Sub64(s[i], binary.BigEndian.Uint64(h[24-8*i:]), b)
	}
}

func (s sum256) bytes() [32]byte {
	var out [32]byte
	for i := range s {
		binary.BigEndian.PutUint64(out[24-8*i:], s[i])
	}
	return out
}

// Record tags of the canonical encoding hashed into the digest.
const (
	recPeer    = 'P'
	recRequest = 'R'
	recFile    = 'F'
	recHolding = 'H'
)

// hasher hashes canonical records: a tag byte, then each field as either a
// uvarint length and bytes (strings) or 8 big-endian bytes (integers). The
// encoding is unambiguous, so distinct states have distinct record sets.
type hasher struct{ buf []byte }

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func (h *hasher) peer(p *peer) [32]byte {
	b := append(h.buf[:0], recPeer)
	b = appendStr(b, string(p.id))
	b = appendStr(b, p.addr)
	b = append(b, p.token[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(p.joinedAt))
	b = binary.BigEndian.AppendUint64(b, uint64(p.lastJoin))
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) request(id PeerID, seq, req uint64, code outcome, detail string) [32]byte {
	b := append(h.buf[:0], recRequest)
	b = appendStr(b, string(id))
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint64(b, req)
	b = append(b, byte(code))
	b = appendStr(b, detail)
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) file(fl *file) [32]byte {
	b := append(h.buf[:0], recFile)
	b = appendStr(b, string(fl.id))
	b = binary.BigEndian.AppendUint64(b, uint64(fl.size))
	b = binary.BigEndian.AppendUint64(b, uint64(fl.pieceSize))
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) holding(id FileID, holder PeerID, name string) [32]byte {
	b := append(h.buf[:0], recHolding)
	b = appendStr(b, string(id))
	b = appendStr(b, string(holder))
	b = appendStr(b, name)
	h.buf = b
	return sha256.Sum256(b)
}

// recompute returns the digest of s computed from scratch.
func (h *hasher) recompute(s *state) sum256 {
	var sum sum256
	for _, sh := range s.peers {
		for _, p := range sh.m {
			sum.add(h.peer(p))
			p.entries(func(seq, req uint64, code outcome, detail string) {
				sum.add(h.request(p.id, seq, req, code, detail))
			})
		}
	}
	for _, sh := range s.files {
		for _, slot := range sh.m {
			fl := slot.f
			sum.add(h.file(fl))
			fl.holders.each(func(id PeerID, hn holderName) bool {
				sum.add(h.holding(fl.id, id, hn.name))
				return true
			})
		}
	}
	h.recomputeSwarms(s, &sum)
	return sum
}
