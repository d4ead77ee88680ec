package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
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
	ref      peerRef                   // this peer in state.refs; stable while it is joined
	files    cowMap[fileRef, struct{}] // the files it holds

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

type peerShard struct {
	gen uint64
	m   map[PeerID]*peer
}

// gramsOf returns the bigram filter of s: for every two adjacent bytes, one
// of 64 bits chosen by a multiplicative hash. If w is a substring of s then
// gramsOf(w) &^ gramsOf(s) == 0. A file's filter (fileRec.grams) has the
// bits of its holders' lower-cased names, so Search can reject most files
// without reading a name. It is a search cache, not replicated state: it
// is in neither the digest nor the snapshot.
func gramsOf(s string) uint64 {
	var m uint64
	for i := 0; i+1 < len(s); i++ {
		m |= 1 << ((uint32(s[i])<<8 | uint32(s[i+1])) * 0x9E3779B1 >> 26)
	}
	return m
}

func peerShardOf(id PeerID) int { return int(fnv32(string(id)) % nShards) }

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
	files   [nShards]*fileShard // by the first byte of the binary ID, so shard order is ID order
	refs    peerTable
	swarmState
	revocations // the deny list of certificates (revoke.go)
	// lastTime is the latest Time of any applied command that carries
	// one (see LastCommandTime). Not replicated as such: Restore derives
	// it from the peers' and swarm records' times.
	lastTime int64
}

func (s *state) init(gen uint64) {
	s.gen = gen
	for i := range s.peers {
		s.peers[i] = &peerShard{gen: gen, m: make(map[PeerID]*peer)}
		s.files[i] = newFileShard(gen)
	}
	s.refs = peerTable{gen: gen}
	s.initSwarms(gen)
}

func (s *state) peer(id PeerID) *peer { return s.peers[peerShardOf(id)].m[id] }

// file finds a file by ID; ok is false if id is malformed or not indexed.
func (s *state) file(id FileID) (sh *fileShard, slot uint32, raw [32]byte, ok bool) {
	raw, ok = rawID(id)
	if !ok {
		return nil, 0, raw, false
	}
	sh = s.files[raw[0]]
	slot, ok = sh.lookup(&raw)
	return sh, slot, raw, ok
}

func (s *state) peerShardMut(id PeerID) *peerShard {
	i := peerShardOf(id)
	sh := s.peers[i]
	if sh.gen != s.gen {
		sh = &peerShard{gen: s.gen, m: maps.Clone(sh.m)}
		s.peers[i] = sh
	}
	return sh
}

func (s *state) fileShardMut(i int) *fileShard {
	sh := s.files[i]
	if sh.gen != s.gen {
		sh = sh.clone(s.gen)
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

// appendID appends a binary file ID as appendStr appends its FileID.
func appendID(b []byte, id *[32]byte) []byte {
	b = binary.AppendUvarint(b, FileIDLen)
	return hex.AppendEncode(b, id[:])
}

func (h *hasher) file(r *fileRec) [32]byte {
	b := append(h.buf[:0], recFile)
	b = appendID(b, &r.id)
	b = binary.BigEndian.AppendUint64(b, uint64(r.size))
	b = binary.BigEndian.AppendUint64(b, uint64(r.pieceSize()))
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) holding(id *[32]byte, holder PeerID, name string) [32]byte {
	b := append(h.buf[:0], recHolding)
	b = appendID(b, id)
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
		for slot := range sh.recs {
			r := &sh.recs[slot]
			if r.peer == 0 {
				continue
			}
			sum.add(h.file(r))
			sh.eachHolder(uint32(slot), func(p peerRef, n nameRef) bool {
				sum.add(h.holding(&r.id, s.refs.id(p), sh.name(n)))
				return true
			})
		}
	}
	h.recomputeSwarms(s, &sum)
	h.recomputeRevocations(s, &sum)
	return sum
}
