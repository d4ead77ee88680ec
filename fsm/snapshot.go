package fsm

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"strings"

	"github.com/hashicorp/raft"
)

// Snapshot format. Version 5 is a stream of:
//
//	magic        8 bytes "FSHRSNAP"
//	version      uvarint (SnapshotVersion)
//	appliedIndex uvarint
//	peerCount    uvarint, then per peer, sorted by ID:
//	    id str, addr str, token 32 bytes, joinedAt varint, lastJoin varint,
//	    next uvarint (dedup sequence), n uvarint (= min(next, DedupWindow)),
//	    n × (requestID uvarint, outcome byte, detail str if outcome != 0),
//	    oldest first
//	fileCount    uvarint, then per file, sorted by ID:
//	    id 32 bytes (binary), size uvarint, pieceSize uvarint,
//	    holderCount uvarint, holderCount × (peer str, name str) sorted by peer
//	policy       mode byte,
//	    allowCount uvarint, allowCount × info-hash 20 bytes, ascending,
//	    denyCount uvarint, denyCount × info-hash 20 bytes, ascending,
//	    next uvarint, n uvarint (= min(next, DedupWindow)),
//	    n × requestID uvarint, oldest first
//	swarmCount   uvarint, then per swarm, sorted by info-hash:
//	    info-hash 20 bytes, downloaded uvarint, recCount uvarint,
//	    recCount × (peer 20 bytes, ip 16 bytes, port 2 bytes big-endian,
//	    flags byte (1 seeder, 2 has key), key 4 bytes big-endian if has key,
//	    changed varint), leechers first, in the state's slot order;
//	    a swarm without records (version 3) adds emptied varint and
//	    charge 16 bytes after recCount
//	connIDs      (version 3) n uvarint (at most 3), newest first,
//	    n × (time varint, secret 32 bytes)
//	revokedCount (version 3) uvarint, then per revoked certificate, in
//	    numeric order of serial (shorter first, then bytewise):
//	    serial str (lower-case hex), time varint
//	private      (version 4) see privsnap.go
//	seal         32 bytes: SHA-256(magic, version, appliedIndex, state digest)
//
// In version 4 a swarm record whose flags have bit 0x80 set is a private
// record: member uvarint, uploaded uvarint, downloaded uvarint (its
// baseline) follow its key; if bit 0x40 is set too, its baseline from
// before its counters last went down follows (uploaded uvarint,
// downloaded uvarint, last credit time varint, reset time varint). In
// version 5 a count uvarint (1 to 4) precedes them, and that many such
// epochs follow, newest first (a chain of resets). Version 3 is version 4
// without them and without the private section.
//
// where str is a uvarint length followed by that many bytes, and every
// varint is minimal. Version 2 is version 3 without the connIDs and deny
// list sections and the empty swarms' fields, version 1 also without the
// policy and swarm sections; Restore still reads both (an open policy, no
// swarms, no connection-ID secrets, an empty deny list). The
// encoding is canonical: a given state has exactly one snapshot, and
// Restore accepts nothing else. Swarm records keep their slot order, which
// is not part of the digest but decides which peers SwarmPeers hands out,
// so a restored replica answers like the one that wrote the snapshot. The
// seal is the checksum: Restore recomputes the state digest from what it
// read, so any change to the content, the applied index or the framing is
// detected.
const (
	snapshotMagic = "FSHRSNAP"
	// SnapshotVersion is the snapshot format version Persist writes.
	// Restore reads versions 1 through SnapshotVersion.
	SnapshotVersion = 5
)

// Snapshot captures the state in O(nShards) time, without copying it: later
// applies copy whatever they change (copy-on-write), so the returned
// snapshot keeps seeing the state as of this call. Call it from the applying
// goroutine, as raft does; its Persist may then run on any goroutine
// concurrently with Apply.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	snap := &fsmSnapshot{st: f.st}
	// Everything reachable from snap.st now has a gen older than the live
	// one, so the live state copies it before writing.
	f.st.gen++
	return snap, nil
}

type fsmSnapshot struct {
	st state
}

// Persist streams the frozen state to sink in the format above, then closes
// the sink, or cancels it on error.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.writeTo(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	return sink.Close()
}

// Release drops the frozen state.
func (s *fsmSnapshot) Release() { s.st = state{} }

type snapWriter struct {
	w   *bufio.Writer
	tmp [binary.MaxVarintLen64]byte
}

func (w *snapWriter) uvarint(v uint64) {
	n := binary.PutUvarint(w.tmp[:], v)
	w.w.Write(w.tmp[:n])
}

func (w *snapWriter) varint(v int64) {
	n := binary.PutVarint(w.tmp[:], v)
	w.w.Write(w.tmp[:n])
}

func (w *snapWriter) str(s string) {
	w.uvarint(uint64(len(s)))
	w.w.WriteString(s)
}

// writeTo encodes the frozen state. bufio.Writer errors are sticky, so the
// error is checked once per record and at the end.
func (s *fsmSnapshot) writeTo(out io.Writer) error {
	st := &s.st
	w := &snapWriter{w: bufio.NewWriterSize(out, 256<<10)}
	w.w.WriteString(snapshotMagic)
	w.uvarint(SnapshotVersion)
	w.uvarint(st.applied)

	peers := make([]*peer, 0, st.counts.Peers)
	for _, sh := range st.peers {
		for _, p := range sh.m {
			peers = append(peers, p)
		}
	}
	slices.SortFunc(peers, func(a, b *peer) int { return strings.Compare(string(a.id), string(b.id)) })
	w.uvarint(uint64(len(peers)))
	for _, p := range peers {
		if _, err := w.w.Write(nil); err != nil {
			return err
		}
		w.str(string(p.id))
		w.str(p.addr)
		w.w.Write(p.token[:])
		w.varint(p.joinedAt)
		w.varint(p.lastJoin)
		w.uvarint(p.next)
		w.uvarint(uint64(len(p.reqs)))
		p.entries(func(_, req uint64, code outcome, detail string) {
			w.uvarint(req)
			w.w.WriteByte(byte(code))
			if code != outcomeOK {
				w.str(detail)
			}
		})
	}
	peers = nil

	w.uvarint(uint64(st.counts.Files))
	var (
		slots   []uint32
		holders []kv[PeerID, string]
	)
	for _, sh := range st.files { // shard order is ID order
		slots = slots[:0]
		for slot := range sh.recs {
			if sh.recs[slot].peer != 0 {
				slots = append(slots, uint32(slot))
			}
		}
		slices.SortFunc(slots, func(a, b uint32) int { return cmpRec(&sh.recs[a], &sh.recs[b]) })
		for _, slot := range slots {
			if _, err := w.w.Write(nil); err != nil {
				return err
			}
			rec := &sh.recs[slot]
			w.w.Write(rec.id[:])
			w.uvarint(uint64(rec.size))
			w.uvarint(uint64(rec.pieceSize()))
			holders = holders[:0]
			sh.eachHolder(slot, func(p peerRef, n nameRef) bool {
				holders = append(holders, kv[PeerID, string]{st.refs.id(p), sh.name(n)})
				return true
			})
			if len(holders) > 1 {
				slices.SortFunc(holders, func(a, b kv[PeerID, string]) int { return strings.Compare(string(a.k), string(b.k)) })
			}
			w.uvarint(uint64(len(holders)))
			for _, h := range holders {
				w.str(string(h.k))
				w.str(h.v)
			}
		}
	}
	if err := s.writeSwarms(w); err != nil {
		return err
	}
	w.writeRevocations(st)
	w.writePrivate(st)
	seal := sealOf(SnapshotVersion, st.applied, st.digest)
	w.w.Write(seal[:])
	return w.w.Flush()
}

// sealOf binds the format version and the applied index to the state
// digest.
func sealOf(version, applied uint64, d sum256) [32]byte {
	b := make([]byte, 0, len(snapshotMagic)+2+8+32)
	b = append(b, snapshotMagic...)
	b = binary.AppendUvarint(b, version)
	b = binary.BigEndian.AppendUint64(b, applied)
	db := d.bytes()
	b = append(b, db[:]...)
	return sha256.Sum256(b)
}

// Restore replaces the whole state with a snapshot written by Persist,
// including AppliedIndex. It reads rc to the end and closes it. Input that
// is not a valid snapshot — truncated, trailing bytes, unknown version, an
// invariant violated, or a digest that does not match the content — yields
// an error wrapping ErrCorruptSnapshot; a failure to read yields the reader's
// error. Either way the FSM is unchanged. Restore never panics on its input.
// Like Apply, it must not run concurrently with Apply or Snapshot; queries
// may run concurrently and see the old state until it returns.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	r := &snapReader{r: bufio.NewReaderSize(rc, 256<<10)}
	st, err := r.read(f.st.gen + 1)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
	return nil
}

type snapReader struct {
	r    *bufio.Reader
	err  error
	buf  []byte
	recs []swarmRec // scratch for one swarm's records
	// accts is the scratch baselines of one swarm's records, nil while
	// it has no private record; maxMember the highest member a record
	// names, checked against the members read later.
	accts     []recAcct
	maxMember uint32
}

// corrupt records the first error, wrapping ErrCorruptSnapshot.
func (r *snapReader) corrupt(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrCorruptSnapshot, fmt.Sprintf(format, args...))
	}
}

func (r *snapReader) ioErr(err error) {
	if r.err != nil {
		return
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		r.corrupt("truncated")
		return
	}
	r.err = fmt.Errorf("fsm: read snapshot: %w", err)
}

func (r *snapReader) byte() byte {
	if r.err != nil {
		return 0
	}
	c, err := r.r.ReadByte()
	if err != nil {
		r.ioErr(err)
	}
	return c
}

func (r *snapReader) uvarint() uint64 {
	var v uint64
	for shift := 0; shift < 64; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if shift == 63 && c > 1 {
			break
		}
		if c == 0 && shift > 0 {
			r.corrupt("non-minimal varint")
			return 0
		}
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v
		}
	}
	r.corrupt("varint overflows 64 bits")
	return 0
}

func (r *snapReader) varint() int64 {
	u := r.uvarint()
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

func (r *snapReader) full(b []byte) {
	if r.err != nil {
		return
	}
	if _, err := io.ReadFull(r.r, b); err != nil {
		r.ioErr(err)
	}
}

// bytes reads a str of at most max bytes into a scratch buffer that the
// next call overwrites.
func (r *snapReader) bytes(what string, max int) []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(max) {
		r.corrupt("%s of %d bytes, limit %d", what, n, max)
		return nil
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, max)
	}
	r.buf = r.buf[:n]
	r.full(r.buf)
	return r.buf
}

func (r *snapReader) str(what string, max int) string {
	return string(r.bytes(what, max))
}

func (r *snapReader) check(err error) {
	if err != nil {
		r.corrupt("%v", err)
	}
}

func (r *snapReader) read(gen uint64) (state, error) {
	var magic [len(snapshotMagic)]byte
	r.full(magic[:])
	if r.err == nil && string(magic[:]) != snapshotMagic {
		r.corrupt("bad magic %q", magic[:])
	}
	version := r.uvarint()
	if r.err == nil && (version == 0 || version > SnapshotVersion) {
		r.corrupt("unknown format version %d (this build reads 1..%d)", version, SnapshotVersion)
	}
	var st state
	st.init(gen)
	st.applied = r.uvarint()

	nPeers := r.uvarint()
	var prev PeerID
	for i := uint64(0); i < nPeers && r.err == nil; i++ {
		r.readPeer(&st, &prev, i == 0)
	}
	nFiles := r.uvarint()
	var prevFile [32]byte
	for i := uint64(0); i < nFiles && r.err == nil; i++ {
		r.readFile(&st, &prevFile, i == 0)
	}
	if version >= 2 {
		r.readSwarms(&st, version)
	}
	if version >= 3 {
		r.readRevocations(&st)
	}
	if version >= 4 {
		r.readPrivate(&st)
	}
	var want [32]byte
	r.full(want[:])
	if r.err == nil {
		if _, err := r.r.ReadByte(); err != io.EOF {
			if err != nil {
				r.ioErr(err)
			} else {
				r.corrupt("trailing bytes after digest")
			}
		}
	}
	if r.err != nil {
		return state{}, r.err
	}
	var h hasher
	st.digest = h.recompute(&st)
	if got := sealOf(version, st.applied, st.digest); !bytes.Equal(got[:], want[:]) {
		return state{}, fmt.Errorf("%w: seal mismatch: content seals to %x, trailer says %x", ErrCorruptSnapshot, got, want)
	}
	return st, nil
}

func (r *snapReader) readPeer(st *state, prev *PeerID, first bool) {
	id := PeerID(r.str("peer id", MaxPeerIDLen))
	if r.err != nil {
		return
	}
	r.check(id.Validate())
	if !first && id <= *prev {
		r.corrupt("peer %s out of order after %s", id, *prev)
	}
	*prev = id
	p := &peer{gen: st.gen, id: id}
	p.addr = r.str("address", MaxAddrLen)
	if r.err == nil {
		r.check(validateAddr(p.addr))
	}
	r.full(p.token[:])
	if r.err == nil && p.token.IsZero() {
		r.corrupt("peer %s has a zero token", id)
	}
	p.joinedAt = r.varint()
	p.lastJoin = r.varint()
	st.lastTime = max(st.lastTime, p.lastJoin)
	p.next = r.uvarint()
	n := r.uvarint()
	if r.err == nil && n != min(p.next, DedupWindow) {
		r.corrupt("peer %s: %d remembered requests, want %d", id, n, min(p.next, DedupWindow))
	}
	if r.err != nil {
		return
	}
	p.reqs = make([]uint64, n)
	p.codes = make([]outcome, n)
	for s := p.next - n; s < p.next && r.err == nil; s++ {
		i := s % DedupWindow
		p.reqs[i] = r.uvarint()
		p.codes[i] = outcome(r.byte())
		if r.err != nil {
			break
		}
		if p.reqs[i] == 0 {
			r.corrupt("peer %s: zero request id", id)
		}
		switch p.codes[i] {
		case outcomeOK:
		case outcomeConflict:
			detail := FileID(r.str("conflict detail", FileIDLen))
			if r.err == nil {
				r.check(detail.Validate())
			}
			p.notes = append(p.notes, note{req: p.reqs[i], detail: string(detail)})
		default:
			r.corrupt("peer %s: unknown outcome %d", id, p.codes[i])
		}
	}
	if r.err != nil {
		return
	}
	p.ref = st.refs.alloc(id, st.gen)
	st.peers[peerShardOf(id)].m[id] = p
	st.counts.Peers++
}

func (r *snapReader) readFile(st *state, prev *[32]byte, first bool) {
	var rec fileRec
	r.full(rec.id[:])
	if r.err != nil {
		return
	}
	if !first && bytes.Compare(rec.id[:], prev[:]) <= 0 {
		r.corrupt("file %x out of order after %x", rec.id, *prev)
		return
	}
	*prev = rec.id
	size, piece := r.uvarint(), r.uvarint()
	if r.err != nil {
		return
	}
	if size > math.MaxInt64 || piece > MaxPieceSize || !validPieceSize(int64(piece)) {
		r.corrupt("file %x: size %d, piece size %d", rec.id, size, piece)
		return
	}
	rec.size, rec.pieceLog = int64(size), uint8(bits.TrailingZeros64(piece))
	n := r.uvarint()
	if r.err == nil && (n == 0 || n > uint64(st.counts.Peers)) {
		r.corrupt("file %x: %d holders among %d peers", rec.id, n, st.counts.Peers)
	}
	if r.err != nil {
		return
	}
	shard := int(rec.id[0])
	sh := st.files[shard]
	if sh.n >= maxShardFiles {
		r.corrupt("more than %d files whose IDs start with %02x", maxShardFiles, shard)
		return
	}
	var (
		prevHolder PeerID
		slot       uint32
	)
	for j := uint64(0); j < n && r.err == nil; j++ {
		b := r.bytes("holder id", MaxPeerIDLen)
		if r.err != nil {
			return
		}
		p := st.peer(PeerID(b))
		if p == nil {
			r.corrupt("file %x: holder %q has not joined", rec.id, b)
			return
		}
		if j > 0 && cmp.Compare(p.id, prevHolder) <= 0 {
			r.corrupt("file %x: holder %s out of order", rec.id, p.id)
			return
		}
		prevHolder = p.id
		name := r.bytes("name", MaxNameLen)
		if r.err != nil {
			return
		}
		r.check(validateName(string(name)))
		if r.err != nil {
			return
		}
		if j == 0 {
			if len(sh.names)+len(name) > maxArena {
				r.corrupt("more than %d name bytes in files whose IDs start with %02x", maxArena, shard)
				return
			}
			rec.peer, rec.holders = p.ref, 1
			rec.setName0(sh.addName(string(name)))
			slot = sh.insert(rec)
		} else {
			h0 := sh.recs[slot].name0()
			var nr nameRef
			if sh.name(h0) == string(name) {
				nr = h0
				sh.share(nr)
			} else {
				if len(sh.names)+len(name) > maxArena {
					r.corrupt("more than %d name bytes in files whose IDs start with %02x", maxArena, shard)
					return
				}
				nr = sh.addName(string(name))
			}
			sh.setHolder(slot, p.ref, nr, st.gen)
		}
		p.files.set(refOf(shard, slot), struct{}{}, st.gen)
		st.counts.Holdings++
	}
	sh.recs[slot].grams = sh.exactGrams(slot)
	st.counts.Files++
}
