package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
)

var ihP = InfoHash{0x70, 1}

func pkey(b byte) []byte {
	k := make([]byte, PasskeySize)
	k[0], k[15] = b, 0xee
	return k
}

// privNode is a node in private mode with members alice (key 1) and bob
// (key 2) and ihP allowed.
func privNode(t *testing.T) *node {
	n := newNode(t)
	n.mustApply(TrackerPolicy{SetMode: true, Mode: TrackerPrivate, Allow: []InfoHash{ihP}, RequestID: 1})
	n.mustApply(TrackerMember{Op: MemberAdd, Name: "alice", Passkey: pkey(1), RequestID: 2, Time: 1})
	n.mustApply(TrackerMember{Op: MemberAdd, Name: "bob", Passkey: pkey(2), RequestID: 3, Time: 1})
	return n
}

const sec = int64(1e9)

// pa is a private announce of peer p (one address per peer) by the member
// holding key k.
func pa(k byte, p int, ev SwarmEvent, seeder bool, up, down uint64, at int64) PrivateAnnounce {
	return PrivateAnnounce{
		Announce: Announce{InfoHash: ihP, Peer: memPeer(p), IP: memIP(p), Port: 6881, Event: ev, Seeder: seeder},
		Passkey:  [PasskeySize]byte(pkey(k)), Uploaded: up, Downloaded: down, At: at,
	}
}

// restored returns a new FSM restored from a snapshot of f, failing t
// unless it holds the same digest.
func restored(t *testing.T, f *FSM) *FSM {
	t.Helper()
	g := New()
	if err := restore(g, snapshotBytes(t, f)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if g.Digest() != f.Digest() {
		t.Fatalf("restored digest %s, want %s", g.Digest(), f.Digest())
	}
	return g
}

func (n *node) batch(t int64, as ...PrivateAnnounce) []Response {
	n.tb.Helper()
	r := n.mustApply(PrivateAnnounceBatch{Time: t, MaxRate: DefaultMaxRate, Announces: as})
	return r.Results
}

func books(t *testing.T, f *FSM, name string) MemberInfo {
	t.Helper()
	m, ok := f.MemberBooks(name)
	if !ok {
		t.Fatalf("MemberBooks(%s): not found", name)
	}
	return m
}

// The books credit the growth of the counters a member's clients report,
// exactly once: the first announce sets the baseline, a counter going
// down starts a new one, stopped credits the final delta, a duplicated
// batch or a stale report credits nothing.
func TestPrivateBooksCreditGrowthExactlyOnce(t *testing.T) {
	n := privNode(t)
	// First announce: 1,000 uploaded before; no credit.
	n.batch(10*sec, pa(1, 1, SwarmUpdate, false, 1000, 500, 10*sec))
	if b := books(t, n.f, "alice"); b.Total != (Book{}) || b.Leeching != 1 {
		t.Fatalf("after the first announce: %+v, want no credit and one leeching entry", b)
	}
	// A re-announce: +400 up, +300 down.
	credit := pa(1, 1, SwarmCredit, false, 1400, 800, 20*sec)
	n.batch(21*sec, credit)
	n.batch(22*sec, credit) // the same report again: stale
	b := books(t, n.f, "alice")
	if b.Total.Uploaded != 400 || b.Total.Downloaded != 300 {
		t.Fatalf("after one credit applied twice: %+v, want 400 up, 300 down", b.Total)
	}
	// An older report relayed late is not a counter reset.
	n.batch(23*sec, pa(1, 1, SwarmCredit, false, 1200, 700, 15*sec))
	// The client restarted: counters start again from 100/50: a new
	// baseline, no credit.
	n.batch(31*sec, pa(1, 1, SwarmCredit, false, 100, 50, 30*sec))
	// Completed: +900 down, becomes a seeder, counts a completion.
	n.batch(41*sec, pa(1, 1, SwarmCompleted, true, 100, 950, 40*sec))
	// Stopped after 60 s of seeding: +600 up credited, then the entry goes.
	n.batch(101*sec, pa(1, 1, SwarmStopped, true, 700, 950, 100*sec))
	b = books(t, n.f, "alice")
	want := Book{Uploaded: 1000, Downloaded: 1200, RawUploaded: 1000, RawDownloaded: 1200, SeedNanos: uint64(60 * sec), Completed: 1}
	if b.Total != want || b.Seeding+b.Leeching != 0 || len(b.Torrents) != 1 || b.Torrents[0].Book != want {
		t.Fatalf("books: %+v, want totals and one row %+v and no entries", b, want)
	}
	if bob := books(t, n.f, "bob"); bob.Total != (Book{}) {
		t.Fatalf("bob credited %+v for alice's announces", bob.Total)
	}
	checkDigest(t, n.f)
	// The ledger holds each credit once, in order.
	recs, _, _, err := n.f.LedgerAfter(0, 0, 100)
	if err != nil || len(recs) != 3 {
		t.Fatalf("ledger: %d records, %v; want 3", len(recs), err)
	}
	var sum Book
	for i, r := range recs {
		sum.add(&r.Delta)
		if r.Member != "alice" || i > 0 && cmpCursor(r.Index, r.Pos, recs[i-1].Index, recs[i-1].Pos) <= 0 {
			t.Fatalf("ledger record %d: %+v", i, r)
		}
	}
	if sum != want {
		t.Fatalf("ledger sums to %+v, want %+v", sum, want)
	}
	rest, _, _, _ := n.f.LedgerAfter(recs[1].Index, recs[1].Pos, 100)
	if len(rest) != 1 || rest[0] != recs[2] {
		t.Fatalf("ledger after the second record: %+v, want the third", rest)
	}
}

// A report heard before a counter reset but applied after it (a
// follower passes its reports on a second later; the restart's started
// commits at once) is credited against the baseline of before the
// reset, once; before and after a snapshot round trip.
func TestPrivateLateReportBeforeReset(t *testing.T) {
	for _, viaSnapshot := range []bool{false, true} {
		n := privNode(t)
		n.batch(1*sec, pa(1, 1, SwarmUpdate, true, 0, 0, 1*sec))
		n.batch(3*sec, pa(1, 1, SwarmCredit, true, 50, 5, 2*sec))
		n.batch(6*sec, pa(1, 1, SwarmUpdate, true, 0, 0, 6*sec)) // restarted
		if viaSnapshot {
			n = &node{tb: t, f: restored(t, n.f), index: n.index}
		}
		n.batch(7*sec, pa(1, 1, SwarmCredit, true, 90, 9, 5*sec)) // heard before the reset: 40 up, 4 down
		n.batch(7*sec, pa(1, 1, SwarmCredit, true, 70, 7, 4*sec)) // older still: nothing
		n.batch(8*sec, pa(1, 1, SwarmCredit, true, 90, 9, 5*sec)) // duplicate: nothing
		n.batch(9*sec, pa(2, 1, SwarmCredit, true, 99, 9, 5*sec)) // another member's key: nothing
		n.batch(9*sec, pa(1, 1, SwarmCredit, true, 60, 6, 8*sec)) // after the reset: 60 up, 6 down
		got := books(t, n.f, "alice").Total
		if got.RawUploaded != 150 || got.RawDownloaded != 15 {
			t.Fatalf("snapshot %t: credited %d up, %d down; want 150 and 15", viaSnapshot, got.RawUploaded, got.RawDownloaded)
		}
		if b := books(t, n.f, "bob").Total; !b.isZero() {
			t.Fatalf("bob credited %+v", b)
		}
		checkDigest(t, n.f)
	}
}

// A completed relayed onto an existing leecher record (which moves the
// record to the seeder partition, swapping slots with another leecher)
// keeps each record's baseline with its record: the completion counts
// once, and later credits go to the right member with the right growth.
func TestPrivateCompletedOnExistingLeecherKeepsBaseline(t *testing.T) {
	n := privNode(t)
	n.batch(1*sec,
		pa(1, 1, SwarmUpdate, false, 0, 0, 1*sec),    // alice leeching
		pa(2, 2, SwarmUpdate, false, 500, 50, 1*sec), // bob leeching, slot after alice
		pa(2, 3, SwarmUpdate, true, 700, 70, 1*sec),  // bob seeding
	)
	n.batch(3*sec, pa(1, 1, SwarmCredit, false, 100, 40, 2*sec))
	n.batch(4*sec, pa(1, 1, SwarmCompleted, true, 200, 80, 4*sec))
	n.batch(6*sec,
		pa(1, 1, SwarmCredit, true, 300, 80, 5*sec),
		pa(2, 2, SwarmCredit, false, 510, 60, 5*sec),
		pa(2, 3, SwarmCredit, true, 701, 70, 5*sec),
	)
	n.batch(7*sec, pa(1, 1, SwarmStopped, true, 400, 80, 7*sec))
	a, b := books(t, n.f, "alice"), books(t, n.f, "bob")
	if a.Total.RawUploaded != 400 || a.Total.RawDownloaded != 80 || a.Total.Completed != 1 {
		t.Fatalf("alice credited %d up, %d down, %d completed; want 400, 80, 1", a.Total.RawUploaded, a.Total.RawDownloaded, a.Total.Completed)
	}
	if b.Total.RawUploaded != 11 || b.Total.RawDownloaded != 10 || b.Total.Completed != 0 {
		t.Fatalf("bob credited %d up, %d down, %d completed; want 11, 10, 0", b.Total.RawUploaded, b.Total.RawDownloaded, b.Total.Completed)
	}
	checkDigest(t, n.f)
}

// A started on a record that exists (a client that restarted before its
// record expired) applies as an update whose counters are the new
// baseline; it is valid only in a private batch, and in open mode it is
// a plain update.
func TestPrivateStartedOnExistingRecord(t *testing.T) {
	n := privNode(t)
	n.batch(1*sec, pa(1, 1, SwarmStarted, false, 0, 0, 1*sec))
	n.batch(3*sec, pa(1, 1, SwarmCredit, false, 60, 6, 2*sec))
	if change, err := n.f.AnnounceChanges(pa(1, 1, SwarmStarted, false, 0, 0, 0).Announce, nil); !change || err != nil {
		t.Fatalf("AnnounceChanges of a started on an existing private record: %t, %v; want a change (the leader must commit it)", change, err)
	}
	n.batch(4*sec, pa(1, 1, SwarmStarted, false, 0, 0, 4*sec)) // restarted
	n.batch(6*sec, pa(1, 1, SwarmCredit, false, 100, 10, 5*sec))
	n.batch(6*sec, pa(1, 1, SwarmCredit, false, 80, 8, 3*sec)) // heard before the restart, applied after
	a := books(t, n.f, "alice")
	if a.Total.RawUploaded != 180 || a.Total.RawDownloaded != 18 || a.Leeching != 1 {
		t.Fatalf("alice: %d up, %d down, %d leeching; want 180, 18, 1", a.Total.RawUploaded, a.Total.RawDownloaded, a.Leeching)
	}
	checkDigest(t, n.f)

	if err := (AnnounceBatch{Announces: []Announce{pa(1, 2, SwarmStarted, false, 0, 0, 0).Announce}}).Validate(); err == nil {
		t.Fatal("an open AnnounceBatch accepted a SwarmStarted")
	}
	noPort := pa(1, 2, SwarmStarted, false, 0, 0, 0)
	noPort.Port = 0
	if err := (PrivateAnnounceBatch{Announces: []PrivateAnnounce{noPort}}).Validate(); err == nil {
		t.Fatal("a SwarmStarted with port 0 was accepted: its record could not be written to a snapshot")
	}
	started := pa(1, 2, SwarmStarted, false, 0, 0, 0)
	data, err := Encode(PrivateAnnounceBatch{Time: 7 * sec, Announces: []PrivateAnnounce{started}})
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := Decode(data)
	if err != nil || cmd.(PrivateAnnounceBatch).Announces[0].Event != SwarmStarted {
		t.Fatalf("round trip: %+v, %v", cmd, err)
	}

	n.mustApply(TrackerPolicy{SetMode: true, Mode: TrackerOpen, RequestID: 10})
	n.batch(8*sec, started)
	if c, inc, _ := n.f.Scrape(ihP); c+inc != 2 {
		t.Fatalf("open mode: %d seeders and %d leechers after a started, want 2 records", c, inc)
	}
	checkDigest(t, n.f)
}

// A client's stop reaches the tracker twice (a retransmission): one copy
// commits, the client starts a new session on a new record, and then the
// other copy, heard before that started, is applied. It credits nothing
// and leaves the new session's record and baseline alone.
func TestPrivateLateStopCopyKeepsTheNextSession(t *testing.T) {
	n := privNode(t)
	n.batch(1*sec, pa(1, 1, SwarmStarted, false, 0, 0, 1*sec))
	n.batch(3*sec, pa(1, 1, SwarmStopped, false, 40, 4, 3*sec))
	n.batch(4*sec, pa(1, 1, SwarmStarted, false, 0, 0, 4*sec))
	n.batch(5*sec, pa(1, 1, SwarmStopped, false, 40, 4, 2*sec)) // the copy heard first
	if c, inc, _ := n.f.Scrape(ihP); c+inc != 1 {
		t.Fatalf("%d records after a late copy of the last session's stop, want the new session's 1", c+inc)
	}
	n.batch(7*sec, pa(1, 1, SwarmCredit, false, 30, 3, 6*sec))
	if got := books(t, n.f, "alice").Total; got.RawUploaded != 70 || got.RawDownloaded != 7 {
		t.Fatalf("credited %d up, %d down; want 40+30 and 4+3", got.RawUploaded, got.RawDownloaded)
	}
	checkDigest(t, n.f)
}

// Two restarts in quick succession, each committed before the reports
// heard ahead of it arrive: every session's reports are credited against
// its own baseline, before and after a snapshot round trip.
func TestPrivateReportsOfTwoSessionsBeforeTwoRestarts(t *testing.T) {
	for _, viaSnapshot := range []bool{false, true} {
		n := privNode(t)
		n.batch(1*sec, pa(1, 1, SwarmStarted, true, 0, 0, 1*sec))
		n.batch(2*sec, pa(1, 1, SwarmCredit, true, 50, 5, 2*sec))
		n.batch(5*sec, pa(1, 1, SwarmStarted, true, 0, 0, 5*sec)) // 70@3 and 90@4 still on their way
		n.batch(8*sec, pa(1, 1, SwarmStarted, true, 0, 0, 8*sec)) // and 30@6, 60@7
		if viaSnapshot {
			n = &node{tb: t, f: restored(t, n.f), index: n.index}
		}
		n.batch(11*sec,
			pa(1, 1, SwarmCredit, true, 70, 7, 3*sec), pa(1, 1, SwarmCredit, true, 90, 9, 4*sec),
			pa(1, 1, SwarmCredit, true, 30, 3, 6*sec), pa(1, 1, SwarmCredit, true, 60, 6, 7*sec),
			pa(1, 1, SwarmCredit, true, 30, 3, 9*sec), pa(1, 1, SwarmCredit, true, 100, 10, 10*sec),
			pa(1, 1, SwarmCredit, true, 90, 9, 4*sec), // a duplicate: nothing
		)
		got := books(t, n.f, "alice").Total
		if got.RawUploaded != 90+60+100 || got.RawDownloaded != 9+6+10 {
			t.Fatalf("snapshot %t: credited %d up, %d down; want 250 and 25", viaSnapshot, got.RawUploaded, got.RawDownloaded)
		}
		checkDigest(t, n.f)
	}
}

// In private mode an announce without a passkey (an AnnounceBatch, as a
// master that has not applied the mode yet relays it) is refused and
// changes nothing: it would make a record with no member's baseline, and
// a stranger could add peers to a private swarm through that master.
func TestPrivateRefusesOpenAnnounces(t *testing.T) {
	n := privNode(t)
	before := n.f.Digest()
	a := pa(1, 1, SwarmUpdate, false, 0, 0, 0).Announce
	r := n.mustApply(AnnounceBatch{Time: 1 * sec, Announces: []Announce{a}})
	if len(r.Results) != 1 || !errors.Is(r.Results[0].Err, ErrPasskey) {
		t.Fatalf("open announce in private mode: %+v, want ErrPasskey", r.Results)
	}
	if c, inc, _ := n.f.Scrape(ihP); c+inc != 0 || n.f.Digest() != before {
		t.Fatalf("a refused open announce changed the index (%d seeders, %d leechers)", c, inc)
	}
}

// A credit faster than the maximum rate is clamped and counted; factors
// apply to what is credited, not to the raw growth.
func TestPrivateClampAndFactors(t *testing.T) {
	n := privNode(t)
	n.mustApply(TorrentFactors{InfoHash: ihP, UploadPct: 200, DownloadPct: 0, RequestID: 9})
	n.batch(10*sec, pa(2, 1, SwarmUpdate, false, 0, 0, 10*sec))
	r := n.mustApply(PrivateAnnounceBatch{Time: 12 * sec, MaxRate: 1000, Announces: []PrivateAnnounce{pa(2, 1, SwarmCredit, false, 5000, 1500, 12*sec)}})
	if r.Results[0].Err != nil {
		t.Fatal(r.Results[0].Err)
	}
	b := books(t, n.f, "bob").Total
	want := Book{Uploaded: 4000, Downloaded: 0, RawUploaded: 2000, RawDownloaded: 1500, Suspicious: 1}
	if b != want {
		t.Fatalf("books %+v, want %+v (2 s at 1000 B/s clamps 5000 to 2000; upload ×2, freeleech)", b, want)
	}
	checkDigest(t, n.f)
}

// Missing, unknown and revoked passkeys and refused clients change
// nothing, and say which.
func TestPrivateRefusals(t *testing.T) {
	n := privNode(t)
	n.mustApply(ClientPrefixes{Deny: []string{"-XX"}, RequestID: 10})
	n.mustApply(TrackerMember{Op: MemberRevoke, Name: "bob", RequestID: 11})
	noKey := pa(1, 1, SwarmUpdate, false, 0, 0, sec)
	noKey.Passkey = [PasskeySize]byte{}
	unknown := pa(9, 2, SwarmUpdate, false, 0, 0, sec)
	revoked := pa(2, 3, SwarmUpdate, false, 0, 0, sec)
	denied := pa(1, 4, SwarmUpdate, false, 0, 0, sec)
	copy(denied.Peer[:], "-XX1234-")
	before := n.f.Digest()
	res := n.batch(2*sec, noKey, unknown, revoked, denied)
	for i, want := range []error{ErrPasskey, ErrPasskey, ErrPasskey, ErrClientRefused} {
		if !errors.Is(res[i].Err, want) {
			t.Errorf("announce %d: %v, want %v", i, res[i].Err, want)
		}
	}
	if n.f.Digest() != before {
		t.Fatal("refused announces changed the state")
	}
	if _, p := n.f.SwarmStats(); p != 0 {
		t.Fatalf("%d swarm entries after refused announces", p)
	}
	// Rotation: the old key is refused, the new one accepted.
	n.mustApply(TrackerMember{Op: MemberRotate, Name: "alice", Passkey: pkey(7), RequestID: 12})
	res = n.batch(3*sec, pa(1, 5, SwarmUpdate, false, 0, 0, sec), pa(7, 6, SwarmUpdate, false, 0, 0, sec))
	if !errors.Is(res[0].Err, ErrPasskey) || res[1].Err != nil {
		t.Fatalf("after rotation: old key %v, new key %v", res[0].Err, res[1].Err)
	}
	if r := n.apply(TrackerMember{Op: MemberAdd, Name: "alice", Passkey: pkey(8), RequestID: 13}); !errors.Is(r.Err, ErrMemberExists) {
		t.Fatalf("adding alice again: %v", r.Err)
	}
	if r := n.apply(TrackerMember{Op: MemberAdd, Name: "alice", Passkey: pkey(1), RequestID: 12}); !r.Duplicate {
		t.Fatalf("a retried request: %+v, want Duplicate", r)
	}
	// Lists replaced: the digest takes each old entry out as what it was.
	n.mustApply(ClientPrefixes{Allow: []string{"-qB", "-TR"}, Deny: []string{"-XX"}, RequestID: 14})
	n.mustApply(ClientPrefixes{Allow: []string{"-TR"}, Deny: []string{"-qB"}, RequestID: 15})
	checkDigest(t, n.f)
}

// The private state survives a snapshot and restore with its digest, and
// a format 3 snapshot (no private section) still restores.
func TestPrivateSnapshotRoundTrip(t *testing.T) {
	n := privNode(t)
	n.mustApply(TorrentFactors{InfoHash: ihP, UploadPct: 150, DownloadPct: 50, RequestID: 20})
	n.mustApply(ClientPrefixes{Allow: []string{"-qB", "-TR"}, Deny: []string{"-XX"}, RequestID: 21})
	for p := range 40 { // past swarmIndexMax
		n.batch(int64(p+1)*sec, pa(1, p, SwarmUpdate, p%2 == 0, 0, 0, int64(p+1)*sec))
	}
	for p := range 40 {
		n.batch(int64(p+100)*sec, pa(1, p, SwarmCredit, p%2 == 0, uint64(p)*10, uint64(p)*5, int64(p+100)*sec))
	}
	checkDigest(t, n.f)
	g := restored(t, n.f)
	if got, want := books(t, g, "alice"), books(t, n.f, "alice"); got.Total != want.Total || got.Seeding != want.Seeding || len(got.Torrents) != len(want.Torrents) {
		t.Fatalf("restored books %+v, want %+v", got, want)
	}
	r1, _, _, _ := g.LedgerAfter(0, 0, 1000)
	r2, _, _, _ := n.f.LedgerAfter(0, 0, 1000)
	if len(r1) != len(r2) || len(r1) != 40 {
		t.Fatalf("restored ledger has %d records, want %d (40)", len(r1), len(r2))
	}
	// Crediting goes on from the restored baselines.
	g2 := &node{tb: t, f: g, index: n.index}
	g2.batch(300*sec, pa(1, 3, SwarmCredit, false, 130, 15, 300*sec))
	if got := books(t, g, "alice").Total.RawUploaded; got != books(t, n.f, "alice").Total.RawUploaded+100 {
		t.Fatalf("credit after restore: raw uploaded %d", got)
	}
	checkDigest(t, g)
	snap3 := newNode(t)
	snap3.mustApply(Announce{InfoHash: ihP, Peer: memPeer(1), IP: memIP(1), Port: 1, Time: 5})
	h := New()
	if err := restore(h, v3Snapshot(t, snap3.f)); err != nil || h.Digest() != snap3.f.Digest() {
		t.Fatalf("Restore(version 3): %v", err)
	}
}

// The ledger keeps the newest LedgerRetention deltas; a cursor older than
// that fails with ErrLedgerGone. A ledger holding exactly
// LedgerRetention entries dropped none: the zero cursor still reads them
// all, before and after a snapshot round trip.
func TestPrivateLedgerRetention(t *testing.T) {
	if testing.Short() {
		t.Skip("applies 70k credits")
	}
	n := privNode(t)
	n.batch(sec, pa(1, 1, SwarmUpdate, false, 0, 0, sec))
	credit := func(i int) { n.batch(int64(i+2)*sec, pa(1, 1, SwarmCredit, false, uint64(i+1), 0, int64(i+2)*sec)) }
	for i := range LedgerRetention {
		credit(i)
	}
	restored := func() *FSM {
		g := New()
		if err := restore(g, snapshotBytes(t, n.f)); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		return g
	}
	for name, f := range map[string]*FSM{"applied": n.f, "restored": restored()} {
		recs, oi, op, err := f.LedgerAfter(0, 0, 10)
		if err != nil || len(recs) != 10 || oi != 0 || op != 0 {
			t.Fatalf("%s, %d entries, nothing dropped: reading from the start: %d records, oldest %d.%d, %v; want 10, 0.0, no error", name, LedgerRetention, len(recs), oi, op, err)
		}
	}
	for i := LedgerRetention; i < LedgerRetention+10; i++ {
		credit(i)
	}
	for name, f := range map[string]*FSM{"applied": n.f, "restored": restored()} {
		_, oi, op, err := f.LedgerAfter(0, 0, 10)
		if !errors.Is(err, ErrLedgerGone) {
			t.Fatalf("%s: reading from the start: %v, want ErrLedgerGone", name, err)
		}
		recs, _, _, err := f.LedgerAfter(oi, op, 10)
		if err != nil || len(recs) != 10 {
			t.Fatalf("%s: reading from the oldest cursor: %d, %v", name, len(recs), err)
		}
	}
	checkDigest(t, n.f)
}

func FuzzDecodePrivateAnnounceBatch(f *testing.F) {
	b, _ := Encode(PrivateAnnounceBatch{Time: 5, MaxRate: 7, Announces: []PrivateAnnounce{pa(1, 1, SwarmCredit, true, 3, 4, 5)}})
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			return
		}
		again, err := Encode(c)
		if err != nil {
			t.Fatalf("re-encode %T: %v", c, err)
		}
		if c2, err := Decode(again); err != nil || c2.Type() != c.Type() {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// A member credited on many torrents, in random order, keeps one book per
// torrent, sorted by info-hash, each with exactly its credit; a snapshot
// taken half-way keeps the books as they were then, and a restore keeps
// them all.
func TestPrivateBooksOfManyTorrents(t *testing.T) {
	n := privNode(t)
	const torrents = 300
	ihs := make([]InfoHash, torrents)
	for i := range ihs {
		ihs[i] = memHash(i)
	}
	allow := TrackerPolicy{Mode: TrackerPrivate, Allow: ihs, RequestID: 10}
	n.mustApply(allow)
	order := rand.New(rand.NewPCG(7, 7)).Perm(torrents)
	announce := func(step, i int, ev SwarmEvent, up uint64) {
		p := pa(1, i, ev, false, up, 0, int64(step+2)*sec)
		p.InfoHash = ihs[i]
		if r := n.batch(p.At, p); r[0].Err != nil {
			t.Fatalf("torrent %d: %v", i, r[0].Err)
		}
	}
	var half *FSM
	for step, i := range order {
		announce(2*step, i, SwarmUpdate, 0)             // the baseline
		announce(2*step+1, i, SwarmCredit, uint64(i+1)) // i+1 bytes credited
		if step == torrents/2 {
			half = restored(t, n.f)
		}
	}
	check := func(f *FSM, want int) {
		t.Helper()
		b := books(t, f, "alice")
		if len(b.Torrents) != want {
			t.Fatalf("%d torrent rows, want %d", len(b.Torrents), want)
		}
		var sum uint64
		for j, tb := range b.Torrents {
			if j > 0 && cmpHash(b.Torrents[j-1].InfoHash, tb.InfoHash) >= 0 {
				t.Fatalf("rows out of order at %d", j)
			}
			sum += tb.Book.Uploaded
		}
		if b.Total.Uploaded != sum {
			t.Fatalf("total uploaded %d, want the rows' sum %d", b.Total.Uploaded, sum)
		}
	}
	check(n.f, torrents)
	check(restored(t, n.f), torrents)
	check(half, torrents/2+1)
	for i, ih := range ihs {
		got := books(t, n.f, "alice").Torrents[slices.IndexFunc(books(t, n.f, "alice").Torrents, func(tb TorrentBook) bool { return tb.InfoHash == ih })]
		if got.Book.Uploaded != uint64(i+1) {
			t.Fatalf("torrent %d: uploaded %d, want %d", i, got.Book.Uploaded, i+1)
		}
	}
}

// A book's event counts are kept in 32 bits and saturate there, as the
// byte counters saturate at theirs.
func TestBookRowSaturates(t *testing.T) {
	var r bookRow
	b := Book{Uploaded: 1, Downloaded: 2, RawUploaded: 3, RawDownloaded: 4, SeedNanos: 5, Completed: 6, Suspicious: 7}
	r.set(&b)
	if got := r.book(); got != b {
		t.Fatalf("round trip %+v, want %+v", got, b)
	}
	b.Completed, b.Suspicious = math.MaxUint64, 1<<32
	r.set(&b)
	if got := r.book(); got.Completed != math.MaxUint32 || got.Suspicious != math.MaxUint32 {
		t.Fatalf("saturated counts %d, %d; want %d", got.Completed, got.Suspicious, uint32(math.MaxUint32))
	}
}

// BenchmarkPrivateMemory reports heap bytes per swarm record of a private
// tracker with 100k members and 1M records in 100k swarms, every record
// credited once (so 1M books), to compare with BenchmarkSwarmMemory's
// open tracker.
func BenchmarkPrivateMemory(b *testing.B) {
	const members, swarms, per = 100_000, 100_000, 10
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		f := privWithMembers(b, members)
		f.mu.Lock()
		for s := range swarms {
			ih := memHash(s)
			f.st.policy.allow[ih] = struct{}{}
			for k := range per {
				i := s*per + k
				p := PrivateAnnounce{Announce: Announce{InfoHash: ih, Peer: memPeer(i), IP: memIP(i), Port: uint16(6881 + k), Key: uint32(i), HasKey: true, Seeder: k%3 == 0}}
				binary.BigEndian.PutUint32(p.Passkey[:], uint32(i%members+1))
				p.At = int64(i+1) * 1e6
				if r := f.privateAnnounce(&p, p.At, nil, 0); r.Err != nil {
					b.Fatal(r.Err)
				}
				p.Event, p.Uploaded, p.At = SwarmCredit, 1000, p.At+1e9
				f.privateAnnounce(&p, p.At, nil, 0)
			}
		}
		f.mu.Unlock()
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(swarms*per), "heap-bytes/record")
		runtime.KeepAlive(f)
	}
}

// A private tracker under a random mix of everything its log can hold —
// reports late and early, restarts, completions, stops, duplicated
// batches, rotated and revoked passkeys, factors, client lists — keeps
// its incremental digest equal to a full recount after every entry, each
// member's total equal to the sum of its books, and the same state
// through a snapshot round trip at random points; a second replica fed
// the same entries in batches ends with the same digest.
func TestPropertyPrivateBooks(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4} {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 5))
			n := privNode(t)
			var logs []*raft.Log
			var counters [5][2]uint64 // each peer's client counters
			now := 10 * sec
			credits := 0
			for step := range 1000 {
				now += int64(r.IntN(3)) * sec / 2
				var cmd Command
				switch k := r.IntN(100); {
				case k < 2:
					op := []MemberOp{MemberRotate, MemberRevoke, MemberAdd}[r.IntN(3)]
					c := TrackerMember{Op: op, Name: []string{"alice", "bob", "carol"}[r.IntN(3)], RequestID: uint64(1000 + step), Time: now}
					if op != MemberRevoke {
						c.Passkey = pkey(byte(1 + r.IntN(4)))
					}
					cmd = c
				case k < 7:
					cmd = TorrentFactors{InfoHash: ihP, UploadPct: uint32(r.IntN(3) * 100), DownloadPct: uint32(r.IntN(2) * 100), RequestID: uint64(1000 + step)}
				case k < 9:
					var c ClientPrefixes
					c.RequestID = uint64(1000 + step)
					if r.IntN(2) == 0 {
						id := memPeer(r.IntN(5))
						c.Deny = []string{string(id[:12])}
					}
					if r.IntN(2) == 0 {
						c.Allow = []string{"-qB4520-"} // every peer here
					}
					cmd = c
				case k < 12 && len(logs) > 0:
					// A batch committed twice (a retried proposal): its
					// second copy applies again, as raft would.
					cmd = nil
				default:
					c := PrivateAnnounceBatch{Time: now, MaxRate: DefaultMaxRate}
					if r.IntN(8) == 0 {
						c.MaxRate = 100 // clamps
					}
					for range 1 + r.IntN(4) {
						p := r.IntN(len(counters))
						ev := []SwarmEvent{SwarmUpdate, SwarmCredit, SwarmCredit, SwarmStarted, SwarmCompleted, SwarmStopped}[r.IntN(6)]
						if ev == SwarmStarted && r.IntN(2) == 0 {
							counters[p] = [2]uint64{}
						}
						counters[p][0] += uint64(r.IntN(1000))
						counters[p][1] += uint64(r.IntN(1000))
						at := now - int64(r.IntN(4))*sec // heard up to 3 s before the batch
						c.Announces = append(c.Announces, pa(byte(1+r.IntN(4)), p, ev, r.IntN(3) == 0, counters[p][0], counters[p][1], at))
					}
					cmd = c
				}
				var data []byte
				if cmd == nil {
					data = logs[r.IntN(len(logs))].Data
				} else {
					data = mustEncode(t, cmd)
				}
				res := n.applyBytes(data)
				logs = append(logs, &raft.Log{Index: n.index, Term: 1, Type: raft.LogCommand, Data: data})
				for _, x := range res.Results {
					if x.Err == nil {
						credits++
					}
				}
				checkDigest(t, n.f)
				for _, name := range []string{"alice", "bob", "carol"} {
					m, ok := n.f.MemberBooks(name)
					if !ok {
						continue
					}
					var sum Book
					for _, tb := range m.Torrents {
						sum.add(&tb.Book)
					}
					if sum != m.Total {
						t.Fatalf("step %d: %s's total %+v, the sum of its books %+v", step, name, m.Total, sum)
					}
				}
				if r.IntN(40) == 0 {
					n.f = restored(t, n.f)
				}
			}
			other := privNode(t).f // the same first entries
			for i := 0; i < len(logs); {
				k := min(1+r.IntN(16), len(logs)-i)
				other.ApplyBatch(logs[i : i+k])
				i += k
			}
			if other.Digest() != n.f.Digest() {
				t.Fatalf("a replica fed the same %d entries in batches: digest %s, want %s", len(logs), other.Digest(), n.f.Digest())
			}
			var credited uint64
			for _, name := range []string{"alice", "bob", "carol"} {
				if m, ok := n.f.MemberBooks(name); ok {
					credited += m.Total.RawUploaded
				}
			}
			t.Logf("seed %d: %d private announces applied, %d bytes up credited", seed, credits, credited)
			if credits < 200 || credited == 0 {
				t.Fatalf("only %d private announces applied, %d bytes credited: the test no longer exercises the books", credits, credited)
			}
		})
	}
}
