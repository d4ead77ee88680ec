package fsm

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
)

// snapPrivateRec marks a private swarm record in a version 4 snapshot.
const snapPrivateRec = 0x80

// snapPrevEpoch marks, in a version 4 snapshot, a private record that
// keeps its baseline of before a counter reset (prevEpoch).
const snapPrevEpoch = 0x40

func cmpHash(a, b InfoHash) int { return bytes.Compare(a[:], b[:]) }

func sortedHashes(m map[InfoHash]struct{}) []InfoHash {
	out := make([]InfoHash, 0, len(m))
	for ih := range m {
		out = append(out, ih)
	}
	slices.SortFunc(out, cmpHash)
	return out
}

// writeSwarms encodes the policy, swarm and connection-ID sections (format
// version 3). It
// reads records field by field: TouchSwarmPeer may be writing seen in a
// slice this frozen view shares with the live state.
func (s *fsmSnapshot) writeSwarms(w *snapWriter) error {
	st := &s.st
	p := st.policy
	w.w.WriteByte(byte(p.mode))
	for _, set := range []map[InfoHash]struct{}{p.allow, p.deny} {
		hs := sortedHashes(set)
		w.uvarint(uint64(len(hs)))
		for _, ih := range hs {
			w.w.Write(ih[:])
		}
	}
	w.reqWindow(&p.reqs)

	w.uvarint(uint64(st.nSwarms))
	var (
		keys []InfoHash
		tmp  [8]byte
	)
	for _, sh := range st.swarms { // shard i holds the hashes starting with byte i
		keys = keys[:0]
		for ih := range sh.m {
			keys = append(keys, ih)
		}
		slices.SortFunc(keys, cmpHash)
		for _, ih := range keys {
			if _, err := w.w.Write(nil); err != nil {
				return err
			}
			sw := sh.m[ih]
			w.w.Write(ih[:])
			w.uvarint(sw.downloaded)
			w.uvarint(uint64(len(sw.recs)))
			if len(sw.recs) == 0 {
				w.varint(sw.emptied)
				w.w.Write(sw.charge[:])
			}
			for i := range sw.recs {
				r := &sw.recs[i]
				w.w.Write(r.peer[:])
				w.w.Write(r.ip[:])
				binary.BigEndian.PutUint16(tmp[:], r.port)
				w.w.Write(tmp[:2])
				var a recAcct
				if sw.acct != nil {
					a = sw.acct[i]
				}
				switch {
				case a.prev != nil:
					w.w.WriteByte(r.flags | snapPrivateRec | snapPrevEpoch)
				case a.member != 0:
					w.w.WriteByte(r.flags | snapPrivateRec)
				default:
					w.w.WriteByte(r.flags)
				}
				if r.flags&recHasKey != 0 {
					binary.BigEndian.PutUint32(tmp[:], r.key)
					w.w.Write(tmp[:4])
				}
				if a.member != 0 {
					w.uvarint(uint64(a.member))
					w.uvarint(a.up)
					w.uvarint(a.down)
				}
				if a.prev != nil {
					n := 0
					for pe := a.prev; pe != nil; pe = pe.older {
						n++
					}
					w.uvarint(uint64(n))
					for pe := a.prev; pe != nil; pe = pe.older {
						w.uvarint(pe.up)
						w.uvarint(pe.down)
						w.varint(pe.changed)
						w.varint(pe.reset)
					}
				}
				w.varint(r.changed)
			}
		}
	}
	w.uvarint(uint64(len(st.connIDs)))
	for i := range st.connIDs {
		w.varint(st.connIDs[i].time)
		w.w.Write(st.connIDs[i].secret[:])
	}
	return nil
}

// ascendingHash reads the next info-hash of a list whose hashes must be
// non-zero and strictly ascending; prev holds the one before (the zero
// hash before the first) and is moved on. On a failed read, or a hash
// out of place (a corruption naming what), it returns false.
func (r *snapReader) ascendingHash(prev *InfoHash, what string) (InfoHash, bool) {
	var ih InfoHash
	r.full(ih[:])
	if r.err != nil {
		return ih, false
	}
	if ih.IsZero() || cmpHash(ih, *prev) <= 0 {
		r.corrupt("%s %s zero or out of order", what, ih)
		return ih, false
	}
	*prev = ih
	return ih, true
}

// readHashSet reads a count and that many strictly ascending non-zero
// hashes.
func (r *snapReader) readHashSet(what string) map[InfoHash]struct{} {
	n := r.uvarint()
	set := make(map[InfoHash]struct{}, min(n, 4096))
	var prev InfoHash
	for i := uint64(0); i < n && r.err == nil; i++ {
		if ih, ok := r.ascendingHash(&prev, what+" hash"); ok {
			set[ih] = struct{}{}
		}
	}
	return set
}

// readSwarms reads the policy and swarm sections, and from version 3 on
// the connection-ID section, into st.
func (r *snapReader) readSwarms(st *state, version uint64) {
	p := st.policy
	p.mode = TrackerMode(r.byte())
	if r.err == nil && p.mode != TrackerOpen && p.mode != TrackerAllowlist && (version < 4 || p.mode != TrackerPrivate) {
		r.corrupt("unknown tracker mode %d", p.mode)
	}
	p.allow = r.readHashSet("allowed")
	p.deny = r.readHashSet("denied")
	for ih := range p.deny {
		if _, both := p.allow[ih]; both {
			r.corrupt("hash %s both allowed and denied", ih)
		}
	}
	p.reqs = r.reqWindow("tracker policy")
	if r.err != nil {
		return
	}

	count := r.uvarint()
	var prev InfoHash
	for i := uint64(0); i < count && r.err == nil; i++ {
		ih, ok := r.ascendingHash(&prev, "swarm")
		if !ok {
			return
		}
		if !p.allowed(ih) {
			r.corrupt("swarm %s is not tracked by the policy", ih)
			return
		}
		r.readSwarm(st, ih, version)
	}
	if version >= 3 {
		r.readConnIDs(st)
	}
}

// readConnIDs reads at most maxConnIDSecrets connection-ID secrets,
// newest first.
func (r *snapReader) readConnIDs(st *state) {
	n := r.uvarint()
	if r.err == nil && n > maxConnIDSecrets {
		r.corrupt("%d connection-ID secrets, at most %d", n, maxConnIDSecrets)
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		var c connIDSecret
		c.time = r.varint()
		r.full(c.secret[:])
		if r.err == nil && (c.time <= 0 || i > 0 && c.time >= st.connIDs[i-1].time) {
			r.corrupt("connection-ID secret %d: time %d not positive or not older than the one before", i, c.time)
		}
		st.connIDs = append(st.connIDs, c)
	}
	if r.err != nil {
		st.connIDs = nil
	}
}

func (r *snapReader) readSwarm(st *state, ih InfoHash, version uint64) {
	sw := &swarm{gen: st.gen, downloaded: r.uvarint()}
	n := r.uvarint()
	if n == 0 && version >= 3 {
		sw.emptied = r.varint()
		r.full(sw.charge[:])
		if r.err == nil && (sw.emptied < 0 || sw.charge != ([16]byte{}) && validSwarmIP(sw.charge) != nil) {
			r.corrupt("swarm %s: bad emptied time or charged address", ih)
		}
	}
	if r.err != nil {
		return
	}
	if n == 0 && sw.downloaded == 0 {
		r.corrupt("swarm %s has neither records nor downloads", ih)
		return
	}
	recs := r.recs[:0]
	r.accts = nil
	var tmp [4]byte
	for j := uint64(0); j < n && r.err == nil; j++ {
		var rec swarmRec
		r.full(rec.peer[:])
		r.full(rec.ip[:])
		r.full(tmp[:2])
		rec.port = binary.BigEndian.Uint16(tmp[:2])
		rec.flags = r.byte()
		private := version >= 4 && rec.flags&snapPrivateRec != 0
		prev := private && rec.flags&snapPrevEpoch != 0
		if private {
			rec.flags &^= snapPrivateRec | snapPrevEpoch
		}
		if rec.flags&recHasKey != 0 {
			r.full(tmp[:4])
			rec.key = binary.BigEndian.Uint32(tmp[:4])
		}
		var a recAcct
		if private {
			m := r.uvarint()
			a = recAcct{member: uint32(min(m, math.MaxUint32)), up: r.uvarint(), down: r.uvarint()}
			if r.err == nil && (m == 0 || m > MaxMembers) {
				r.corrupt("swarm %s: record %d: member %d", ih, j, m)
			}
			r.maxMember = max(r.maxMember, a.member)
			if prev {
				a.prev = r.epochs(version, ih, j)
			}
			if r.accts == nil {
				r.accts = make([]recAcct, len(recs), cap(recs))
			}
		}
		if r.accts != nil {
			r.accts = append(r.accts[:len(recs)], a)
		}
		rec.changed = r.varint()
		if r.err != nil {
			break
		}
		switch {
		case rec.peer.IsZero() || rec.port == 0 || rec.flags&^recFlagsMask != 0:
			r.corrupt("swarm %s: record %d: zero peer, zero port or unknown flags %#x", ih, j, rec.flags)
		case validSwarmIP(rec.ip) != nil:
			r.corrupt("swarm %s: record %d: bad address", ih, j)
		case rec.flags&recSeeder == 0 && len(recs) > int(sw.nLeech):
			r.corrupt("swarm %s: leecher after a seeder", ih)
		}
		if rec.flags&recSeeder == 0 {
			sw.nLeech++
		}
		rec.seen = ceilSecs(rec.changed)
		st.lastTime = max(st.lastTime, rec.changed)
		recs = append(recs, rec)
	}
	r.recs = recs
	if r.err != nil {
		return
	}
	sw.recs = append(make([]swarmRec, 0, len(recs)), recs...)
	if r.accts != nil {
		sw.acct = append(make([]recAcct, 0, len(recs)), r.accts[:len(recs)]...)
	}
	if len(recs) > swarmIndexMax {
		sw.buildIndex()
		if len(sw.idx) != len(recs) {
			r.corrupt("swarm %s lists a peer at one address twice", ih)
			return
		}
	} else {
		for i := range recs {
			for j := range i {
				if recs[i].key2() == recs[j].key2() {
					r.corrupt("swarm %s lists peer %s at one address twice", ih, recs[i].peer)
					return
				}
			}
		}
	}
	for i := range sw.recs {
		st.ipAdd(sw.recs[i].ip, 1)
	}
	if sw.charge != ([16]byte{}) {
		st.ipAdd(sw.charge, 1)
	}
	st.swarms[ih[0]].m[ih] = sw
	st.nSwarms++
	st.nSwarmRecs += len(recs)
}

// epochs reads a private record's chain of earlier epochs: in version 5 a
// count (1 to maxPrevEpochs) and that many epochs, newest first, each
// reset after the next; in version 4 one epoch.
func (r *snapReader) epochs(version uint64, ih InfoHash, j uint64) *prevEpoch {
	n := uint64(1)
	if version >= 5 {
		n = r.uvarint()
		if r.err != nil {
			return nil
		}
		if n == 0 || n > maxPrevEpochs {
			r.corrupt("swarm %s: record %d: %d earlier epochs", ih, j, n)
			return nil
		}
	}
	es := make([]prevEpoch, n)
	for k := range es {
		es[k] = prevEpoch{up: r.uvarint(), down: r.uvarint(), changed: r.varint(), reset: r.varint()}
		if r.err == nil && k > 0 && es[k].reset >= es[k-1].reset {
			r.corrupt("swarm %s: record %d: earlier epochs out of order", ih, j)
			return nil
		}
	}
	for k := len(es) - 2; k >= 0; k-- {
		es[k].older = &es[k+1]
	}
	return &es[0]
}
