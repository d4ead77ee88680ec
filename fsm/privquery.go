package fsm

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Queries of the private tracker state, for the tracker, the CLI and the
// admin API.

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
	return MemberInfo{ID: m.id, Name: m.name, Passkey: m.key, Revoked: m.revoked, Created: m.created, Total: m.total()}
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
	for i := range m.books {
		r := &m.books[i]
		tb := per[r.ih]
		if tb == nil {
			tb = &TorrentBook{InfoHash: r.ih}
			per[r.ih] = tb
		}
		tb.Book = r.book()
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
		mt := m.total()
		tot.add(&mt)
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
