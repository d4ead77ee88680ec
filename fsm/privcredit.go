package fsm

import (
	"math"
	"math/bits"
	"slices"
	"sync/atomic"
)

// Crediting private announces: the write path of the books (privstate.go
// has the state it writes).

func (f *FSM) applyPrivateAnnounceBatch(c PrivateAnnounceBatch) Response {
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
			if sw.acct != nil && sw.acct[i].member == mid {
				if e := epochOf(sw.acct[i].prev, at); e != nil && at > e.changed {
					sw = s.mutSwarm(ih, sw)
					f.creditPrev(ih, sw, i, mid, p, at, maxRate, e) // mutSwarm copies the slot, not its chain
				}
			}
			if a.Event == SwarmStopped {
				// A stop heard before the record's last change is a
				// late copy of an earlier session's stop (a client's
				// retransmission, relayed after its restart committed):
				// removing the record would drop the live session's
				// baseline, and with it the growth until its next
				// report. With masters' clocks apart it may instead be
				// this session's stop: the record then lingers until
				// it expires, as one whose stop was lost does.
				return Response{}
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
	case p.Event == SwarmStarted || p.Uploaded < base.up || p.Downloaded < base.down:
		// A reset: keep what was credited before it for reports
		// heard earlier and applied later. A started is one even if
		// the counters did not go down: nothing may have been credited
		// since the last reset while reports of that session are still
		// on their way.
		next.prev = pushEpoch(prevEpoch{up: max(base.up, p.Uploaded), down: max(base.down, p.Downloaded), changed: r.changed, reset: at}, base.prev)
	case base.prev != nil && at-base.prev.reset <= prevEpochWindow:
		next.prev = base.prev
	}
	f.setAcct(ih, sw, i, next)
	f.addCredit(ih, mid, &d, at)
}

// creditPrev credits member mid with what p, heard at time at in the
// earlier epoch e of slot i (after e's last credit, before its reset),
// reports against e's baseline.
func (f *FSM) creditPrev(ih InfoHash, sw *swarm, i int, mid uint32, p *PrivateAnnounce, at int64, maxRate uint64, e *prevEpoch) {
	a := sw.acct[i]
	pe := *e
	var d Book
	d.RawUploaded = growth(pe.up, p.Uploaded)
	d.RawDownloaded = growth(pe.down, p.Downloaded)
	f.clamp(&d, maxRate, uint64(at-pe.changed))
	pe.up, pe.down, pe.changed = max(pe.up, p.Uploaded), max(pe.down, p.Downloaded), at
	a.prev = withEpoch(a.prev, e, &pe)
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
	i, had := m.findBook(ih)
	if had {
		old := m.books[i].book()
		f.sub(f.h.book(mid, ih, &old))
	} else {
		m.insertBook(i, ih)
	}
	b := m.books[i].book()
	b.add(d)
	m.books[i].set(&b)
	b = m.books[i].book() // as saturated
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
