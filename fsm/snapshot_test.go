package fsm

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// smallState returns an FSM with a little of everything: peers, shared and
// single-holder files, a remembered conflict.
func smallState(tb testing.TB) *FSM {
	n := newNode(tb)
	n.mustApply(joinA(1))
	n.mustApply(joinB(1))
	n.mustApply(regA(2, meta(1, "Shared.iso"), meta(2, "mine")))
	n.mustApply(regB(2, meta(1, "shared")))
	bad := meta(2, "mine")
	bad.Size++
	if r := n.apply(regB(3, bad)); !errors.Is(r.Err, ErrConflict) {
		tb.Fatalf("conflict: got %v", r.Err)
	}
	n.f.Apply(&raft.Log{Index: 42, Type: raft.LogNoop})
	return n.f
}

// smallSwarmState is smallState plus a little of every swarm feature: a
// keyed leecher, a seeder counted as downloaded, an IPv6 record, a swarm
// that remembers only its downloaded count, and a policy with a mode, both
// sets and a remembered request.
func smallSwarmState(tb testing.TB) *FSM {
	f := smallState(tb)
	n := &node{tb: tb, f: f, index: 100}
	n.mustApply(TrackerPolicy{Allow: []InfoHash{ihX, ihY, {0x44}}, Deny: []InfoHash{{0x55}}, RequestID: 1})
	n.mustApply(TrackerPolicy{SetMode: true, Mode: TrackerAllowlist, RequestID: 2})
	n.mustApply(keyed(ann(spA, "10.0.0.1", SwarmUpdate, false, -7), 99))
	n.mustApply(ann(spB, "2001:db8::2", SwarmCompleted, false, 1<<40))
	n.mustApply(Announce{InfoHash: ihY, Peer: spA, IP: ip("10.0.0.1"), Port: 1, Time: 2})
	n.mustApply(Announce{InfoHash: ihY, Peer: spA, IP: ip("10.0.0.1"), Port: 1, Event: SwarmCompleted, Time: 3})
	n.mustApply(Announce{InfoHash: ihY, Peer: spA, IP: ip("10.0.0.1"), Event: SwarmStopped, Time: 4})
	n.mustApply(SetConnIDSecret{Secret: bytes.Repeat([]byte{1}, ConnIDSecretSize), Time: 10})
	n.mustApply(SetConnIDSecret{Secret: bytes.Repeat([]byte{2}, ConnIDSecretSize), After: 10, Time: 20})
	return f
}

// v2SwarmState is a state with swarms that format version 2 can hold: no
// connection-ID secrets, no swarm kept empty for its completed count.
func v2SwarmState(tb testing.TB) *FSM {
	f := smallState(tb)
	n := &node{tb: tb, f: f, index: 100}
	n.mustApply(TrackerPolicy{Allow: []InfoHash{ihX, ihY}, RequestID: 1})
	n.mustApply(keyed(ann(spA, "10.0.0.1", SwarmUpdate, false, -7), 99))
	n.mustApply(ann(spB, "2001:db8::2", SwarmCompleted, false, 1<<40))
	return f
}

func TestSnapshotRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    *FSM
	}{
		{"empty", New()},
		{"small", smallState(t)},
		{"swarms", smallSwarmState(t)},
		{"large swarm", largeSwarmState(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := snapshotBytes(t, tc.f)
			g := New()
			if err := restore(g, b); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			universe := []FileID{fid(1), fid(2), fid(3)}
			diffViews(t, viewOf(g, universe), viewOf(tc.f, universe))
			// Canonical: a restored state persists to the same bytes.
			if again := snapshotBytes(t, g); !bytes.Equal(again, b) {
				t.Fatalf("re-persisted snapshot differs: got %d bytes, want %d", len(again), len(b))
			}
			// The remembered conflict survives: a retry is still a duplicate.
			bad := meta(2, "mine")
			bad.Size++
			if tc.name == "small" || tc.name == "swarms" {
				n := &node{tb: t, f: g, index: 100}
				if r := n.apply(regB(3, bad)); !r.Duplicate || !errors.Is(r.Err, ErrConflict) {
					t.Fatalf("retry after restore: got %+v, want duplicate conflict", r)
				}
			}
		})
	}
}

func TestRestoreRejectsCorruptInput(t *testing.T) {
	good := snapshotBytes(t, smallSwarmState(t))
	version2 := bytes.Clone(good)
	version2[len(snapshotMagic)] = SnapshotVersion + 1

	cases := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"bad magic", append([]byte("NOTASNAP"), good[8:]...)},
		{"unknown version", version2},
		{"trailing byte", append(bytes.Clone(good), 0)},
		{"non-minimal varint", append(append([]byte(snapshotMagic), 0x81, 0x00), good[len(snapshotMagic)+1:]...)},
	}
	// Every truncation and every single-byte change is detected.
	for i := range good {
		cases = append(cases, struct {
			name string
			data []byte
		}{"truncated", good[:i]})
		flipped := bytes.Clone(good)
		flipped[i] ^= 0x01 << (i % 8)
		cases = append(cases, struct {
			name string
			data []byte
		}{"flipped", flipped})
	}

	f := smallState(t)
	before := viewOf(f, []FileID{fid(1), fid(2)})
	for i, tc := range cases {
		err := restore(f, tc.data)
		if !errors.Is(err, ErrCorruptSnapshot) {
			t.Fatalf("case %d (%s, %d bytes): got %v, want ErrCorruptSnapshot", i, tc.name, len(tc.data), err)
		}
		if tc.name == "unknown version" && !strings.Contains(err.Error(), "version") {
			t.Errorf("unknown version: error %q does not mention the version", err)
		}
	}
	diffViews(t, viewOf(f, []FileID{fid(1), fid(2)}), before)
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

func TestRestoreReportsReadErrors(t *testing.T) {
	boom := errors.New("disk on fire")
	f := smallState(t)
	before := f.Digest()
	err := f.Restore(io.NopCloser(io.MultiReader(strings.NewReader(snapshotMagic), failingReader{boom})))
	if !errors.Is(err, boom) || errors.Is(err, ErrCorruptSnapshot) {
		t.Fatalf("got %v, want the read error and not ErrCorruptSnapshot", err)
	}
	if f.Digest() != before {
		t.Fatal("a failed Restore changed the state")
	}
}

type failingSink struct{ memSink }

func (s *failingSink) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestPersistCancelsOnWriteError(t *testing.T) {
	f := New()
	n := &node{tb: t, f: f}
	n.mustApply(joinA(1))
	n.mustApply(regA(2, meta(1, "x")))
	snap, _ := f.Snapshot()
	defer snap.Release()
	sink := &failingSink{}
	if err := snap.Persist(sink); err == nil {
		t.Fatal("Persist: got nil error, want the sink's error")
	}
	if !sink.cancelled || sink.closed {
		t.Fatalf("sink: cancelled=%v closed=%v, want cancelled and not closed", sink.cancelled, sink.closed)
	}
}

// A snapshot keeps the state of Snapshot() time while every kind of change
// is applied afterwards, including removal of everything.
func TestSnapshotIsolatedFromLaterApplies(t *testing.T) {
	f := smallState(t)
	universe := []FileID{fid(1), fid(2), fid(3)}
	want := viewOf(f, universe)
	snap, _ := f.Snapshot()
	n := &node{tb: t, f: f, index: 100}
	n.mustApply(JoinPeer{Peer: "alice", Token: tokA, Addr: "1.1.1.1:1", RequestID: 10, Time: 7})
	n.mustApply(regA(11, meta(1, "renamed"), meta(3, "new")))
	n.mustApply(UnregisterFiles{Peer: "bob", Token: tokB, RequestID: 10, Files: []FileID{fid(1)}})
	n.apply(ExpirePeers{Peers: []PeerID{"alice", "bob"}, Time: 1 << 40})
	if got := f.Counts(); got != (Counts{}) {
		t.Fatalf("after expiring everyone: Counts %+v, want empty", got)
	}
	g := New()
	if err := restore(g, persist(t, snap)); err != nil {
		t.Fatal(err)
	}
	diffViews(t, viewOf(g, universe), want)
}

func FuzzRestore(f *testing.F) {
	f.Add([]byte{})
	f.Add(snapshotBytes(f, New()))
	f.Add(snapshotBytes(f, smallState(f)))
	f.Add(snapshotBytes(f, smallSwarmState(f)))
	f.Add(snapshotBytes(f, largeSwarmState(f)))
	f.Add(v1Snapshot(f, smallState(f)))
	f.Add(v2Snapshot(f, v2SwarmState(f)))
	g := New()
	for _, l := range newCmdGen(f, 5).log(300) {
		g.Apply(l)
	}
	f.Add(snapshotBytes(f, g))
	f.Fuzz(func(t *testing.T, data []byte) {
		target := smallState(t)
		before := target.Digest()
		err := restore(target, data)
		if err != nil {
			if !errors.Is(err, ErrCorruptSnapshot) {
				t.Fatalf("got %v, want ErrCorruptSnapshot", err)
			}
			if target.Digest() != before {
				t.Fatal("a failed Restore changed the state")
			}
			return
		}
		checkDigest(t, target)
		again := snapshotBytes(t, target)
		switch data[len(snapshotMagic)] { // an old snapshot is canonical in its own format
		case 1:
			again = v1Snapshot(t, target)
		case 2:
			again = v2Snapshot(t, target)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("accepted a non-canonical snapshot: re-persisted %d bytes differ from input %d bytes", len(again), len(data))
		}
	})
}

// largeSwarmState holds one swarm big enough to be indexed, with leechers
// and seeders in an order that churn produced.
func largeSwarmState(tb testing.TB) *FSM {
	n := newNode(tb)
	for i := range 3 * swarmIndexMax {
		n.mustApply(Announce{InfoHash: ihX, Peer: memPeer(i), IP: memIP(i % 5), Port: uint16(i + 1), Seeder: i%3 == 0, Time: int64(i)})
	}
	for i := 0; i < 3*swarmIndexMax; i += 4 {
		n.mustApply(Announce{InfoHash: ihX, Peer: memPeer(i), IP: memIP(i % 5), Event: SwarmStopped})
	}
	return n.f
}

// v1Snapshot returns the snapshot that a build with format version 1 wrote
// for f, which must hold no swarms, the default policy, no connection-ID
// secrets and no revoked certificates: version 1 is version 3 without the
// policy, swarm, connection-ID and deny list sections (eight bytes when
// empty).
func v1Snapshot(tb testing.TB, f *FSM) []byte {
	tb.Helper()
	return oldSnapshot(tb, f, 1, 8)
}

// v2Snapshot returns the snapshot that a build with format version 2
// wrote for f, which must hold no connection-ID secrets, no empty swarms
// and no revoked certificates: version 2 is version 3 without the
// connection-ID and deny list sections (two bytes when empty).
func v2Snapshot(tb testing.TB, f *FSM) []byte {
	tb.Helper()
	return oldSnapshot(tb, f, 2, 2)
}

// v3Snapshot returns the snapshot that a build with format version 3
// wrote for f, which must hold no private tracker state.
func v3Snapshot(tb testing.TB, f *FSM) []byte {
	tb.Helper()
	return oldSnapshot(tb, f, 3, 0)
}

func oldSnapshot(tb testing.TB, f *FSM, version byte, cut int) []byte {
	tb.Helper()
	b := snapshotBytes(tb, f)
	if b[len(snapshotMagic)] != SnapshotVersion {
		tb.Fatalf("snapshot version %d, want %d", b[len(snapshotMagic)], SnapshotVersion)
	}
	// Version 3 is version 5 without the private section (seven bytes
	// when empty), and so is version 4 when no record keeps an earlier
	// epoch.
	cut += 7
	body := bytes.Clone(b[:len(b)-32-cut])
	if !bytes.Equal(b[len(body):len(b)-32], make([]byte, cut)) {
		tb.Fatalf("state has content version %d cannot hold: % x", version, b[len(body):len(b)-32])
	}
	body[len(snapshotMagic)] = version
	seal := sealOf(uint64(version), f.st.applied, f.st.digest)
	return append(body, seal[:]...)
}

// A snapshot written by format version 2 (no deny list) still restores,
// to the same index and digest, with an empty deny list; the deny list
// survives a snapshot of the current format.
func TestRestoreVersion2SnapshotAndTheDenyList(t *testing.T) {
	f := v2SwarmState(t)
	old := v2Snapshot(t, f)
	g := New()
	if err := restore(g, old); err != nil {
		t.Fatalf("Restore(version 2): %v", err)
	}
	if g.Digest() != f.Digest() || len(g.Revocations()) != 0 {
		t.Fatalf("restored version 2: digest %x, %d revocations; want %x, 0", g.Digest(), len(g.Revocations()), f.Digest())
	}
	n := &node{tb: t, f: g, index: 1000}
	n.mustApply(RevokeCerts{Serials: []string{"1f", "a", "100"}, Time: 7})
	n.mustApply(UnrevokeCerts{Serials: []string{"a", "b"}})
	checkDigest(t, g)
	h := New()
	if err := restore(h, snapshotBytes(t, g)); err != nil {
		t.Fatal(err)
	}
	want := []Revocation{{"1f", 7}, {"100", 7}}
	if got := h.Revocations(); !slices.Equal(got, want) {
		t.Fatalf("deny list after a snapshot round trip: got %v, want %v", got, want)
	}
	if h.Digest() != g.Digest() || !h.Revoked("100") || h.Revoked("a") {
		t.Fatal("the restored deny list differs")
	}
}

// A snapshot written by the previous format (no swarms) still restores, to
// the same index and digest, and the restored FSM then tracks swarms.
func TestRestoreVersion1Snapshot(t *testing.T) {
	f := smallState(t)
	old := v1Snapshot(t, f)
	g := New()
	if err := restore(g, old); err != nil {
		t.Fatalf("Restore(version 1): %v", err)
	}
	universe := []FileID{fid(1), fid(2), fid(3)}
	diffViews(t, viewOf(g, universe), viewOf(f, universe))
	n := &node{tb: t, f: g, index: 100}
	n.mustApply(ann(spA, "10.0.0.1", SwarmUpdate, false, 1))
	checkDigest(t, g)
	// A changed version byte no longer matches the seal.
	bad := bytes.Clone(old)
	bad[len(snapshotMagic)] = 2
	if err := restore(New(), bad); !errors.Is(err, ErrCorruptSnapshot) {
		t.Fatalf("version 1 body labelled 2: got %v, want ErrCorruptSnapshot", err)
	}
}
