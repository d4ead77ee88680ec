package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// A completed then stopped pair on fresh info-hashes leaves nothing behind
// (a completion counts only for a record that was downloading), and a swarm
// that did count one, once empty, holds its last address's quota and ends
// when the leader expires it.
func TestEmptySwarmsHoldQuotaAndExpire(t *testing.T) {
	n := newNode(t)
	for i := range 50 {
		ih := InfoHash{0x10, byte(i)}
		n.mustApply(Announce{InfoHash: ih, Peer: spA, IP: ip("10.0.0.1"), Port: 1, Event: SwarmCompleted, Time: 1})
		n.mustApply(Announce{InfoHash: ih, Peer: spA, IP: ip("10.0.0.1"), Event: SwarmStopped, Time: 2})
	}
	if s, p := n.f.SwarmStats(); s != 0 || p != 0 {
		t.Fatalf("after completed+stopped pairs: %d swarms, %d records; want none", s, p)
	}
	// A real download: started, completed, stopped.
	n.mustApply(ann(spA, "10.0.0.1", SwarmUpdate, false, 1))
	n.mustApply(ann(spA, "10.0.0.1", SwarmCompleted, true, 2))
	n.mustApply(ann(spA, "10.0.0.1", SwarmStopped, false, 5))
	if _, _, d := n.f.Scrape(ihX); d != 1 {
		t.Fatalf("downloaded: got %d, want 1", d)
	}
	if got := n.f.SwarmEntriesFrom(ip("10.0.0.1")); got != 1 {
		t.Fatalf("the empty swarm charges its last address: got %d, want 1", got)
	}
	if got := n.f.EmptySwarms(4, 10); len(got) != 0 {
		t.Fatalf("EmptySwarms before it emptied: %v", got)
	}
	if got := n.f.EmptySwarms(5, 10); !reflect.DeepEqual(got, []InfoHash{ihX}) {
		t.Fatalf("EmptySwarms: got %v, want X", got)
	}
	checkDigest(t, n.f)
	// Snapshots keep the empty swarm, its time and its charge.
	g := New()
	if err := restore(g, snapshotBytes(t, n.f)); err != nil {
		t.Fatal(err)
	}
	if g.Digest() != n.f.Digest() || g.SwarmEntriesFrom(ip("10.0.0.1")) != 1 || len(g.EmptySwarms(5, 10)) != 1 {
		t.Fatal("restored empty swarm differs")
	}
	// A new record reclaims the swarm and releases the charge.
	n.mustApply(ann(spB, "10.0.0.2", SwarmUpdate, false, 6))
	if a, b := n.f.SwarmEntriesFrom(ip("10.0.0.1")), n.f.SwarmEntriesFrom(ip("10.0.0.2")); a != 0 || b != 1 {
		t.Fatalf("after a record came back: charges %d and %d, want 0 and 1", a, b)
	}
	n.mustApply(ann(spB, "10.0.0.2", SwarmStopped, false, 7))
	// Too early: stays. On time: ends, with its charge.
	if r := n.mustApply(ExpireSwarmPeers{Swarms: []InfoHash{ihX}, Time: 6}); r.ExpiredSwarmPeers != 0 {
		t.Fatal("an empty swarm expired before its time")
	}
	if r := n.mustApply(ExpireSwarmPeers{Swarms: []InfoHash{ihX, ihY}, Time: 7}); r.ExpiredSwarmPeers != 1 {
		t.Fatalf("ExpiredSwarmPeers: got %d, want 1", r.ExpiredSwarmPeers)
	}
	if s, _ := n.f.SwarmStats(); s != 0 || n.f.SwarmEntriesFrom(ip("10.0.0.2")) != 0 {
		t.Fatal("the expired swarm or its charge remains")
	}
	checkDigest(t, n.f)
}

// The limits an AnnounceBatch carries are exact: however many announces
// race for the last slots, the FSM never goes over them.
func TestAnnounceBatchLimitsAreExact(t *testing.T) {
	n := newNode(t)
	var as []Announce
	for i := range 30 {
		as = append(as, Announce{InfoHash: InfoHash{1, byte(i % 3)}, Peer: SwarmPeerID{byte(i + 1)}, IP: ip(fmt.Sprintf("2001:db8:%x:%x::1", i%2, i)), Port: 1})
	}
	lim := SwarmLimits{MaxPeers: 20, MaxSwarms: 2, PerAddr: 100, Per64: 100, Per48: 8}
	r := n.mustApply(AnnounceBatch{Time: 1, Limits: lim, Announces: as})
	full, quota := 0, 0
	for _, x := range r.Results {
		switch {
		case errors.Is(x.Err, ErrTrackerFull):
			full++
		case errors.Is(x.Err, ErrSwarmQuota):
			quota++
		case x.Err != nil:
			t.Fatal(x.Err)
		}
	}
	s, p := n.f.SwarmStats()
	if s != 2 || p != 16 || full != 10 || quota != 4 {
		t.Fatalf("got %d swarms %d records (%d full, %d over quota); want 2, 16 (10, 4)", s, p, full, quota)
	}
	if _, _, n48 := n.f.SwarmQuotaUse(ip("2001:db8::1")); n48 != 8 {
		t.Fatalf("/48 use %d, want 8", n48)
	}
	checkDigest(t, n.f)
}

// AnnounceChanges says which announces the leader may answer without a
// log entry.
func TestAnnounceChanges(t *testing.T) {
	n := newNode(t)
	n.mustApply(keyed(ann(spA, "10.0.0.1", SwarmUpdate, false, 1), 3))
	for _, c := range []struct {
		a    Announce
		want bool
	}{
		{ann(spB, "10.0.0.1", SwarmStopped, false, 2), false},
		{ann(spA, "10.0.0.2", SwarmStopped, false, 2), false},
		{keyed(ann(spA, "10.0.0.2", SwarmStopped, false, 2), 3), true},
		{ann(spA, "10.0.0.1", SwarmUpdate, false, 2), false},
		{keyed(ann(spA, "10.0.0.1", SwarmUpdate, false, 2), 3), false},
		{ann(spA, "10.0.0.1", SwarmUpdate, true, 2), true},
		{ann(spA, "10.0.0.1", SwarmCompleted, true, 2), true},
		{ann(spA, "10.0.0.1", SwarmStopped, false, 2), true},
		{ann(spA, "10.0.0.2", SwarmUpdate, false, 2), true},
	} {
		if got, err := n.f.AnnounceChanges(c.a, nil); got != c.want || err != nil {
			t.Errorf("%+v: got %v, %v; want %v", c.a, got, err, c.want)
		}
	}
	n.mustApply(ann(spA, "10.0.0.1", SwarmCompleted, true, 3))
	if got, _ := n.f.AnnounceChanges(ann(spA, "10.0.0.1", SwarmCompleted, true, 4), nil); got {
		t.Error("a repeated completed changes something")
	}
	if _, err := n.f.AnnounceChanges(ann(spB, "10.0.0.1", SwarmUpdate, false, 4), &SwarmLimits{PerAddr: 1}); !errors.Is(err, ErrSwarmQuota) {
		t.Errorf("over quota: got %v", err)
	}
}

// The connection-ID secrets: the newest is accepted before anyone signs
// with it, the one before it signs, the previous one is still accepted; a
// stale proposal changes nothing; snapshots keep them.
func TestConnIDSecret(t *testing.T) {
	n := newNode(t)
	sec := func(b byte) []byte { return bytes.Repeat([]byte{b}, ConnIDSecretSize) }
	if s, at := n.f.ConnIDSecrets(); s != nil || at != 0 {
		t.Fatal("a new FSM has a secret")
	}
	n.mustApply(SetConnIDSecret{Secret: sec(1), Time: 10})
	if s, _ := n.f.ConnIDSecrets(); !reflect.DeepEqual(s, [][]byte{sec(1)}) {
		t.Fatalf("one secret: got %x", s)
	}
	if r := n.apply(SetConnIDSecret{Secret: sec(9), Time: 11}); !r.Duplicate || r.Err != nil {
		t.Fatal("a second first secret applied")
	}
	n.mustApply(SetConnIDSecret{Secret: sec(2), After: 10, Time: 20})
	if s, _ := n.f.ConnIDSecrets(); !reflect.DeepEqual(s, [][]byte{sec(1), sec(2)}) {
		t.Fatalf("two secrets: got %x, want the older signing", s)
	}
	n.mustApply(SetConnIDSecret{Secret: sec(3), After: 20, Time: 30})
	n.mustApply(SetConnIDSecret{Secret: sec(4), After: 30, Time: 40})
	s, at := n.f.ConnIDSecrets()
	if at != 40 || !reflect.DeepEqual(s, [][]byte{sec(3), sec(4), sec(2)}) {
		t.Fatalf("got %x at %d", s, at)
	}
	checkDigest(t, n.f)
	g := New()
	if err := restore(g, snapshotBytes(t, n.f)); err != nil {
		t.Fatal(err)
	}
	if s2, at2 := g.ConnIDSecrets(); at2 != 40 || !reflect.DeepEqual(s2, s) {
		t.Fatal("restored secrets differ")
	}
}

// A version 2 snapshot (no connection-ID section) restores.
func TestRestoreVersion2Snapshot(t *testing.T) {
	n := newNode(t)
	n.mustApply(ann(spA, "10.0.0.1", SwarmUpdate, false, 1))
	g := New()
	if err := restore(g, v2Snapshot(t, n.f)); err != nil {
		t.Fatalf("Restore(version 2): %v", err)
	}
	if g.Digest() != n.f.Digest() {
		t.Fatal("digest differs")
	}
}

func TestAnnounceBatchRoundTrip(t *testing.T) {
	c := AnnounceBatch{Time: -5, Limits: SwarmLimits{1, 2, 3, 4, 1<<32 - 1}, Announces: []Announce{
		keyed(ann(spA, "10.0.0.1", SwarmCompleted, true, 0), 7),
		{InfoHash: ihY, Peer: spB, IP: ip("2001:db8::1"), Event: SwarmStopped},
	}}
	b, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Fatalf("got %+v, %v; want %+v", got, err, c)
	}
	if _, err := Decode(append(b, 0)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("trailing byte: %v", err)
	}
}

func FuzzAnnounceBatchDecode(f *testing.F) {
	b, _ := Encode(AnnounceBatch{Time: 1, Announces: []Announce{ann(spA, "10.0.0.1", SwarmUpdate, false, 0)}})
	f.Add(b)
	f.Add([]byte{byte(CmdAnnounceBatch), 1, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := Decode(data)
		if err != nil {
			return
		}
		again, err := Encode(cmd)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", cmd, err)
		}
		if data[0] == byte(CmdAnnounceBatch) && !bytes.Equal(again, data) {
			t.Fatalf("not canonical: % x re-encodes as % x", data, again)
		}
	})
}

// ExpireSwarmPeers entries written before records had addresses in their
// key (two-field references, no Swarms) still decode, and name the peer's
// first record.
func TestLegacyExpireSwarmPeersDecodes(t *testing.T) {
	type legacyRef struct {
		InfoHash InfoHash
		Peer     SwarmPeerID
	}
	type legacyExpire struct {
		Entries []legacyRef
		Time    int64
	}
	var body []byte
	if err := codec.NewEncoderBytes(&body, msgpackHandle).Encode(legacyExpire{Entries: []legacyRef{{ihX, spA}}, Time: 9}); err != nil {
		t.Fatal(err)
	}
	data := append([]byte{byte(CmdExpireSwarmPeers), 1}, body...)
	cmd, err := Decode(data)
	want := ExpireSwarmPeers{Entries: []SwarmRef{{InfoHash: ihX, Peer: spA}}, Time: 9}
	if err != nil || !reflect.DeepEqual(cmd, want) {
		t.Fatalf("got %+v, %v; want %+v", cmd, err, want)
	}
	n := newNode(t)
	n.mustApply(ann(spA, "10.0.0.1", SwarmUpdate, false, 1))
	if r := n.applyBytes(data); r.Err != nil || r.ExpiredSwarmPeers != 1 {
		t.Fatalf("got %+v", r)
	}
}

// BenchmarkApplyAnnounceBatch is BenchmarkApplyAnnounce with the announces
// packed 512 to a log entry (AnnounceBatch, hand-written codec), as the
// leader proposes them; ns/op is per announce.
func BenchmarkApplyAnnounceBatch(b *testing.B) {
	f := buildSwarms(b, 10_000, 10)
	const per = 512
	logs := make([]*raft.Log, 8)
	for j := range logs {
		c := AnnounceBatch{Time: int64(j)}
		for i := j * per; i < (j+1)*per; i++ {
			k := i * 24 % 100_000
			c.Announces = append(c.Announces, Announce{
				InfoHash: memHash(k / 10), Peer: memPeer(k), IP: memIP(k), Port: 7000, Key: uint32(k), HasKey: true,
				Seeder: i%2 == 0,
			})
		}
		logs[j] = &raft.Log{Type: raft.LogCommand, Data: mustEncode(b, c)}
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if n%per == 0 {
			l := logs[n/per%len(logs)]
			l.Index = uint64(n/per + 1)
			if r := f.Apply(l).(Response); r.Err != nil {
				b.Fatal(r.Err)
			}
		}
		n++
	}
}
