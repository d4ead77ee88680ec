package fsm

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
)

var (
	ihX = InfoHash{0x11, 1}
	ihY = InfoHash{0x22, 2}
	spA = SwarmPeerID{'A'}
	spB = SwarmPeerID{'B'}
)

func ip(s string) [16]byte { return netip.MustParseAddr(s).As16() }

func ann(p SwarmPeerID, addr string, ev SwarmEvent, seeder bool, t int64) Announce {
	return Announce{InfoHash: ihX, Peer: p, IP: ip(addr), Port: 6881, Event: ev, Seeder: seeder, Time: t}
}

func keyed(a Announce, key uint32) Announce { a.Key, a.HasKey = key, true; return a }

type swarmWant struct {
	peers                            map[SwarmPeerID]SwarmPeerInfo
	complete, incomplete, downloaded int
}

func wantSwarm(t *testing.T, f *FSM, ih InfoHash, want swarmWant) {
	t.Helper()
	c, i, d := f.Scrape(ih)
	if c != want.complete || i != want.incomplete || d != want.downloaded {
		t.Fatalf("Scrape: got complete=%d incomplete=%d downloaded=%d, want %d %d %d", c, i, d, want.complete, want.incomplete, want.downloaded)
	}
	got, _, _ := f.SwarmPeers(ih, SwarmPeerID{}, 1000, false, 1)
	if len(got) != len(want.peers) {
		t.Fatalf("SwarmPeers: got %d peers %+v, want %d", len(got), got, len(want.peers))
	}
	for _, p := range got {
		if w, ok := want.peers[p.Peer]; !ok || w != p {
			t.Fatalf("SwarmPeers: got %+v, want %+v", p, w)
		}
		if one, ok := f.SwarmPeer(ih, p.Peer); !ok || one != p {
			t.Fatalf("SwarmPeer(%s): got %+v %v, want %+v", p.Peer, one, ok, p)
		}
	}
}

func info(p SwarmPeerID, addr string, seeder bool) SwarmPeerInfo {
	return SwarmPeerInfo{Peer: p, IP: ip(addr), Port: 6881, Seeder: seeder}
}

func withKey(i SwarmPeerInfo, k uint32) SwarmPeerInfo { i.Key, i.HasKey = k, true; return i }

func TestAnnounceRules(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name: "update inserts, a second update changes port and seeder state",
			steps: []step{
				{cmd: ann(spA, "10.0.0.1", SwarmUpdate, false, 1)},
				{cmd: func() Announce { a := ann(spA, "10.0.0.1", SwarmUpdate, true, 2); a.Port = 7000; return a }()},
			},
			check: func(t *testing.T, f *FSM) {
				i := info(spA, "10.0.0.1", true)
				i.Port = 7000
				wantSwarm(t, f, ihX, swarmWant{peers: map[SwarmPeerID]SwarmPeerInfo{spA: i}, complete: 1})
			},
		},
		{
			name: "a stopped from another address removes nothing: a peer_id names a record only with its address",
			steps: []step{
				{cmd: ann(spA, "10.0.0.1", SwarmUpdate, false, 1)},
				{cmd: ann(spA, "10.0.0.2", SwarmStopped, false, 2)},
			},
			check: func(t *testing.T, f *FSM) {
				wantSwarm(t, f, ihX, swarmWant{peers: map[SwarmPeerID]SwarmPeerInfo{spA: info(spA, "10.0.0.1", false)}, incomplete: 1})
			},
		},
		{
			name: "the same peer_id from another address without the key is another record, not a lock",
			steps: []step{
				{cmd: keyed(ann(spA, "10.0.0.1", SwarmUpdate, false, 1), 7)},
				{cmd: ann(spA, "10.0.0.2", SwarmUpdate, false, 2)},
				{cmd: keyed(ann(spA, "10.0.0.3", SwarmUpdate, true, 3), 8)},
			},
			check: func(t *testing.T, f *FSM) {
				if _, c, inc := f.SwarmPeers(ihX, SwarmPeerID{'W'}, 10, false, 1); c != 1 || inc != 2 {
					t.Fatalf("got %d seeders %d leechers, want 1 and 2", c, inc)
				}
				for _, a := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
					if _, ok := f.SwarmPeerAt(ihX, spA, ip(a), false, 0); !ok {
						t.Errorf("no record of A at %s", a)
					}
				}
				if got, _ := f.SwarmPeerAt(ihX, spA, ip("10.0.0.1"), false, 0); got != withKey(info(spA, "10.0.0.1", false), 7) {
					t.Errorf("the first record changed: %+v", got)
				}
			},
		},
		{
			name: "the key proves identity across an address change",
			steps: []step{
				{cmd: keyed(ann(spA, "10.0.0.1", SwarmUpdate, false, 1), 7)},
				{cmd: keyed(ann(spA, "2001:db8::1", SwarmUpdate, false, 2), 7)},
				{cmd: keyed(ann(spA, "10.0.0.3", SwarmStopped, false, 3), 7)},
			},
			check: func(t *testing.T, f *FSM) {
				wantSwarm(t, f, ihX, swarmWant{})
				if s, n := f.SwarmStats(); s != 0 || n != 0 {
					t.Fatalf("SwarmStats: got %d swarms %d records, want none", s, n)
				}
			},
		},
		{
			name: "a key is stored by the first announce that has one, and never replaced",
			steps: []step{
				{cmd: ann(spA, "10.0.0.1", SwarmUpdate, false, 1)},
				{cmd: keyed(ann(spA, "10.0.0.1", SwarmUpdate, false, 2), 5)},
				{cmd: keyed(ann(spA, "10.0.0.1", SwarmUpdate, false, 3), 6)},
				{cmd: keyed(ann(spA, "10.0.0.9", SwarmStopped, false, 4), 6)}, // not the stored key: nothing to stop
			},
			check: func(t *testing.T, f *FSM) {
				wantSwarm(t, f, ihX, swarmWant{peers: map[SwarmPeerID]SwarmPeerInfo{spA: withKey(info(spA, "10.0.0.1", false), 5)}, incomplete: 1})
			},
		},
		{
			name: "completed counts once, only for a record that was downloading",
			steps: []step{
				{cmd: ann(spA, "10.0.0.1", SwarmUpdate, false, 1)},
				{cmd: ann(spA, "10.0.0.1", SwarmCompleted, false, 2)},
				{cmd: ann(spA, "10.0.0.1", SwarmCompleted, true, 3)}, // a retry
				{cmd: ann(spA, "10.0.0.1", SwarmUpdate, false, 4)},   // leeching again
				{cmd: ann(spA, "10.0.0.1", SwarmCompleted, true, 5)}, // the same record: not again
				{cmd: ann(spB, "10.0.0.2", SwarmCompleted, true, 6)}, // absent before: not counted
			},
			check: func(t *testing.T, f *FSM) {
				a, b := info(spA, "10.0.0.1", true), info(spB, "10.0.0.2", true)
				wantSwarm(t, f, ihX, swarmWant{peers: map[SwarmPeerID]SwarmPeerInfo{spA: a, spB: b}, complete: 2, downloaded: 1})
			},
		},
		{
			name: "completed from a seeder is not counted; downloaded outlives the records",
			steps: []step{
				{cmd: ann(spA, "10.0.0.1", SwarmUpdate, true, 1)},
				{cmd: ann(spA, "10.0.0.1", SwarmCompleted, true, 2)},
				{cmd: ann(spB, "10.0.0.2", SwarmUpdate, false, 3)},
				{cmd: ann(spB, "10.0.0.2", SwarmCompleted, true, 4)},
				{cmd: ann(spA, "10.0.0.1", SwarmStopped, false, 5)},
				{cmd: ann(spB, "10.0.0.2", SwarmStopped, false, 6)},
			},
			check: func(t *testing.T, f *FSM) {
				wantSwarm(t, f, ihX, swarmWant{downloaded: 1})
				if s, n := f.SwarmStats(); s != 1 || n != 0 {
					t.Fatalf("SwarmStats: got %d swarms %d records, want 1 swarm, 0 records", s, n)
				}
			},
		},
		{
			name: "stopped for an absent record is a no-op",
			steps: []step{
				{cmd: ann(spA, "10.0.0.1", SwarmStopped, false, 1)},
				{cmd: func() Announce { a := ann(spA, "10.0.0.1", SwarmStopped, false, 1); a.Port = 0; return a }()},
			},
			check: func(t *testing.T, f *FSM) {
				if s, n := f.SwarmStats(); s != 0 || n != 0 {
					t.Fatalf("SwarmStats: got %d swarms %d records, want none", s, n)
				}
			},
		},
		{
			name: "a seeder turning leecher again moves partitions",
			steps: []step{
				{cmd: ann(spA, "10.0.0.1", SwarmUpdate, true, 1)},
				{cmd: ann(spB, "10.0.0.2", SwarmUpdate, true, 1)},
				{cmd: ann(spA, "10.0.0.1", SwarmUpdate, false, 2)},
			},
			check: func(t *testing.T, f *FSM) {
				wantSwarm(t, f, ihX, swarmWant{peers: map[SwarmPeerID]SwarmPeerInfo{
					spA: info(spA, "10.0.0.1", false), spB: info(spB, "10.0.0.2", true),
				}, complete: 1, incomplete: 1})
			},
		},
	})
}

func TestExpireSwarmPeers(t *testing.T) {
	n := newNode(t)
	n.mustApply(ann(spA, "10.0.0.1", SwarmUpdate, false, 100))
	n.mustApply(ann(spB, "10.0.0.2", SwarmUpdate, false, 100))
	n.mustApply(ann(spB, "10.0.0.2", SwarmUpdate, true, 300)) // changed after the decision below
	r := n.mustApply(ExpireSwarmPeers{Time: 200, Entries: []SwarmRef{
		{ihX, spA, [16]byte{}}, {ihX, spA, [16]byte{}}, {ihX, spB, [16]byte{}}, {ihY, spA, [16]byte{}}, {ihX, SwarmPeerID{'Z'}, [16]byte{}},
	}})
	if r.ExpiredSwarmPeers != 1 {
		t.Fatalf("ExpiredSwarmPeers: got %d, want 1", r.ExpiredSwarmPeers)
	}
	wantSwarm(t, n.f, ihX, swarmWant{peers: map[SwarmPeerID]SwarmPeerInfo{spB: info(spB, "10.0.0.2", true)}, complete: 1})
	// The changed time is exactly Time: expired (only later changes survive).
	if r := n.mustApply(ExpireSwarmPeers{Time: 300, Entries: []SwarmRef{{ihX, spB, [16]byte{}}}}); r.ExpiredSwarmPeers != 1 {
		t.Fatalf("ExpiredSwarmPeers at the changed time: got %d, want 1", r.ExpiredSwarmPeers)
	}
	if s, p := n.f.SwarmStats(); s != 0 || p != 0 {
		t.Fatalf("SwarmStats: got %d, %d; want the empty swarm dropped", s, p)
	}
	checkDigest(t, n.f)
}

func TestTrackerPolicy(t *testing.T) {
	n := newNode(t)
	if !n.f.TrackerAllowed(ihX) {
		t.Fatal("a new FSM does not track every hash")
	}
	n.mustApply(ann(spA, "10.0.0.1", SwarmCompleted, true, 1))
	n.mustApply(Announce{InfoHash: ihY, Peer: spA, IP: ip("10.0.0.1"), Port: 1, Time: 1})

	// Deny drops the swarm, its records and its downloaded count.
	n.mustApply(TrackerPolicy{Deny: []InfoHash{ihX}, RequestID: 1})
	if c, i, d := n.f.Scrape(ihX); c+i+d != 0 || n.f.TrackerAllowed(ihX) {
		t.Fatalf("after deny: scrape %d %d %d, allowed %v; want zeros and not allowed", c, i, d, n.f.TrackerAllowed(ihX))
	}
	if r := n.apply(ann(spA, "10.0.0.1", SwarmUpdate, false, 2)); !errors.Is(r.Err, ErrNotTracked) {
		t.Fatalf("announce to a denied hash: got %v, want ErrNotTracked", r.Err)
	}
	if got := n.f.SwarmEntriesFrom(ip("10.0.0.1")); got != 1 {
		t.Fatalf("SwarmEntriesFrom after deny: got %d, want 1", got)
	}

	// Allowlist mode: swarms not allowed go, and only allowed hashes are tracked.
	ihZ := InfoHash{0x33}
	n.mustApply(TrackerPolicy{SetMode: true, Mode: TrackerAllowlist, Allow: []InfoHash{ihZ}, RequestID: 2})
	if _, p := n.f.SwarmStats(); p != 0 {
		t.Fatalf("after switching to allowlist: %d records, want 0", p)
	}
	if r := n.apply(Announce{InfoHash: ihY, Peer: spA, IP: ip("10.0.0.1"), Port: 1, Time: 3}); !errors.Is(r.Err, ErrNotTracked) {
		t.Fatalf("allowlist, hash not allowed: got %v, want ErrNotTracked", r.Err)
	}
	n.mustApply(Announce{InfoHash: ihZ, Peer: spA, IP: ip("10.0.0.1"), Port: 1, Time: 3})
	// Allowing a denied hash lifts the denial.
	n.mustApply(TrackerPolicy{Allow: []InfoHash{ihX}, RequestID: 3})
	n.mustApply(ann(spA, "10.0.0.1", SwarmUpdate, false, 4))
	mode, allow, deny := n.f.TrackerPolicyState()
	if mode != TrackerAllowlist || !reflect.DeepEqual(allow, []InfoHash{ihX, ihZ}) || len(deny) != 0 {
		t.Fatalf("TrackerPolicyState: got %v %v %v", mode, allow, deny)
	}
	// A retried policy request changes nothing, even after a later change.
	n.mustApply(TrackerPolicy{Deny: []InfoHash{ihZ}, RequestID: 4})
	before := n.f.Digest()
	if r := n.apply(TrackerPolicy{Allow: []InfoHash{ihZ}, RequestID: 3}); !r.Duplicate || r.Err != nil {
		t.Fatalf("retry: got %+v, want Duplicate", r)
	}
	if n.f.Digest() != before || n.f.TrackerAllowed(ihZ) {
		t.Fatal("a retried policy request changed the state")
	}
	// Back to open: every hash but the denied ones.
	n.mustApply(TrackerPolicy{SetMode: true, Mode: TrackerOpen, RequestID: 5})
	if !n.f.TrackerAllowed(ihY) || n.f.TrackerAllowed(ihZ) {
		t.Fatal("open mode: want ihY tracked and the denied ihZ not")
	}
	checkDigest(t, n.f)
}

func TestSwarmCommandValidation(t *testing.T) {
	good := ann(spA, "10.0.0.1", SwarmUpdate, false, 1)
	for _, tc := range []struct {
		name string
		cmd  Command
	}{
		{"zero info-hash", func() Announce { a := good; a.InfoHash = InfoHash{}; return a }()},
		{"zero peer", func() Announce { a := good; a.Peer = SwarmPeerID{}; return a }()},
		{"port 0", func() Announce { a := good; a.Port = 0; return a }()},
		{"unknown event", func() Announce { a := good; a.Event = 2; return a }()},
		{"unspecified address", func() Announce { a := good; a.IP = ip("0.0.0.0"); return a }()},
		{"multicast v6", func() Announce { a := good; a.IP = ip("ff02::1"); return a }()},
		{"multicast v4", func() Announce { a := good; a.IP = ip("224.0.0.1"); return a }()},
		{"key without HasKey", func() Announce { a := good; a.Key = 3; return a }()},
		{"expire zero hash", ExpireSwarmPeers{Entries: []SwarmRef{{Peer: spA}}}},
		{"expire too many", ExpireSwarmPeers{Entries: make([]SwarmRef, MaxSwarmRefsPerExpire+1)}},
		{"policy zero request", TrackerPolicy{}},
		{"policy bad mode", TrackerPolicy{Mode: 3, RequestID: 1}},
		{"policy zero hash", TrackerPolicy{Allow: []InfoHash{{}}, RequestID: 1}},
		{"policy allow and deny", TrackerPolicy{Allow: []InfoHash{ihX}, Deny: []InfoHash{ihX}, RequestID: 1}},
		{"policy too many", TrackerPolicy{Deny: make([]InfoHash, MaxPolicyHashes+1), RequestID: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Encode(tc.cmd); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Encode: got %v, want ErrInvalid", err)
			}
			if _, err := Decode(encodeUnchecked(t, tc.cmd)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode: got %v, want ErrInvalid", err)
			}
		})
	}
	// Stopped may carry port 0.
	a := good
	a.Event, a.Port = SwarmStopped, 0
	if _, err := Encode(a); err != nil {
		t.Fatalf("stopped with port 0: %v", err)
	}
}

// Quotas are hierarchical: IPv4 addresses count one by one, IPv6 per
// address, per /64 and per /48.
func TestSwarmQuotaUse(t *testing.T) {
	n := newNode(t)
	for i, a := range []string{"2001:db8:1:2::1", "2001:db8:1:2::ffff", "2001:db8:1:3::1", "2001:db8:1:3::1", "10.0.0.1", "10.0.0.2"} {
		n.mustApply(Announce{InfoHash: ihX, Peer: SwarmPeerID{byte(i + 1)}, IP: ip(a), Port: 1, Time: 1})
	}
	for a, want := range map[string][3]int{
		"2001:db8:1:2::1": {1, 2, 4}, "2001:db8:1:3::1": {2, 2, 4}, "2001:db8:1:3::": {0, 2, 4},
		"2001:db8:2::": {0, 0, 0}, "10.0.0.1": {1, 0, 0}, "10.0.0.3": {0, 0, 0}, "::ffff:10.0.0.2": {1, 0, 0},
	} {
		if a1, a64, a48 := n.f.SwarmQuotaUse(ip(a)); [3]int{a1, a64, a48} != want {
			t.Errorf("SwarmQuotaUse(%s): got %d %d %d, want %v", a, a1, a64, a48, want)
		}
	}
}

// SwarmPeers never returns the requester, returns at most want distinct
// records, gives a seeder the leechers first, and gives a leecher a mix.
func TestSwarmPeersSelection(t *testing.T) {
	n := newNode(t)
	const total = 1000
	for i := range total {
		n.mustApply(Announce{InfoHash: ihX, Peer: memPeer(i), IP: memIP(i), Port: 1, Seeder: i%4 == 0, Time: 1})
	}
	me := memPeer(1)
	for _, rnd := range []uint64{0, 1, 12345, 1 << 63, 0xdeadbeefcafe} {
		for _, want := range []int{1, 50, 200, total, total + 10} {
			for _, forSeeder := range []bool{false, true} {
				got, c, i := n.f.SwarmPeers(ihX, me, want, forSeeder, rnd)
				if c != total/4 || i != total-total/4 {
					t.Fatalf("counts: got %d/%d", c, i)
				}
				if len(got) != min(want, total-1) {
					t.Fatalf("want=%d: got %d peers", want, len(got))
				}
				seen := map[SwarmPeerID]bool{}
				seeders := 0
				for k, p := range got {
					if p.Peer == me || seen[p.Peer] {
						t.Fatalf("want=%d rnd=%d: peer %s repeated or the requester", want, rnd, p.Peer)
					}
					seen[p.Peer] = true
					if p.Seeder {
						seeders++
					} else if forSeeder && k > 0 && got[k-1].Seeder {
						t.Fatalf("forSeeder: a leecher after a seeder at %d", k)
					}
				}
				if forSeeder && want <= i-1 && seeders != 0 {
					t.Fatalf("forSeeder, want=%d: %d seeders though leechers suffice", want, seeders)
				}
				if !forSeeder && want == 200 && (seeders < 20 || seeders > 80) {
					t.Fatalf("leecher, want=200: %d seeders, want a mix near 50", seeders)
				}
			}
		}
	}
	if a, _, _ := n.f.SwarmPeers(ihX, me, 50, false, 1); slices.Equal(a, func() []SwarmPeerInfo { b, _, _ := n.f.SwarmPeers(ihX, me, 50, false, 2); return b }()) {
		t.Fatal("different rnd gave the same peer list")
	}
}

func TestIPTableMatchesMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var tb ipTable
	model := map[ipKey]uint32{}
	for step := range 200_000 {
		k := ipKey{r.Uint64N(3) << 60, r.Uint64N(1000) * 0x10001}
		if r.IntN(2) == 0 || model[k] == 0 {
			tb.add(k, 1)
			model[k]++
		} else {
			tb.add(k, -1)
			if model[k]--; model[k] == 0 {
				delete(model, k)
			}
		}
		if step%997 == 0 {
			if tb.n != len(model) {
				t.Fatalf("step %d: %d keys, model %d", step, tb.n, len(model))
			}
			for k, c := range model {
				if got := tb.get(k); got != c {
					t.Fatalf("step %d: key %d count %d, want %d", step, k, got, c)
				}
			}
		}
	}
	for k, c := range model {
		for range c {
			tb.add(k, -1)
		}
	}
	if tb.n != 0 || len(tb.keys) != ipTableMin {
		t.Fatalf("emptied table: %d keys in %d slots", tb.n, len(tb.keys))
	}
}

// TouchSwarmPeer and SilentSwarmPeers: soft liveness that is neither in
// the digest nor in the snapshot.
func TestSwarmSoftLiveness(t *testing.T) {
	n := newNode(t)
	const sec = int64(1e9)
	n.mustApply(ann(spA, "10.0.0.1", SwarmUpdate, false, 100*sec))
	n.mustApply(ann(spB, "10.0.0.2", SwarmUpdate, false, 100*sec))
	d := n.f.Digest()
	if !n.f.TouchSwarmPeer(ihX, spA, ip("10.0.0.1"), 200*sec+1) || n.f.TouchSwarmPeer(ihY, spA, ip("10.0.0.1"), 1) {
		t.Fatal("TouchSwarmPeer: want true for a record, false for none")
	}
	if n.f.Digest() != d {
		t.Fatal("TouchSwarmPeer changed the digest")
	}
	if got := n.f.SilentSwarmPeers(100*sec, 10); len(got) != 0 {
		t.Fatalf("silent before 100 s: got %v, want none", got)
	}
	if got := n.f.SilentSwarmPeers(150*sec, 10); !reflect.DeepEqual(got, []SwarmRef{{ihX, spB, ip("10.0.0.2")}}) {
		t.Fatalf("silent before 150 s: got %v, want B only", got)
	}
	// Never early: touched at 200 s + 1 ns, not silent before 201 s.
	if got := n.f.SilentSwarmPeers(201*sec, 10); len(got) != 1 {
		t.Fatalf("silent before 201 s: got %v, want B only", got)
	}
	if got := n.f.SilentSwarmPeers(300*sec, 1); len(got) != 1 {
		t.Fatalf("max=1: got %d refs", len(got))
	}
	// After a restore seen is the changed time again, and the snapshot is
	// the same whatever seen said.
	b := snapshotBytes(t, n.f)
	g := New()
	if err := restore(g, b); err != nil {
		t.Fatal(err)
	}
	if got := g.SilentSwarmPeers(150*sec, 10); len(got) != 2 {
		t.Fatalf("restored: silent before 150 s: got %v, want both", got)
	}
}

// Touches and soft-state reads run concurrently with Apply, Snapshot and
// Persist without data races (run with -race).
func TestSwarmTouchConcurrentWithApplyAndPersist(t *testing.T) {
	f := New()
	n := &node{tb: t, f: f}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ih := memHash(i % 8)
				f.TouchSwarmPeer(ih, memPeer(i%200), memIP(i%200), int64(i)*1e9)
				if w == 0 {
					f.SilentSwarmPeers(int64(i)*1e9, 5)
				} else {
					f.SwarmPeers(ih, memPeer(i), 10, i%2 == 0, uint64(i))
					f.Scrape(ih)
				}
			}
		})
	}
	var persisted sync.WaitGroup
	for i := range 3000 {
		a := Announce{InfoHash: memHash(i % 8), Peer: memPeer(i % 200), IP: memIP(i % 200), Port: 1, Seeder: i%3 == 0, Time: int64(i)}
		if i%7 == 0 {
			a.Event = SwarmStopped
		}
		n.apply(a)
		if i%500 == 250 {
			persistInBackground(t, f, &persisted)
		}
	}
	close(stop)
	wg.Wait()
	persisted.Wait()
	checkDigest(t, f)
}

func TestSwarmErrorsSayWhatToDo(t *testing.T) {
	n := newNode(t)
	n.mustApply(TrackerPolicy{Deny: []InfoHash{ihY}, RequestID: 1})
	r := n.apply(Announce{InfoHash: ihY, Peer: spA, IP: ip("10.0.0.1"), Port: 1})
	if msg := fmt.Sprint(r.Err); !errors.Is(r.Err, ErrNotTracked) || !strings.Contains(msg, ihY.String()) || !strings.Contains(msg, "allow") {
		t.Fatalf("got %q", msg)
	}
}

// A large, indexed swarm under random churn agrees with a plain map model
// after every step: records, partition counts, per-address counts, digest;
// and it survives snapshots taken in the middle, copy-on-write included.
func TestLargeSwarmMatchesModel(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	n := newNode(t)
	type rec struct {
		ip     [16]byte
		seeder bool
	}
	model := map[SwarmPeerID]rec{}
	const peers = 300
	var snaps []raft.FSMSnapshot
	var digests []string
	for step := range 6000 {
		i := r.IntN(peers)
		p, addr := memPeer(i), memIP(i%17)
		var a Announce
		switch k := r.IntN(10); {
		case k < 6:
			a = Announce{InfoHash: ihX, Peer: p, IP: addr, Port: 1, Seeder: r.IntN(2) == 0, Time: int64(step)}
			if k == 0 {
				a.Event, a.Seeder = SwarmCompleted, true
			}
			model[p] = rec{addr, a.Seeder}
		default:
			a = Announce{InfoHash: ihX, Peer: p, IP: addr, Event: SwarmStopped, Time: int64(step)}
			delete(model, p)
		}
		n.mustApply(a)
		if step%1000 == 500 {
			s, _ := n.f.Snapshot()
			snaps = append(snaps, s)
			digests = append(digests, n.f.Digest())
		}
		if step%97 != 0 {
			continue
		}
		checkDigest(t, n.f)
		seeders := 0
		perIP := map[[16]byte]int{}
		for id, m := range model {
			got, ok := n.f.SwarmPeer(ihX, id)
			if !ok || got.IP != m.ip || got.Seeder != m.seeder {
				t.Fatalf("step %d: SwarmPeer(%s) = %+v %v, want %+v", step, id, got, ok, m)
			}
			if m.seeder {
				seeders++
			}
			perIP[m.ip]++
		}
		if c, l, _ := n.f.Scrape(ihX); c != seeders || l != len(model)-seeders {
			t.Fatalf("step %d: Scrape %d/%d, want %d/%d", step, c, l, seeders, len(model)-seeders)
		}
		for j := range 17 {
			if got := n.f.SwarmEntriesFrom(memIP(j)); got != perIP[memIP(j)] {
				t.Fatalf("step %d: SwarmEntriesFrom(%d) = %d, want %d", step, j, got, perIP[memIP(j)])
			}
		}
		all, _, _ := n.f.SwarmPeers(ihX, SwarmPeerID{}, peers, false, uint64(step))
		if len(all) != len(model) {
			t.Fatalf("step %d: SwarmPeers returned %d of %d", step, len(all), len(model))
		}
	}
	for k, s := range snaps {
		g := New()
		if err := restore(g, persist(t, s)); err != nil {
			t.Fatalf("restore a snapshot of a large swarm: %v", err)
		}
		checkDigest(t, g)
		if g.Digest() != digests[k] {
			t.Fatalf("snapshot %d: restored digest %s, at Snapshot() time %s", k, g.Digest(), digests[k])
		}
	}
}
