package fsm

import (
	"fmt"
	"math/bits"
	"slices"
	"sync"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// Response is what Apply returns for a LogCommand entry, and therefore what
// raft's ApplyFuture.Response() yields on the node that proposed it. It is a
// value, never a pointer.
type Response struct {
	// Err is nil on success, else an error wrapping ErrInvalid,
	// ErrUnknownCommand, ErrUnknownPeer, ErrUnauthorized, ErrConflict or
	// ErrNotTracked.
	// For a Batch it is nil unless the batch itself was malformed; see
	// Results.
	Err error
	// Duplicate is set when this (Peer, RequestID) had already been applied:
	// nothing changed, and Err is the first attempt's outcome.
	Duplicate bool
	// Expired lists, sorted, the peers an ExpirePeers actually removed.
	Expired []PeerID
	// ExpiredSwarmPeers counts the records an ExpireSwarmPeers actually
	// removed.
	ExpiredSwarmPeers int
	// Results holds one Response per element of a Batch, in order.
	Results []Response
}

// FSM is the replicated index. It implements raft.FSM and raft.BatchingFSM.
//
// Apply, ApplyBatch, Snapshot and Restore must be called from one goroutine
// at a time (raft calls them from its FSM goroutine). The query methods
// (Lookup, Search, Peers, Peer, PeerFiles, Counts, Digest, AppliedIndex, and
// the swarm queries, TouchSwarmPeer included) are safe to call from any
// goroutine concurrently with them. They see the state
// between two log entries, never in the middle of one (Search and Peers
// guarantee this per file and per peer), and block only while an entry or
// batch is being applied. They read this node's state, which may lag the
// leader: callers choose the read level (see package master).
//
// The zero FSM is not usable; call New.
type FSM struct {
	mu  sync.RWMutex // Apply and Restore hold it for writing, queries for reading
	st  state
	h   hasher         // used by the applying goroutine only
	dec *codec.Decoder // used by the applying goroutine only
}

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.BatchingFSM = (*FSM)(nil)
)

// New returns an empty FSM.
func New() *FSM {
	f := &FSM{dec: codec.NewDecoderBytes(nil, msgpackHandle)}
	f.st.init(1)
	return f
}

// Apply applies one committed log entry and returns its Response (as a
// value). Entries that are not raft.LogCommand only advance AppliedIndex and
// return nil. Malformed command bytes yield a Response whose Err wraps
// ErrInvalid or ErrUnknownCommand, so a bad entry never stops the log. Apply
// does no I/O and is deterministic: every node applying the same log reaches
// the same Digest.
func (f *FSM) Apply(l *raft.Log) interface{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applyLog(l)
}

// ApplyBatch applies entries in order, exactly as that many Apply calls
// would, but takes the lock once. The result has one element per entry: a
// Response for each LogCommand, nil for any other type.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, l := range logs {
		out[i] = f.applyLog(l)
	}
	return out
}

func (f *FSM) applyLog(l *raft.Log) interface{} {
	if l == nil {
		return nil
	}
	f.st.applied = l.Index
	if l.Type != raft.LogCommand {
		return nil
	}
	return f.applyCommand(l.Data)
}

func (f *FSM) applyCommand(data []byte) Response {
	cmd, err := decode(data, f.dec)
	if err != nil {
		return Response{Err: err}
	}
	if c, ok := cmd.(clocked); ok {
		f.st.lastTime = max(f.st.lastTime, c.clock())
	}
	switch c := cmd.(type) {
	case JoinPeer:
		return f.joinPeer(c)
	case LeavePeer:
		return f.leavePeer(c)
	case RegisterFiles:
		return f.registerFiles(c)
	case UnregisterFiles:
		return f.unregisterFiles(c)
	case ExpirePeers:
		return f.expirePeers(c)
	case Announce:
		return f.openAnnounce(c, nil)
	case ExpireSwarmPeers:
		return f.expireSwarmPeers(c)
	case TrackerPolicy:
		return f.trackerPolicy(c)
	case RevokeCerts:
		return f.revokeCerts(c)
	case UnrevokeCerts:
		return f.unrevokeCerts(c)
	case SetConnIDSecret:
		return f.setConnIDSecret(c)
	case AnnounceBatch:
		return f.applyAnnounceBatch(c)
	case TrackerMember:
		return f.trackerMember(c)
	case TorrentFactors:
		return f.torrentFactors(c)
	case ClientPrefixes:
		return f.clientPrefixes(c)
	case PrivateAnnounceBatch:
		return f.applyPrivateAnnounceBatch(c)
	case Batch:
		res := make([]Response, len(c.Commands))
		for i, b := range c.Commands {
			// Batch.Validate guarantees no element is a Batch, so
			// this recursion is one level deep.
			res[i] = f.applyCommand(b)
		}
		return Response{Results: res}
	}
	return Response{Err: fmt.Errorf("%w: %T", ErrUnknownCommand, cmd)}
}

// clocked is a command that carries the proposing leader's clock, its
// Time: applying one moves lastTime on (LastCommandTime), whatever its
// outcome.
type clocked interface{ clock() int64 }

func (c JoinPeer) clock() int64             { return c.Time }
func (c ExpirePeers) clock() int64          { return c.Time }
func (c Announce) clock() int64             { return c.Time }
func (c ExpireSwarmPeers) clock() int64     { return c.Time }
func (c AnnounceBatch) clock() int64        { return c.Time }
func (c TrackerMember) clock() int64        { return c.Time }
func (c PrivateAnnounceBatch) clock() int64 { return c.Time }

func errUnknownPeer(id PeerID) error {
	return fmt.Errorf("%w %s: it never joined, left, or was expired after missing its heartbeats; join again", ErrUnknownPeer, id)
}

func errUnauthorized(id PeerID) error {
	return fmt.Errorf("%w: peer %s joined with another key; only the holder of a peer's key may change its registrations", ErrUnauthorized, id)
}

func errConflict(id FileID) error {
	return fmt.Errorf("%w: file %s is already registered with a different size or piece size", ErrConflict, id)
}

// outcomeErr rebuilds the error of a remembered outcome.
func outcomeErr(code outcome, detail string) error {
	switch code {
	case outcomeOK:
		return nil
	case outcomeConflict:
		return errConflict(FileID(detail))
	}
	return fmt.Errorf("%w: remembered outcome %d", ErrInvalid, code)
}

func (f *FSM) add(h [32]byte) { f.st.digest.add(h) }
func (f *FSM) sub(h [32]byte) { f.st.digest.sub(h) }

// authorize finds the peer a command is for and checks its token and the
// dedup window. ok is false when r is the final response.
func (f *FSM) authorize(id PeerID, tok Token, req uint64) (p *peer, r Response, ok bool) {
	p = f.st.peer(id)
	if p == nil {
		return nil, Response{Err: errUnknownPeer(id)}, false
	}
	if p.token != tok {
		// Not remembered: a stranger must not fill another peer's window.
		return nil, Response{Err: errUnauthorized(id)}, false
	}
	if r, dup := p.recall(req); dup {
		return nil, r, false
	}
	return p, Response{}, true
}

// remember records req's outcome in the (mutable) peer's dedup window,
// evicting the oldest entry when the window is full.
func (f *FSM) remember(p *peer, req uint64, code outcome, detail string) {
	seq := p.next
	i := seq % DedupWindow
	if uint64(len(p.reqs)) < DedupWindow {
		p.reqs = append(p.reqs, req)
		p.codes = append(p.codes, code)
	} else {
		oldReq, oldCode, oldDetail := p.reqs[i], p.codes[i], ""
		if oldCode != outcomeOK {
			k := slices.IndexFunc(p.notes, func(n note) bool { return n.req == oldReq })
			oldDetail = p.notes[k].detail
			p.notes = slices.Delete(p.notes, k, k+1)
		}
		f.sub(f.h.request(p.id, seq-DedupWindow, oldReq, oldCode, oldDetail))
		p.reqs[i], p.codes[i] = req, code
	}
	if code != outcomeOK {
		p.notes = append(p.notes, note{req: req, detail: detail})
	}
	f.add(f.h.request(p.id, seq, req, code, detail))
	p.next++
}

func (f *FSM) joinPeer(c JoinPeer) Response {
	s := &f.st
	p := s.peer(c.Peer)
	if p == nil {
		p = &peer{gen: s.gen, id: c.Peer, addr: c.Addr, token: c.Token, joinedAt: c.Time, lastJoin: c.Time}
		p.ref = s.refs.alloc(p.id, s.gen)
		s.peerShardMut(p.id).m[p.id] = p
		s.counts.Peers++
		f.add(f.h.peer(p))
		f.remember(p, c.RequestID, outcomeOK, "")
		return Response{}
	}
	p, r, ok := f.authorize(c.Peer, c.Token, c.RequestID)
	if !ok {
		return r
	}
	p = s.mutPeer(p)
	if p.addr != c.Addr || p.lastJoin != c.Time {
		f.sub(f.h.peer(p))
		p.addr, p.lastJoin = c.Addr, c.Time
		f.add(f.h.peer(p))
	}
	f.remember(p, c.RequestID, outcomeOK, "")
	return Response{}
}

func (f *FSM) leavePeer(c LeavePeer) Response {
	p, r, ok := f.authorize(c.Peer, c.Token, c.RequestID)
	if !ok {
		return r
	}
	f.removePeer(p)
	return Response{}
}

func errShardFull(shard int) error {
	return fmt.Errorf("%w: the index holds the most files (or name bytes) it can whose IDs start with %02x; unregister some of them first", ErrInvalid, shard)
}

// makeRoom checks that the shards of files can take them, and compacts the
// arenas that would otherwise outgrow maxArena.
func (f *FSM) makeRoom(files []FileMeta) error {
	s := &f.st
	var newFiles, nameBytes [nShards]int
	for _, m := range files {
		_, _, raw, ok := s.file(m.ID)
		if !ok {
			newFiles[raw[0]]++
		}
		nameBytes[raw[0]] += len(m.Name)
	}
	for i, n := range newFiles {
		if sh := s.files[i]; sh.n+n > maxShardFiles || sh.live()+nameBytes[i] > maxArena {
			return errShardFull(i)
		}
	}
	for i, n := range nameBytes {
		if len(s.files[i].names)+n > maxArena {
			s.fileShardMut(i).compact(s.gen)
		}
	}
	return nil
}

func (f *FSM) registerFiles(c RegisterFiles) Response {
	s := &f.st
	p, r, ok := f.authorize(c.Peer, c.Token, c.RequestID)
	if !ok {
		return r
	}
	// Check everything before changing anything, so a rejected command
	// changes nothing. Shards near their limits are checked exactly.
	near := false
	for _, m := range c.Files {
		sh, slot, raw, ok := s.file(m.ID)
		if ok {
			if rec := &sh.recs[slot]; rec.size != m.Size || rec.pieceSize() != m.PieceSize {
				p = s.mutPeer(p)
				f.remember(p, c.RequestID, outcomeConflict, string(m.ID))
				return Response{Err: errConflict(m.ID)}
			}
		}
		sh = s.files[raw[0]]
		near = near || sh.n+len(c.Files) > maxShardFiles || len(sh.names)+len(c.Files)*MaxNameLen > maxArena
	}
	if near {
		if err := f.makeRoom(c.Files); err != nil {
			return Response{Err: err}
		}
	}
	p = s.mutPeer(p)
	for _, m := range c.Files {
		sh, slot, raw, ok := s.file(m.ID)
		if !ok {
			sh = s.fileShardMut(int(raw[0]))
			rec := fileRec{id: raw, size: m.Size, pieceLog: uint8(bits.TrailingZeros64(uint64(m.PieceSize))),
				peer: p.ref, holders: 1, grams: gramsOfName(m.Name)}
			rec.setName0(sh.addName(m.Name))
			slot = sh.insert(rec)
			s.counts.Files++
			f.add(f.h.file(&rec))
			p.files.set(refOf(int(raw[0]), slot), struct{}{}, s.gen)
			s.counts.Holdings++
			f.add(f.h.holding(&raw, p.id, m.Name))
			continue
		}
		old, held := sh.holder(slot, p.ref)
		if held && sh.name(old) == m.Name {
			continue
		}
		sh = s.fileShardMut(int(raw[0]))
		rec := &sh.recs[slot]
		var n nameRef
		if rec.peer != p.ref && sh.name(rec.name0()) == m.Name {
			// Most holders call a file the same: share the bytes.
			n = rec.name0()
			sh.share(n)
		} else {
			n = sh.addName(m.Name)
		}
		if _, held := sh.setHolder(slot, p.ref, n, s.gen); held {
			f.sub(f.h.holding(&raw, p.id, sh.name(old)))
			sh.release(old)
		} else {
			p.files.set(refOf(int(raw[0]), slot), struct{}{}, s.gen)
			s.counts.Holdings++
		}
		f.add(f.h.holding(&raw, p.id, m.Name))
		sh.refreshGrams(slot, m.Name)
		sh.maybeCompact(s.gen)
	}
	f.remember(p, c.RequestID, outcomeOK, "")
	return Response{}
}

func (f *FSM) unregisterFiles(c UnregisterFiles) Response {
	p, r, ok := f.authorize(c.Peer, c.Token, c.RequestID)
	if !ok {
		return r
	}
	p = f.st.mutPeer(p)
	for _, id := range c.Files {
		sh, slot, raw, ok := f.st.file(id)
		if !ok {
			continue
		}
		if _, held := sh.holder(slot, p.ref); held {
			f.dropHolding(p, refOf(int(raw[0]), slot))
			p.files.del(refOf(int(raw[0]), slot), f.st.gen)
		}
	}
	f.remember(p, c.RequestID, outcomeOK, "")
	return Response{}
}

func (f *FSM) expirePeers(c ExpirePeers) Response {
	ids := slices.Clone(c.Peers)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var expired []PeerID
	for _, id := range ids {
		p := f.st.peer(id)
		if p == nil || p.lastJoin > c.Time {
			continue
		}
		f.removePeer(p)
		expired = append(expired, id)
	}
	return Response{Expired: expired}
}

// dropHolding removes holder p from file ref's holders, and the file from
// the index if that was its last holder. It leaves the holder's own file
// set to the caller.
func (f *FSM) dropHolding(p *peer, ref fileRef) {
	s := &f.st
	sh, slot := s.files[ref.shard()], ref.slot()
	if slot >= uint32(len(sh.recs)) || sh.recs[slot].peer == 0 {
		return // unreachable while the peer and file sides agree
	}
	n, held := sh.holder(slot, p.ref)
	if !held {
		return
	}
	rec := &sh.recs[slot]
	f.sub(f.h.holding(&rec.id, p.id, sh.name(n)))
	s.counts.Holdings--
	sh = s.fileShardMut(ref.shard())
	rec = &sh.recs[slot]
	if rec.holders == 1 {
		f.sub(f.h.file(rec))
		sh.release(n)
		sh.remove(slot)
		s.counts.Files--
	} else {
		sh.release(sh.delHolder(slot, p.ref, s.gen))
		sh.refreshGrams(slot, "")
	}
	sh.maybeCompact(s.gen)
}

// removePeer deletes p with its holdings and dedup window. It only reads p,
// which may be shared with a snapshot. Files are dropped in reference
// order, so every replica lays its state out the same way.
func (f *FSM) removePeer(p *peer) {
	s := &f.st
	for _, e := range p.files.appendSorted(make([]kv[fileRef, struct{}], 0, p.files.len())) {
		f.dropHolding(p, e.k)
	}
	p.entries(func(seq, req uint64, code outcome, detail string) {
		f.sub(f.h.request(p.id, seq, req, code, detail))
	})
	f.sub(f.h.peer(p))
	delete(s.peerShardMut(p.id).m, p.id)
	s.refs.release(p.ref, s.gen)
	s.counts.Peers--
}

// recomputeDigest returns the digest computed from scratch; tests compare
// it with the incrementally maintained one. Call it from the applying
// goroutine.
func (f *FSM) recomputeDigest() string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var h hasher
	return digestString(h.recompute(&f.st))
}

// LastCommandTime returns the latest Time carried by a command this FSM has
// applied (the clocked ones: JoinPeer, ExpirePeers, Announce,
// ExpireSwarmPeers, AnnounceBatch, TrackerMember, PrivateAnnounceBatch, and
// a SetConnIDSecret that applies), in Unix nanoseconds, whatever the
// command's outcome; 0 if none. After Restore it
// is the latest peer join or swarm record change in the snapshot, which may
// be earlier than what was applied before the snapshot (an expiry's Time).
// A leader proposes times after it (see package master), so a leader whose
// clock is behind the cluster's never makes times go backwards. Safe to
// call from any goroutine.
func (f *FSM) LastCommandTime() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.lastTime
}
