package fsm

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"slices"
	"strings"
	"sync/atomic"
)

// Private tracker state.
//
// Members live in a slice indexed by their ID minus one (IDs are given in
// order of creation, so every replica agrees on them), with two indexes:
// by name and by passkey. Each member holds its books, one Book per
// torrent it was ever credited on, and its totals (derived: the sum of its
// books). The baseline of each swarm record (the counters last credited,
// and the member they belong to) lives in a slice parallel to the swarm's
// records (swarm.acct), allocated only once a swarm has a private record,
// so an open tracker pays nothing for it. The record's changed time is
// the time of its last credit.
//
// Copy-on-write as everywhere: privState, each member, the indexes and
// the factor table carry a generation; the first change after a Snapshot
// copies what it changes (a member's books map is copied once per
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

// prevEpoch is a record's baseline from before its counters last went
// down (a client restarted): a report heard before the reset but applied
// after it (a follower passes its reports on once a second, and a
// restart's started commits at once) is credited against it instead of
// being lost as stale. It is immutable: a change makes a new one. It is
// kept for prevEpochWindow after the reset.
type prevEpoch struct {
	up, down uint64
	changed  int64 // the time of its last credit
	reset    int64 // the time of the report that reset the counters
}

// prevEpochWindow is how long after a reset reports heard before it are
// still credited: longer than a follower keeps reports it could not pass
// on in any ordinary outage.
const prevEpochWindow = int64(10 * 60 * 1e9)

type member struct {
	gen     uint64
	id      uint32
	name    string
	key     [PasskeySize]byte
	revoked bool
	created int64
	tot     Book
	books   map[InfoHash]Book
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
	allow   []string // sorted
	deny    []string // sorted
	next    uint64
	reqs    []uint64
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
	c.reqs = slices.Clone(p.reqs)
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
	c.books = maps.Clone(m.books)
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

// remember records an admin request in the private dedup window; seen
// reports a repeat.
func (f *FSM) privSeen(req uint64) bool { return slices.Contains(f.st.priv.reqs, req) }

func (f *FSM) privRemember(req uint64) {
	p := f.st.mutPriv()
	seq := p.next
	if uint64(len(p.reqs)) < DedupWindow {
		p.reqs = append(p.reqs, req)
	} else {
		i := seq % DedupWindow
		f.sub(f.h.privReq(seq-DedupWindow, p.reqs[i]))
		p.reqs[i] = req
	}
	f.add(f.h.privReq(seq, req))
	p.next++
}

func (f *FSM) trackerMember(c TrackerMember) Response {
	s := &f.st
	if f.privSeen(c.RequestID) {
		return Response{Duplicate: true}
	}
	p := s.priv
	id, exists := p.idx.byName[c.Name]
	var key [PasskeySize]byte
	if c.Op != MemberRevoke {
		key = [PasskeySize]byte(c.Passkey)
		if holder, held := p.idx.byKey[key]; held && holder != id {
			return Response{Err: fmt.Errorf("%w: tracker member %s: the passkey belongs to another member; draw another", ErrInvalid, c.Name)}
		}
	}
	switch {
	case c.Op == MemberAdd && exists:
		return Response{Err: fmt.Errorf("%w: a member named %s exists; rotate its passkey instead, or pick another name", ErrMemberExists, c.Name)}
	case c.Op != MemberAdd && !exists:
		return Response{Err: fmt.Errorf("%w: no member is named %s; list the members to check the name", ErrUnknownMember, c.Name)}
	case c.Op == MemberAdd && len(p.members) >= MaxMembers:
		return Response{Err: fmt.Errorf("%w: the tracker has its limit of %d members", ErrInvalid, MaxMembers)}
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
	f.privRemember(c.RequestID)
	return Response{}
}

func (f *FSM) torrentFactors(c TorrentFactors) Response {
	if f.privSeen(c.RequestID) {
		return Response{Duplicate: true}
	}
	t := f.st.mutFactors()
	if old, ok := t.m[c.InfoHash]; ok {
		f.sub(f.h.factors(c.InfoHash, old))
		delete(t.m, c.InfoHash)
	}
	if fp := (factorPair{c.UploadPct, c.DownloadPct}); fp != (factorPair{100, 100}) {
		t.m[c.InfoHash] = fp
		f.add(f.h.factors(c.InfoHash, fp))
	}
	f.privRemember(c.RequestID)
	return Response{}
}

func (f *FSM) clientPrefixes(c ClientPrefixes) Response {
	if f.privSeen(c.RequestID) {
		return Response{Duplicate: true}
	}
	p := f.st.mutPriv()
	for _, l := range [][]string{p.allow, p.deny} {
		for _, x := range l {
			f.sub(f.h.prefix(&l == &p.allow, x))
		}
	}
	norm := func(l []string) []string {
		l = slices.Clone(l)
		slices.Sort(l)
		return slices.Compact(l)
	}
	p.allow, p.deny = norm(c.Allow), norm(c.Deny)
	for _, x := range p.allow {
		f.add(f.h.prefix(true, x))
	}
	for _, x := range p.deny {
		f.add(f.h.prefix(false, x))
	}
	f.privRemember(c.RequestID)
	return Response{}
}

func (f *FSM) applyPrivateAnnounceBatch(c PrivateAnnounceBatch) Response {
	f.st.lastTime = max(f.st.lastTime, c.Time)
	res := make([]Response, len(c.Announces))
	for i := range c.Announces {
		res[i] = f.privateAnnounce(&c.Announces[i], c.Time, &c.Limits, c.MaxRate)
	}
	return Response{Results: res}
}

func (f *FSM) privateAnnounce(p *PrivateAnnounce, t int64, lim *SwarmLimits, maxRate uint64) Response {
	s := &f.st
	a := p.Announce
	if a.Event == SwarmStarted {
		a.Event = SwarmUpdate // in every respect but how it arrived
	}
	if s.policy.mode != TrackerPrivate {
		if a.Event == SwarmCredit {
			return Response{}
		}
		a.Time = t
		return f.announce(a, lim)
	}
	mid, err := s.priv.memberFor(p.Passkey)
	if err != nil {
		return Response{Err: err}
	}
	if err := s.priv.clientAllowed(&a.Peer); err != nil {
		return Response{Err: err}
	}
	ih := a.InfoHash
	if !s.policy.allowed(ih) {
		return Response{Err: errNotTracked(ih)}
	}
	at := p.At
	if at <= 0 || at > t {
		at = t
	}
	sw := s.swarm(ih)
	i := -1
	if sw != nil {
		i = sw.lookup(a.Peer, a.IP, a.HasKey, a.Key)
	}
	if i >= 0 {
		r := &sw.recs[i]
		if at > r.changed {
			// Credit before the announce changes the record: the time
			// since its last credit and its seeder state during it.
			counts := a.Event == SwarmCompleted && r.flags&(recSeeder|recCounted) == 0
			sw = s.mutSwarm(ih, sw)
			f.credit(ih, sw, i, mid, p, at, maxRate, counts)
		} else {
			// Stale: credits nothing, unless heard before a reset of the
			// counters it has not seen; time never goes back.
			if sw.acct != nil && sw.acct[i].prev != nil && sw.acct[i].member == mid && at < sw.acct[i].prev.reset && at > sw.acct[i].prev.changed {
				sw = s.mutSwarm(ih, sw)
				f.creditPrev(ih, sw, i, mid, p, at, maxRate)
			}
			at = sw.recs[i].changed
		}
	}
	if a.Event == SwarmCredit {
		if i >= 0 {
			r := &sw.recs[i]
			if r.changed != at {
				f.sub(f.h.swarmRec(ih, r))
				r.changed = at
				f.add(f.h.swarmRec(ih, r))
			}
			atomic.StoreUint32(&r.seen, max(atomic.LoadUint32(&r.seen), ceilSecs(at)))
		}
		return Response{}
	}
	a.Time = at
	if r := f.announce(a, lim); r.Err != nil || a.Event == SwarmStopped || i >= 0 {
		return r
	}
	// A new record: the counters it reported are its baseline.
	sw = s.swarm(ih)
	if j := sw.find(a.Peer, a.IP); j >= 0 {
		f.setAcct(ih, sw, j, recAcct{member: mid, up: p.Uploaded, down: p.Downloaded})
	}
	return Response{}
}

// setAcct sets slot i's baseline in the mutable swarm sw.
func (f *FSM) setAcct(ih InfoHash, sw *swarm, i int, a recAcct) {
	if sw.acct == nil {
		if a.member == 0 {
			return
		}
		sw.acct = make([]recAcct, len(sw.recs), cap(sw.recs))
	}
	r := &sw.recs[i]
	if old := sw.acct[i]; old.member != 0 {
		f.sub(f.h.acct(ih, r.peer, &old))
	}
	sw.acct[i] = a
	if a.member != 0 {
		f.add(f.h.acct(ih, r.peer, &a))
	}
}

// dropAcct takes slot i's baseline out of the digest before the record
// goes; it only reads sw.
func (f *FSM) dropAcct(ih InfoHash, sw *swarm, i int) {
	if sw.acct != nil && sw.acct[i].member != 0 {
		f.sub(f.h.acct(ih, sw.recs[i].peer, &sw.acct[i]))
	}
}

// growth is the credit of a counter moving from base to now: none if it
// went down (a new baseline).
func growth(base, now uint64) uint64 {
	if now < base {
		return 0
	}
	return now - base
}

// rateLimit returns the most bytes rate bytes/s allow in ns nanoseconds.
func rateLimit(rate, ns uint64) uint64 {
	hi, lo := bits.Mul64(rate, ns)
	if hi >= 1e9 {
		return math.MaxUint64
	}
	q, _ := bits.Div64(hi, lo, 1e9)
	return q
}

// applyPct returns v × pct / 100, saturating.
func applyPct(v uint64, pct uint32) uint64 {
	hi, lo := bits.Mul64(v, uint64(pct))
	if hi >= 100 {
		return math.MaxUint64
	}
	q, _ := bits.Div64(hi, lo, 100)
	return q
}

// credit credits member mid with what p reports for slot i of the mutable
// swarm sw, at time at (after the record's changed time), and moves the
// record's baseline to p's counters.
func (f *FSM) credit(ih InfoHash, sw *swarm, i int, mid uint32, p *PrivateAnnounce, at int64, maxRate uint64, completed bool) {
	var base recAcct
	if sw.acct != nil {
		base = sw.acct[i]
	}
	next := recAcct{member: mid, up: p.Uploaded, down: p.Downloaded}
	r := &sw.recs[i]
	if base.member != mid {
		// The first announce of this record for this member: its
		// counters are the baseline.
		f.setAcct(ih, sw, i, next)
		return
	}
	elapsed := uint64(at - r.changed)
	var d Book
	d.RawUploaded = growth(base.up, p.Uploaded)
	d.RawDownloaded = growth(base.down, p.Downloaded)
	f.clamp(&d, maxRate, elapsed)
	if r.flags&recSeeder != 0 {
		d.SeedNanos = elapsed
	}
	if completed {
		d.Completed = 1
	}
	switch {
	case p.Uploaded < base.up || p.Downloaded < base.down:
		// A reset: keep what was credited before it for reports
		// heard earlier and applied later.
		next.prev = &prevEpoch{up: max(base.up, p.Uploaded), down: max(base.down, p.Downloaded), changed: r.changed, reset: at}
	case base.prev != nil && at-base.prev.reset <= prevEpochWindow:
		next.prev = base.prev
	}
	f.setAcct(ih, sw, i, next)
	f.addCredit(ih, mid, &d, at)
}

// creditPrev credits member mid with what p, heard at time at before
// the last reset of slot i's counters (and after its previous epoch's
// last credit), reports against the baseline of before the reset.
func (f *FSM) creditPrev(ih InfoHash, sw *swarm, i int, mid uint32, p *PrivateAnnounce, at int64, maxRate uint64) {
	a := sw.acct[i]
	pe := *a.prev
	var d Book
	d.RawUploaded = growth(pe.up, p.Uploaded)
	d.RawDownloaded = growth(pe.down, p.Downloaded)
	f.clamp(&d, maxRate, uint64(at-pe.changed))
	pe.up, pe.down, pe.changed = max(pe.up, p.Uploaded), max(pe.down, p.Downloaded), at
	a.prev = &pe
	f.setAcct(ih, sw, i, a)
	f.addCredit(ih, mid, &d, at)
}

// clamp limits d's raw growth to what maxRate allows in elapsed ns,
// counting it as suspicious if it had to.
func (f *FSM) clamp(d *Book, maxRate, elapsed uint64) {
	if maxRate == 0 {
		return
	}
	limit := rateLimit(maxRate, elapsed)
	if d.RawUploaded > limit || d.RawDownloaded > limit {
		d.Suspicious = 1
		d.RawUploaded, d.RawDownloaded = min(d.RawUploaded, limit), min(d.RawDownloaded, limit)
	}
}

// addCredit applies the torrent's factors to d and credits it to member
// mid's books and the ledger, unless it is empty.
func (f *FSM) addCredit(ih InfoHash, mid uint32, d *Book, at int64) {
	fp, ok := f.st.priv.factors.m[ih]
	if !ok {
		fp = factorPair{100, 100}
	}
	d.Uploaded, d.Downloaded = applyPct(d.RawUploaded, fp.up), applyPct(d.RawDownloaded, fp.down)
	if d.isZero() {
		return
	}
	m := f.st.mutMember(mid)
	if m.books == nil {
		m.books = make(map[InfoHash]Book, 1)
	}
	b, had := m.books[ih]
	if had {
		f.sub(f.h.book(mid, ih, &b))
	}
	b.add(d)
	m.books[ih] = b
	m.tot.add(d)
	f.add(f.h.book(mid, ih, &b))
	f.appendLedger(ledgerRec{member: mid, ih: ih, time: at, d: *d})
}

// appendLedger appends e at the applied index, after the entries already
// there, and drops the oldest beyond LedgerRetention.
func (f *FSM) appendLedger(e ledgerRec) {
	p := f.st.mutPriv()
	l := &p.ledger
	e.index = f.st.applied
	if last := l.last(); last != nil && last.index == e.index {
		e.pos = last.pos + 1
	}
	j := l.start + l.n
	if j/ledgerChunkSize == len(l.chunks) {
		l.chunks = append(l.chunks, new([ledgerChunkSize]ledgerRec))
	}
	l.chunks[j/ledgerChunkSize][j%ledgerChunkSize] = e
	l.n++
	f.add(f.h.ledger(&e))
	for l.n > LedgerRetention {
		l.dropped = true
		f.sub(f.h.ledger(l.at(0)))
		l.start++
		l.n--
		if l.start == ledgerChunkSize {
			l.chunks = slices.Clone(l.chunks[1:])
			l.start = 0
		}
	}
}

// Record tags of the private state hashed into the digest.
const (
	recMember  = 'm' // id, name, passkey, revoked, created
	recBook    = 'b' // member id, info-hash, book
	recFactors = 'f' // info-hash, upload and download percent
	recPrefix  = 'p' // allow (1) or deny (0), prefix
	recPrivReq = 'q' // a remembered private admin request: seq, id
	recAcctTag = 'U' // info-hash, peer, member, baseline counters
	recLedger  = 'L' // a ledger entry
)

func (h *hasher) member(m *member) [32]byte {
	b := append(h.buf[:0], recMember)
	b = binary.BigEndian.AppendUint32(b, m.id)
	b = appendStr(b, m.name)
	b = append(b, m.key[:]...)
	if m.revoked {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(m.created))
	h.buf = b
	return sha256.Sum256(b)
}

func appendBook(b []byte, d *Book) []byte {
	for _, v := range [...]uint64{d.Uploaded, d.Downloaded, d.RawUploaded, d.RawDownloaded, d.SeedNanos, d.Completed, d.Suspicious} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func (h *hasher) book(id uint32, ih InfoHash, d *Book) [32]byte {
	b := append(h.buf[:0], recBook)
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(b, ih[:]...)
	b = appendBook(b, d)
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) factors(ih InfoHash, fp factorPair) [32]byte {
	b := append(h.buf[:0], recFactors)
	b = append(b, ih[:]...)
	b = binary.BigEndian.AppendUint32(b, fp.up)
	b = binary.BigEndian.AppendUint32(b, fp.down)
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) prefix(allow bool, x string) [32]byte {
	b := append(h.buf[:0], recPrefix, 0)
	if allow {
		b[1] = 1
	}
	b = appendStr(b, x)
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) privReq(seq, req uint64) [32]byte {
	b := append(h.buf[:0], recPrivReq)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint64(b, req)
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) acct(ih InfoHash, peer SwarmPeerID, a *recAcct) [32]byte {
	b := append(h.buf[:0], recAcctTag)
	b = append(b, ih[:]...)
	b = append(b, peer[:]...)
	b = binary.BigEndian.AppendUint32(b, a.member)
	b = binary.BigEndian.AppendUint64(b, a.up)
	b = binary.BigEndian.AppendUint64(b, a.down)
	if pe := a.prev; pe != nil {
		b = binary.BigEndian.AppendUint64(b, pe.up)
		b = binary.BigEndian.AppendUint64(b, pe.down)
		b = binary.BigEndian.AppendUint64(b, uint64(pe.changed))
		b = binary.BigEndian.AppendUint64(b, uint64(pe.reset))
	}
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) ledger(e *ledgerRec) [32]byte {
	b := append(h.buf[:0], recLedger)
	b = binary.BigEndian.AppendUint64(b, e.index)
	b = binary.BigEndian.AppendUint32(b, e.pos)
	b = binary.BigEndian.AppendUint32(b, e.member)
	b = append(b, e.ih[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.time))
	b = appendBook(b, &e.d)
	h.buf = b
	return sha256.Sum256(b)
}

// recomputePrivate adds every private record of s to sum.
func (h *hasher) recomputePrivate(s *state, sum *sum256) {
	p := s.priv
	for _, m := range p.members {
		sum.add(h.member(m))
		for ih, b := range m.books {
			sum.add(h.book(m.id, ih, &b))
		}
	}
	for ih, fp := range p.factors.m {
		sum.add(h.factors(ih, fp))
	}
	for _, x := range p.allow {
		sum.add(h.prefix(true, x))
	}
	for _, x := range p.deny {
		sum.add(h.prefix(false, x))
	}
	n := uint64(len(p.reqs))
	for seq := p.next - n; seq < p.next; seq++ {
		sum.add(h.privReq(seq, p.reqs[seq%DedupWindow]))
	}
	for _, sh := range s.swarms {
		for ih, sw := range sh.m {
			for i := range sw.acct {
				if sw.acct[i].member != 0 {
					sum.add(h.acct(ih, sw.recs[i].peer, &sw.acct[i]))
				}
			}
		}
	}
	for i := range p.ledger.n {
		sum.add(h.ledger(p.ledger.at(i)))
	}
}

// Queries.

// MemberInfo is a member with its totals, as MemberBooks and Members
// return it.
type MemberInfo struct {
	ID      uint32
	Name    string
	Passkey [PasskeySize]byte
	Revoked bool
	Created int64
	Total   Book
	// Seeding and Leeching count the member's swarm records now.
	Seeding, Leeching int
	// Torrents is filled by MemberBooks only, sorted by info-hash.
	Torrents []TorrentBook
}

// TorrentBook is a member's book on one torrent, with its records there
// now.
type TorrentBook struct {
	InfoHash          InfoHash
	Book              Book
	Seeding, Leeching int
}

// PasskeyMember returns the member a passkey names, or the refusal a
// private announce with it gets (wrapping ErrPasskey). It does not
// allocate. Safe for concurrent use.
func (f *FSM) PasskeyMember(key [PasskeySize]byte) (uint32, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.priv.memberFor(key)
}

// ClientAllowed reports whether peer passes the client prefix lists (nil)
// or the refusal (wrapping ErrClientRefused). Safe for concurrent use.
func (f *FSM) ClientAllowed(peer SwarmPeerID) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if len(f.st.priv.allow) == 0 && len(f.st.priv.deny) == 0 {
		return nil
	}
	return f.st.priv.clientAllowed(&peer)
}

// ClientPrefixLists returns the client prefix lists, sorted.
func (f *FSM) ClientPrefixLists() (allow, deny []string) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Clone(f.st.priv.allow), slices.Clone(f.st.priv.deny)
}

// TorrentFactorsOf returns a torrent's upload and download factors in
// percent (100, 100 unless set).
func (f *FSM) TorrentFactorsOf(ih InfoHash) (up, down uint32) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if fp, ok := f.st.priv.factors.m[ih]; ok {
		return fp.up, fp.down
	}
	return 100, 100
}

// memberCounts counts each member's seeding and leeching records (one
// pass over the swarms that have private records); only, if not 0,
// restricts it to one member and fills per torrent.
func (s *state) memberCounts(only uint32, per map[InfoHash]*TorrentBook) (seed, leech []int) {
	seed = make([]int, len(s.priv.members)+1)
	leech = make([]int, len(s.priv.members)+1)
	for _, sh := range s.swarms {
		for ih, sw := range sh.m {
			for i := range sw.acct {
				m := sw.acct[i].member
				if m == 0 || only != 0 && m != only {
					continue
				}
				isSeed := i >= int(sw.nLeech)
				if isSeed {
					seed[m]++
				} else {
					leech[m]++
				}
				if per != nil {
					tb := per[ih]
					if tb == nil {
						tb = &TorrentBook{InfoHash: ih}
						per[ih] = tb
					}
					if isSeed {
						tb.Seeding++
					} else {
						tb.Leeching++
					}
				}
			}
		}
	}
	return seed, leech
}

func infoOf(m *member) MemberInfo {
	return MemberInfo{ID: m.id, Name: m.name, Passkey: m.key, Revoked: m.revoked, Created: m.created, Total: m.tot}
}

// Members returns every member with its totals, sorted by name.
func (f *FSM) Members() []MemberInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := &f.st
	seed, leech := s.memberCounts(0, nil)
	out := make([]MemberInfo, len(s.priv.members))
	for i, m := range s.priv.members {
		out[i] = infoOf(m)
		out[i].Seeding, out[i].Leeching = seed[m.id], leech[m.id]
	}
	slices.SortFunc(out, func(a, b MemberInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// MemberBooks returns one member's books; ok is false for an unknown
// name.
func (f *FSM) MemberBooks(name string) (MemberInfo, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := &f.st
	id, ok := s.priv.idx.byName[name]
	if !ok {
		return MemberInfo{}, false
	}
	m := s.priv.members[id-1]
	per := make(map[InfoHash]*TorrentBook, len(m.books))
	seed, leech := s.memberCounts(id, per)
	out := infoOf(m)
	out.Seeding, out.Leeching = seed[id], leech[id]
	for ih, b := range m.books {
		tb := per[ih]
		if tb == nil {
			tb = &TorrentBook{InfoHash: ih}
			per[ih] = tb
		}
		tb.Book = b
	}
	out.Torrents = make([]TorrentBook, 0, len(per))
	for _, tb := range per {
		out.Torrents = append(out.Torrents, *tb)
	}
	slices.SortFunc(out.Torrents, func(a, b TorrentBook) int { return cmpHash(a.InfoHash, b.InfoHash) })
	return out, true
}

// LedgerRecord is one credited delta (see PrivateAnnounceBatch): the log
// index of the entry that credited it and its position among that entry's
// credits name it.
type LedgerRecord struct {
	Index    uint64
	Pos      uint32
	Member   string
	InfoHash InfoHash
	Time     int64
	Delta    Book
}

func cmpCursor(ai uint64, ap uint32, bi uint64, bp uint32) int {
	if c := cmp.Compare(ai, bi); c != 0 {
		return c
	}
	return cmp.Compare(ap, bp)
}

// LedgerAfter returns up to limit ledger records after the cursor
// (index, pos), in order, and the cursor just before the oldest record
// retained (the zero cursor while nothing was ever dropped). If records
// after the cursor were dropped, it returns an error wrapping
// ErrLedgerGone.
func (f *FSM) LedgerAfter(index uint64, pos uint32, limit int) (recs []LedgerRecord, oldestIndex uint64, oldestPos uint32, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	p := f.st.priv
	l := &p.ledger
	if p.ledgerDropped() {
		first := l.at(0)
		oldestIndex, oldestPos = first.index, first.pos
		if oldestPos > 0 {
			oldestPos--
		} else {
			oldestIndex, oldestPos = oldestIndex-1, math.MaxUint32
		}
		if cmpCursor(index, pos, oldestIndex, oldestPos) < 0 {
			return nil, oldestIndex, oldestPos, fmt.Errorf("%w: cursor %d.%d is older than the oldest credited delta the ledger keeps (it keeps the newest %d): reconcile from the members' books, then continue from %d.%d",
				ErrLedgerGone, index, pos, LedgerRetention, oldestIndex, oldestPos)
		}
	}
	// Binary search for the first record after the cursor.
	lo, hi := 0, l.n
	for lo < hi {
		mid := (lo + hi) / 2
		e := l.at(mid)
		if cmpCursor(e.index, e.pos, index, pos) <= 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	for i := lo; i < l.n && len(recs) < limit; i++ {
		e := l.at(i)
		recs = append(recs, LedgerRecord{Index: e.index, Pos: e.pos, Member: p.members[e.member-1].name, InfoHash: e.ih, Time: e.time, Delta: e.d})
	}
	return recs, oldestIndex, oldestPos, nil
}

// ledgerDropped reports whether the ledger ever dropped a record.
func (p *privState) ledgerDropped() bool { return p.ledger.dropped }

// ledgerDroppedFrom tells, after a restore, whether the ledger ever
// dropped an entry. Only a full ledger can have; then it did unless its
// entries add up to every member's totals: each entry credits something
// (credit appends no empty delta), so a dropped one leaves a total
// larger than the entries' sum.
func ledgerDroppedFrom(p *privState) bool {
	l := &p.ledger
	if l.n < LedgerRetention {
		return false
	}
	var sum, tot Book
	for i := range l.n {
		sum.add(&l.at(i).d)
	}
	for _, m := range p.members {
		tot.add(&m.tot)
	}
	return sum != tot
}

// AdmitAnnounce is the front-end's check of an announce, in one read
// lock: the client prefix lists (every mode), and in TrackerPrivate mode
// the passkey (key nil: the URL carried none). private reports the mode.
// It does not allocate unless it refuses. Safe for concurrent use.
func (f *FSM) AdmitAnnounce(peer *SwarmPeerID, key *[PasskeySize]byte) (private bool, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	p := f.st.priv
	if len(p.allow) > 0 || len(p.deny) > 0 {
		if err := p.clientAllowed(peer); err != nil {
			return false, err
		}
	}
	if f.st.policy.mode != TrackerPrivate {
		return false, nil
	}
	if key == nil {
		return true, errNoPasskey()
	}
	_, err = p.memberFor(*key)
	return true, err
}

// TrackerModeNow returns the tracker's mode. Safe for concurrent use.
func (f *FSM) TrackerModeNow() TrackerMode {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.policy.mode
}
