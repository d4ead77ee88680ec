package fsm

import (
	"math"
	"slices"
	"strings"
)

// The private section of a version 4 snapshot, after the deny list:
//
//	memberCount uvarint, then per member in ID order (IDs 1, 2, …):
//	    name str, passkey 16 bytes, revoked byte (0 or 1), created varint,
//	    bookCount uvarint, bookCount × (info-hash 20 bytes, book),
//	    ascending by info-hash
//	factorCount uvarint, factorCount × (info-hash 20 bytes, upload pct
//	    uvarint, download pct uvarint), ascending, none 100/100
//	allowCount uvarint, allowCount × prefix str, ascending
//	denyCount uvarint, denyCount × prefix str, ascending
//	next uvarint, n uvarint (= min(next, DedupWindow)), n × requestID
//	    uvarint, oldest first
//	ledgerCount uvarint (at most LedgerRetention), oldest first, each:
//	    index uvarint, pos uvarint, member uvarint, info-hash 20 bytes,
//	    time varint, book
//
// where a book is 7 uvarints: uploaded, downloaded, raw uploaded, raw
// downloaded, seed nanoseconds, completed, suspicious. Member totals are
// not written: they are the sums of the books.

func (w *snapWriter) book(d *Book) {
	for _, v := range [...]uint64{d.Uploaded, d.Downloaded, d.RawUploaded, d.RawDownloaded, d.SeedNanos, d.Completed, d.Suspicious} {
		w.uvarint(v)
	}
}

func (w *snapWriter) writePrivate(st *state) {
	p := st.priv
	w.uvarint(uint64(len(p.members)))
	for _, m := range p.members {
		w.str(m.name)
		w.w.Write(m.key[:])
		if m.revoked {
			w.w.WriteByte(1)
		} else {
			w.w.WriteByte(0)
		}
		w.varint(m.created)
		w.uvarint(uint64(len(m.books)))
		for i := range m.books {
			b := m.books[i].book()
			w.w.Write(m.books[i].ih[:])
			w.book(&b)
		}
	}
	var keys []InfoHash
	for ih := range p.factors.m {
		keys = append(keys, ih)
	}
	slices.SortFunc(keys, cmpHash)
	w.uvarint(uint64(len(keys)))
	for _, ih := range keys {
		fp := p.factors.m[ih]
		w.w.Write(ih[:])
		w.uvarint(uint64(fp.up))
		w.uvarint(uint64(fp.down))
	}
	for _, l := range [][]string{p.allow, p.deny} {
		w.uvarint(uint64(len(l)))
		for _, x := range l {
			w.str(x)
		}
	}
	w.reqWindow(&p.reqs)
	l := &p.ledger
	w.uvarint(uint64(l.n))
	for i := range l.n {
		e := l.at(i)
		w.uvarint(e.index)
		w.uvarint(uint64(e.pos))
		w.uvarint(uint64(e.member))
		w.w.Write(e.ih[:])
		w.varint(e.time)
		w.book(&e.d)
	}
}

func (r *snapReader) book() Book {
	return Book{Uploaded: r.uvarint(), Downloaded: r.uvarint(), RawUploaded: r.uvarint(), RawDownloaded: r.uvarint(),
		SeedNanos: r.uvarint(), Completed: r.uvarint(), Suspicious: r.uvarint()}
}

func (r *snapReader) readPrivate(st *state) {
	p := st.priv
	n := r.uvarint()
	if r.err == nil && n > MaxMembers {
		r.corrupt("%d members, limit %d", n, MaxMembers)
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		m := &member{gen: st.gen, id: uint32(i + 1)}
		m.name = r.str("member name", MaxMemberName)
		r.full(m.key[:])
		switch r.byte() {
		case 0:
		case 1:
			m.revoked = true
		default:
			r.corrupt("member %d: bad revoked byte", m.id)
		}
		m.created = r.varint()
		if r.err != nil {
			return
		}
		r.check(ValidMemberName(m.name))
		if _, dup := p.idx.byName[m.name]; dup {
			r.corrupt("member %s listed twice", m.name)
		}
		if _, dup := p.idx.byKey[m.key]; dup || m.key == ([PasskeySize]byte{}) {
			r.corrupt("member %s: zero or shared passkey", m.name)
		}
		nb := r.uvarint()
		var prev InfoHash
		what := "member " + m.name + ": book"
		for j := uint64(0); j < nb && r.err == nil; j++ {
			ih, ok := r.ascendingHash(&prev, what)
			b := r.book()
			if !ok || r.err != nil {
				return
			}
			if b.isZero() || b.Completed > math.MaxUint32 || b.Suspicious > math.MaxUint32 {
				r.corrupt("member %s: book %s empty or out of range", m.name, ih)
				return
			}
			if m.books == nil {
				m.books = make([]bookRow, 0, min(nb, 1024))
			}
			m.books = append(m.books, bookRow{ih: ih})
			m.books[len(m.books)-1].set(&b)
		}
		if cap(m.books)-len(m.books) > len(m.books)/4 {
			m.books = slices.Clone(m.books) // appending past 1024 left up to half unused
		}
		p.members = append(p.members, m)
		p.idx.byName[m.name] = m.id
		p.idx.byKey[m.key] = m.id
	}
	if r.err == nil && uint64(r.maxMember) > n {
		r.corrupt("a swarm record names member %d of %d", r.maxMember, n)
	}
	nf := r.uvarint()
	var prev InfoHash
	for i := uint64(0); i < nf && r.err == nil; i++ {
		ih, ok := r.ascendingHash(&prev, "torrent factors")
		up, down := r.uvarint(), r.uvarint()
		if !ok || r.err != nil {
			return
		}
		if up > MaxFactorPct || down > MaxFactorPct || up == 100 && down == 100 {
			r.corrupt("torrent factors %s: out of range, or the default", ih)
			return
		}
		p.factors.m[ih] = factorPair{uint32(up), uint32(down)}
	}
	for k := range 2 {
		c := r.uvarint()
		if r.err == nil && c > MaxClientPrefixes {
			r.corrupt("%d client prefixes, limit %d", c, MaxClientPrefixes)
			return
		}
		var l []string
		for i := uint64(0); i < c && r.err == nil; i++ {
			x := r.str("client prefix", len(SwarmPeerID{}))
			if r.err == nil && (x == "" || i > 0 && strings.Compare(x, l[len(l)-1]) <= 0) {
				r.corrupt("client prefix %q empty or out of order", x)
			}
			l = append(l, x)
		}
		if k == 0 {
			p.allow = l
		} else {
			p.deny = l
		}
	}
	p.reqs = r.reqWindow("private tracker")
	if r.err != nil {
		return
	}
	nl := r.uvarint()
	if r.err == nil && nl > LedgerRetention {
		r.corrupt("%d ledger entries, limit %d", nl, LedgerRetention)
		return
	}
	l := &p.ledger
	for i := uint64(0); i < nl && r.err == nil; i++ {
		var e ledgerRec
		e.index = r.uvarint()
		pos := r.uvarint()
		mem := r.uvarint()
		r.full(e.ih[:])
		e.time = r.varint()
		e.d = r.book()
		if r.err != nil {
			return
		}
		e.pos, e.member = uint32(min(pos, 1<<32-1)), uint32(min(mem, 1<<32-1))
		last := l.last()
		if pos >= 1<<32 || mem == 0 || mem > n || e.index > st.applied || last != nil && cmpCursor(e.index, e.pos, last.index, last.pos) <= 0 {
			r.corrupt("ledger entry %d.%d: bad member or out of order", e.index, pos)
			return
		}
		j := l.n
		if j/ledgerChunkSize == len(l.chunks) {
			l.chunks = append(l.chunks, new([ledgerChunkSize]ledgerRec))
		}
		l.chunks[j/ledgerChunkSize][j%ledgerChunkSize] = e
		l.n++
	}
	l.dropped = ledgerDroppedFrom(p)
}
