package fsm

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/hashicorp/raft"
)

// Snapshot format. Version 2 is a stream of:
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
//	    changed varint), leechers first, in the state's slot order
//	seal         32 bytes: SHA-256(magic, version, appliedIndex, state digest)
//
// where str is a uvarint length followed by that many bytes, and every
// varint is minimal. Version 1 is the same without the policy and swarm
// sections; Restore still reads it (an open policy, no swarms). The
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
	SnapshotVersion = 2
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
		files   []*file
		holders []kv[PeerID, holderName]
		raw     [32]byte
	)
	for _, sh := range st.files { // shard order is ID order; see fileShardOf
		files = files[:0]
		for _, slot := range sh.m {
			files = append(files, slot.f)
		}
		slices.SortFunc(files, func(a, b *file) int { return strings.Compare(string(a.id), string(b.id)) })
		for _, fl := range files {
			if _, err := w.w.Write(nil); err != nil {
				return err
			}
			if _, err := hex.Decode(raw[:], []byte(fl.id)); err != nil {
				return fmt.Errorf("file id %q: %w", fl.id, err) // unreachable: ids are validated
			}
			w.w.Write(raw[:])
			w.uvarint(uint64(fl.size))
			w.uvarint(uint64(fl.pieceSize))
			holders = fl.holders.appendSorted(holders[:0])
			w.uvarint(uint64(len(holders)))
			for _, h := range holders {
				w.str(string(h.k))
				w.str(h.v.name)
			}
		}
	}
	if err := s.writeSwarms(w); err != nil {
		return err
	}
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
	var prevFile FileID
	for i := uint64(0); i < nFiles && r.err == nil; i++ {
		r.readFile(&st, &prevFile, i == 0)
	}
	if version >= 2 {
		r.readSwarms(&st)
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
	st.peers[peerShardOf(id)].m[id] = p
	st.counts.Peers++
}

func (r *snapReader) readFile(st *state, prev *FileID, first bool) {
	var raw [32]byte
	r.full(raw[:])
	id := FileID(hex.EncodeToString(raw[:]))
	if !first && id <= *prev && r.err == nil {
		r.corrupt("file %s out of order after %s", id, *prev)
	}
	*prev = id
	fl := &file{gen: st.gen, id: id}
	size, piece := r.uvarint(), r.uvarint()
	if r.err != nil {
		return
	}
	if size > math.MaxInt64 || piece > MaxPieceSize || !validPieceSize(int64(piece)) {
		r.corrupt("file %s: size %d, piece size %d", id, size, piece)
		return
	}
	fl.size, fl.pieceSize = int64(size), int64(piece)
	n := r.uvarint()
	if r.err == nil && (n == 0 || n > uint64(st.counts.Peers)) {
		r.corrupt("file %s: %d holders among %d peers", id, n, st.counts.Peers)
	}
	var prevHolder PeerID
	for j := uint64(0); j < n && r.err == nil; j++ {
		b := r.bytes("holder id", MaxPeerIDLen)
		if r.err != nil {
			return
		}
		p := st.peer(PeerID(b))
		if p == nil {
			r.corrupt("file %s: holder %q has not joined", id, b)
			return
		}
		if j > 0 && cmp.Compare(p.id, prevHolder) <= 0 {
			r.corrupt("file %s: holder %s out of order", id, p.id)
			return
		}
		prevHolder = p.id
		name := r.str("name", MaxNameLen)
		if r.err != nil {
			return
		}
		r.check(validateName(name))
		fl.holders.set(p.id, holderName{name: name, lower: strings.ToLower(name)}, st.gen)
		p.files.set(id, struct{}{}, st.gen)
		st.counts.Holdings++
	}
	if r.err != nil {
		return
	}
	st.files[fileShardOf(id)].m[id] = fileSlot{f: fl, grams: exactGrams(fl)}
	st.counts.Files++
}
