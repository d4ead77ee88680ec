package fsm

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"slices"
)

// Private tracker state.
//
// Members live in a slice indexed by their ID minus one (IDs are given in
// order of creation, so every replica agrees on them), with two indexes:
// by name and by passkey. Each member holds its books, one row per
// torrent it was ever credited on, in a slice sorted by info-hash (72
// bytes a row; a map of Books took twice that), and no totals: they are
// the sum of its books, added up when asked for. The baseline of each swarm record (the counters last credited,
// and the member they belong to) lives in a slice parallel to the swarm's
// records (swarm.acct), allocated only once a swarm has a private record,
// so an open tracker pays nothing for it. The record's changed time is
// the time of its last credit.
//
// Copy-on-write as everywhere: privState, each member, the indexes and
// the factor table carry a generation; the first change after a Snapshot
// copies what it changes (a member's books slice is copied once per
// snapshot, on its first credit). The ledger is append-only in fixed
// chunks, so a snapshot shares it: entries it can see are never written
// again.

// Book is what a member was credited, on one torrent or in total.
// Uploaded and Downloaded are after the torrent's factors; the Raw
// counters before them (and after clamping).
type Book struct {
	Uploaded, Downloaded       uint64
	RawUploaded, RawDownloaded uint64
	// SeedNanos is the time the member's records spent as seeders,
	// measured between announces.
	SeedNanos  uint64
	Completed  uint64 // completed events credited
	Suspicious uint64 // credits clamped to the maximum rate
}

func (b *Book) add(d *Book) {
	b.Uploaded = satAdd(b.Uploaded, d.Uploaded)
	b.Downloaded = satAdd(b.Downloaded, d.Downloaded)
	b.RawUploaded = satAdd(b.RawUploaded, d.RawUploaded)
	b.RawDownloaded = satAdd(b.RawDownloaded, d.RawDownloaded)
	b.SeedNanos = satAdd(b.SeedNanos, d.SeedNanos)
	b.Completed = satAdd(b.Completed, d.Completed)
	b.Suspicious = satAdd(b.Suspicious, d.Suspicious)
}

func (b *Book) isZero() bool { return *b == Book{} }

func satAdd(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return math.MaxUint64
	}
	return s
}

// recAcct is a swarm record's baseline: the counters last credited, and
// the member (0: none yet) they were credited to.
type recAcct struct {
	up, down uint64
	member   uint32
	prev     *prevEpoch // nil unless the counters went down lately
}

// prevEpoch is a record's baseline from before a reset of its counters
// (a client restarted: a started, or counters that went down): a report
// heard before the reset but applied after it (a follower passes its
// reports on once a second, and a restart's started commits at once) is
// credited against it instead of being lost as stale. Epochs form a chain,
// newest first, one per reset within prevEpochWindow and at most
// maxPrevEpochs: two restarts in quick succession leave reports of both
// earlier sessions in flight. An epoch is immutable: a change makes a new
// one, and new ones for the epochs newer than it.
type prevEpoch struct {
	up, down uint64
	changed  int64      // the time of its last credit
	reset    int64      // the time of the report that reset the counters
	older    *prevEpoch // the epoch before this one, or nil
}

// maxPrevEpochs bounds a record's chain of earlier epochs.
const maxPrevEpochs = 4

// epochOf returns the epoch of chain pe that a report heard at time at
// belongs to (the one it precedes the reset of, and follows the reset
// before), or nil if at is in the current epoch or before the oldest one
// kept.
func epochOf(pe *prevEpoch, at int64) *prevEpoch {
	if pe == nil || at >= pe.reset {
		return nil
	}
	for ; pe != nil; pe = pe.older {
		if pe.older == nil || at >= pe.older.reset {
			return pe
		}
	}
	return nil
}

// withEpoch returns chain pe with its epoch old replaced by repl, copying
// the epochs newer than old (they are shared with snapshots).
func withEpoch(pe, old, repl *prevEpoch) *prevEpoch {
	if pe == old {
		return repl
	}
	c := *pe
	c.older = withEpoch(pe.older, old, repl)
	return &c
}

// pushEpoch returns a chain whose newest epoch is e, followed by those of
// older that reset within prevEpochWindow of e, at most maxPrevEpochs in
// all.
func pushEpoch(e prevEpoch, older *prevEpoch) *prevEpoch {
	var keep []prevEpoch
	for pe := older; pe != nil && len(keep) < maxPrevEpochs-1 && e.reset-pe.reset <= prevEpochWindow; pe = pe.older {
		keep = append(keep, *pe)
	}
	var chain *prevEpoch
	for i := len(keep) - 1; i >= 0; i-- {
		c := keep[i]
		c.older = chain
		chain = &c
	}
	e.older = chain
	return &e
}

// prevEpochWindow is how long after a reset reports heard before it are
// still credited: longer than a follower keeps reports it could not pass
// on in any ordinary outage.
const prevEpochWindow = int64(10 * 60 * 1e9)

type member struct {
	gen     uint64
	id      uint32
	revoked bool // beside id, so the struct fills an 80-byte size class
	name    string
	key     [PasskeySize]byte
	created int64
	books   []bookRow // sorted by info-hash
}

// bookRow is a member's Book on one torrent, as the member keeps it.
// Completed and Suspicious count events, so 32 bits hold any real count;
// they saturate at math.MaxUint32 as the byte counters do at their
// maximum.
type bookRow struct {
	ih                    InfoHash
	completed, suspicious uint32
	up, down              uint64
	rawUp, rawDown        uint64
	seedNanos             uint64
}

func (r *bookRow) book() Book {
	return Book{Uploaded: r.up, Downloaded: r.down, RawUploaded: r.rawUp, RawDownloaded: r.rawDown,
		SeedNanos: r.seedNanos, Completed: uint64(r.completed), Suspicious: uint64(r.suspicious)}
}

func (r *bookRow) set(b *Book) {
	r.up, r.down, r.rawUp, r.rawDown, r.seedNanos = b.Uploaded, b.Downloaded, b.RawUploaded, b.RawDownloaded, b.SeedNanos
	r.completed, r.suspicious = uint32(min(b.Completed, math.MaxUint32)), uint32(min(b.Suspicious, math.MaxUint32))
}

// findBook returns the slot of torrent ih's row in m.books, or where it
// would go, and whether it is there.
func (m *member) findBook(ih InfoHash) (int, bool) {
	return slices.BinarySearchFunc(m.books, ih, func(r bookRow, ih InfoHash) int { return cmpHash(r.ih, ih) })
}

// insertBook puts an empty row for ih at slot i, growing the slice by an
// eighth (and up to its allocation's size class) when full: most members
// hold few books, so append's doubling would leave much of the last step
// unused. A new book is rare next to credits to existing ones, so the
// extra copies cost little.
func (m *member) insertBook(i int, ih InfoHash) {
	if n := len(m.books); n == cap(m.books) {
		m.books = append(slices.Grow([]bookRow(nil), n+n/8+1), m.books...)
	}
	m.books = slices.Insert(m.books, i, bookRow{ih: ih})
}

// total returns the sum of m's books.
func (m *member) total() Book {
	var t Book
	for i := range m.books {
		b := m.books[i].book()
		t.add(&b)
	}
	return t
}

type privIndex struct {
	gen    uint64
	byName map[string]uint32
	byKey  map[[PasskeySize]byte]uint32 // each member's current passkey, revoked ones included
}

type factorPair struct{ up, down uint32 }

type factorTable struct {
	gen uint64
	m   map[InfoHash]factorPair // only torrents whose factors are not 100/100
}

// ledgerChunkSize is the number of entries per ledger chunk.
const ledgerChunkSize = 1024

type ledgerRec struct {
	index  uint64
	pos    uint32
	member uint32
	ih     InfoHash
	time   int64
	d      Book
}

type ledger struct {
	chunks []*[ledgerChunkSize]ledgerRec
	start  int // first live entry in chunks[0]
	n      int // live entries
	// dropped says an entry was ever dropped. It is not in snapshots:
	// a restore derives it (ledgerDroppedFrom).
	dropped bool
}

func (l *ledger) at(i int) *ledgerRec {
	j := l.start + i
	return &l.chunks[j/ledgerChunkSize][j%ledgerChunkSize]
}

func (l *ledger) last() *ledgerRec {
	if l.n == 0 {
		return nil
	}
	return l.at(l.n - 1)
}

type privState struct {
	gen     uint64
	members []*member
	idx     *privIndex
	factors *factorTable
	allow   []string  // sorted
	deny    []string  // sorted
	reqs    reqWindow // of TrackerMember, TorrentFactors and ClientPrefixes requests
	ledger  ledger
}

func newPrivState(gen uint64) *privState {
	return &privState{
		gen:     gen,
		idx:     &privIndex{gen: gen, byName: map[string]uint32{}, byKey: map[[PasskeySize]byte]uint32{}},
		factors: &factorTable{gen: gen, m: map[InfoHash]factorPair{}},
	}
}

func (s *state) mutPriv() *privState {
	p := s.priv
	if p.gen == s.gen {
		return p
	}
	c := *p
	c.gen = s.gen
	c.members = slices.Clone(p.members)
	c.reqs = p.reqs.clone()
	s.priv = &c
	return &c
}

func (s *state) mutMember(id uint32) *member {
	p := s.mutPriv()
	m := p.members[id-1]
	if m.gen == s.gen {
		return m
	}
	c := *m
	c.gen = s.gen
	c.books = slices.Clone(m.books)
	p.members[id-1] = &c
	return &c
}

func (s *state) mutIndex() *privIndex {
	p := s.mutPriv()
	if p.idx.gen != s.gen {
		p.idx = &privIndex{gen: s.gen, byName: maps.Clone(p.idx.byName), byKey: maps.Clone(p.idx.byKey)}
	}
	return p.idx
}

func (s *state) mutFactors() *factorTable {
	p := s.mutPriv()
	if p.factors.gen != s.gen {
		p.factors = &factorTable{gen: s.gen, m: maps.Clone(p.factors.m)}
	}
	return p.factors
}

// Refusal wording for passkeys and clients. They say what is wrong and
// what to do, to a BitTorrent client's user.
func errNoPasskey() error {
	return fmt.Errorf("%w: this tracker is private and the announce URL carries no passkey; download the torrent again from the site to get your personal announce URL", ErrPasskey)
}

func errUnknownPasskey() error {
	return fmt.Errorf("%w: the passkey in the announce URL is unknown (mistyped, or replaced by a newer one); download the torrent again from the site to get your current announce URL", ErrPasskey)
}

func errRevokedPasskey() error {
	return fmt.Errorf("%w: the passkey in the announce URL was revoked; contact the site's staff", ErrPasskey)
}

func errClientRefused() error {
	return fmt.Errorf("%w: this tracker does not accept your BitTorrent client or its version; use a client the site allows", ErrClientRefused)
}

// memberFor returns the member holding key, or the refusal.
func (p *privState) memberFor(key [PasskeySize]byte) (uint32, error) {
	if key == ([PasskeySize]byte{}) {
		return 0, errNoPasskey()
	}
	id, ok := p.idx.byKey[key]
	if !ok {
		return 0, errUnknownPasskey()
	}
	if p.members[id-1].revoked {
		return 0, errRevokedPasskey()
	}
	return id, nil
}

// eachPrefix calls fn with each client prefix, allowed ones first.
func (p *privState) eachPrefix(fn func(allow bool, x string)) {
	for _, x := range p.allow {
		fn(true, x)
	}
	for _, x := range p.deny {
		fn(false, x)
	}
}

// clientAllowed checks peer against the prefix lists.
func (p *privState) clientAllowed(peer *SwarmPeerID) error {
	for _, d := range p.deny {
		if bytes.HasPrefix(peer[:], []byte(d)) {
			return errClientRefused()
		}
	}
	if len(p.allow) == 0 {
		return nil
	}
	for _, a := range p.allow {
		if bytes.HasPrefix(peer[:], []byte(a)) {
			return nil
		}
	}
	return errClientRefused()
}

// privAdmin applies a private tracker admin request (TrackerMember,
// TorrentFactors, ClientPrefixes) once: the repeat of a remembered
// request ID is a Duplicate and changes nothing; otherwise change runs,
// and only a request it did not refuse is remembered (a refusal changed
// nothing, and a retry is judged afresh).
func (f *FSM) privAdmin(req uint64, change func() error) Response {
	if f.st.priv.reqs.seen(req) {
		return Response{Duplicate: true}
	}
	if err := change(); err != nil {
		return Response{Err: err}
	}
	f.st.mutPriv().reqs.remember(f, recPrivReq, req)
	return Response{}
}

func (f *FSM) trackerMember(c TrackerMember) Response {
	return f.privAdmin(c.RequestID, func() error { return f.changeMember(c) })
}

func (f *FSM) torrentFactors(c TorrentFactors) Response {
	return f.privAdmin(c.RequestID, func() error { f.setFactors(c); return nil })
}

func (f *FSM) clientPrefixes(c ClientPrefixes) Response {
	return f.privAdmin(c.RequestID, func() error { f.setPrefixes(c); return nil })
}

// changeMember adds a member, rotates its passkey or revokes it, or says why
// not.
func (f *FSM) changeMember(c TrackerMember) error {
	s := &f.st
	p := s.priv
	id, exists := p.idx.byName[c.Name]
	var key [PasskeySize]byte
	if c.Op != MemberRevoke {
		key = [PasskeySize]byte(c.Passkey)
		if holder, held := p.idx.byKey[key]; held && holder != id {
			return fmt.Errorf("%w: tracker member %s: the passkey belongs to another member; draw another", ErrInvalid, c.Name)
		}
	}
	switch {
	case c.Op == MemberAdd && exists:
		return fmt.Errorf("%w: a member named %s exists; rotate its passkey instead, or pick another name", ErrMemberExists, c.Name)
	case c.Op != MemberAdd && !exists:
		return fmt.Errorf("%w: no member is named %s; list the members to check the name", ErrUnknownMember, c.Name)
	case c.Op == MemberAdd && len(p.members) >= MaxMembers:
		return fmt.Errorf("%w: the tracker has its limit of %d members", ErrInvalid, MaxMembers)
	}
	switch c.Op {
	case MemberAdd:
		pm := s.mutPriv()
		m := &member{gen: s.gen, id: uint32(len(pm.members) + 1), name: c.Name, key: key, created: c.Time}
		pm.members = append(pm.members, m)
		ix := s.mutIndex()
		ix.byName[m.name] = m.id
		ix.byKey[key] = m.id
		f.add(f.h.member(m))
	case MemberRotate, MemberRevoke:
		m := s.mutMember(id)
		f.sub(f.h.member(m))
		if c.Op == MemberRotate {
			ix := s.mutIndex()
			delete(ix.byKey, m.key)
			m.key = key
			ix.byKey[key] = id
			m.revoked = false
		} else {
			m.revoked = true
		}
		f.add(f.h.member(m))
	}
	return nil
}

// setFactors sets a torrent's upload and download factors.
func (f *FSM) setFactors(c TorrentFactors) {
	t := f.st.mutFactors()
	if old, ok := t.m[c.InfoHash]; ok {
		f.sub(f.h.factors(c.InfoHash, old))
		delete(t.m, c.InfoHash)
	}
	if fp := (factorPair{c.UploadPct, c.DownloadPct}); fp != (factorPair{100, 100}) {
		t.m[c.InfoHash] = fp
		f.add(f.h.factors(c.InfoHash, fp))
	}
}

// setPrefixes replaces the client prefix lists.
func (f *FSM) setPrefixes(c ClientPrefixes) {
	p := f.st.mutPriv()
	p.eachPrefix(func(allow bool, x string) { f.sub(f.h.prefix(allow, x)) })
	norm := func(l []string) []string {
		l = slices.Clone(l)
		slices.Sort(l)
		return slices.Compact(l)
	}
	p.allow, p.deny = norm(c.Allow), norm(c.Deny)
	p.eachPrefix(func(allow bool, x string) { f.add(f.h.prefix(allow, x)) })
}
