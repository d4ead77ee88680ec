package fsm

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
)

// cmdGen produces random command sequences over a small ID space, so that
// re-joins, duplicates, conflicts, wrong tokens and orphaned files are
// frequent.
type cmdGen struct {
	tb     testing.TB
	r      *rand.Rand
	clock  int64
	connID int64 // Time of the last SetConnIDSecret generated
}

const (
	genPeers = 20
	genFiles = 20
	genReqs  = 40
)

var genNames = []string{"Movie.mp4", "movie talk", "notes", "Straße", "a", "X Y Z", "E e", "ßtraße"}

func genPeer(i int) PeerID { return PeerID(fmt.Sprintf("peer-%d", i)) }

func genFileUniverse() []FileID {
	ids := make([]FileID, genFiles)
	for i := range ids {
		ids[i] = fid(i)
	}
	return ids
}

func newCmdGen(tb testing.TB, seed uint64) *cmdGen {
	return &cmdGen{tb: tb, r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (g *cmdGen) auth() (PeerID, Token, uint64) {
	i := g.r.IntN(genPeers)
	id := genPeer(i)
	t := tok(string(id))
	if g.r.IntN(10) == 0 {
		t = tok("intruder")
	}
	return id, t, 1 + g.r.Uint64N(genReqs)
}

func (g *cmdGen) fileMeta() FileMeta {
	i := g.r.IntN(genFiles)
	m := meta(i, genNames[g.r.IntN(len(genNames))])
	if g.r.IntN(20) == 0 {
		m.Size++ // conflicts with the usual size
	}
	return m
}

// Swarm commands range over a few hashes, peers and addresses, so that
// address changes with and without keys, completed retries, expiry races
// and policy drops are frequent.
const (
	genHashes     = 6
	genSwarmPeers = 40
)

func genHash(i int) InfoHash { return InfoHash{byte(i*37 + 5), byte(i)} }

func genSwarmPeer(i int) SwarmPeerID { return SwarmPeerID{0x2d, 0x47, byte(i)} }

// The private announces' records: a few peers in a few swarms.
const genPrivPeers, genPrivHashes = 4, 3

var genSwarmIPs = []string{"10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2", "2001:db8:0:1::9"}

func (g *cmdGen) swarmCommand() Command {
	switch k := g.r.IntN(100); {
	case k < 55:
		return g.announce()
	case k < 70:
		c := AnnounceBatch{Time: g.clock}
		if g.r.IntN(2) == 0 {
			c.Limits = SwarmLimits{MaxPeers: uint32(g.r.IntN(60)), MaxSwarms: uint32(g.r.IntN(6)), PerAddr: uint32(g.r.IntN(20)), Per64: uint32(g.r.IntN(20)), Per48: uint32(g.r.IntN(30))}
		}
		for range 1 + g.r.IntN(5) {
			a := g.announce()
			a.Time = 0
			c.Announces = append(c.Announces, a)
		}
		return c
	case k < 85:
		refs := make([]SwarmRef, g.r.IntN(8))
		for i := range refs {
			refs[i] = SwarmRef{InfoHash: genHash(g.r.IntN(genHashes)), Peer: genSwarmPeer(g.r.IntN(genSwarmPeers))}
			if g.r.IntN(2) == 0 {
				refs[i].IP = ip(genSwarmIPs[g.r.IntN(len(genSwarmIPs))])
			}
		}
		c := ExpireSwarmPeers{Entries: refs, Time: g.clock - int64(g.r.IntN(30))}
		for range g.r.IntN(3) {
			c.Swarms = append(c.Swarms, genHash(g.r.IntN(genHashes)))
		}
		return c
	case k < 88:
		c := SetConnIDSecret{Secret: make([]byte, ConnIDSecretSize), Time: g.clock + 1}
		for i := range c.Secret {
			c.Secret[i] = byte(g.r.Uint32())
		}
		if g.r.IntN(4) > 0 {
			c.After = g.connID
		}
		if c.Time <= c.After {
			c.Time = c.After + 1
		}
		g.connID = c.Time
		return c
	case k < 91:
		return g.policy()
	default:
		return g.privateCommand()
	}
}

// privateCommand returns a random command of the private tracker: members
// (three names, passkeys from a small set so that rotations collide),
// factors, client prefix lists, and private announce batches whose
// passkeys name members, former members or nobody, with counters that
// grow, reset and arrive late.
func (g *cmdGen) privateCommand() Command {
	req := 1 + g.r.Uint64N(genReqs)
	switch k := g.r.IntN(100); {
	case k < 15:
		c := TrackerMember{Op: MemberOp(1 + g.r.IntN(3)), Name: []string{"alice", "bob", "carol"}[g.r.IntN(3)], RequestID: req, Time: g.clock}
		if c.Op != MemberRevoke {
			c.Passkey = pkey(byte(1 + g.r.IntN(4)))
		}
		return c
	case k < 22:
		return TorrentFactors{InfoHash: genHash(g.r.IntN(genHashes)), UploadPct: uint32(g.r.IntN(3) * 100), DownloadPct: uint32(g.r.IntN(2) * 100), RequestID: req}
	case k < 27:
		prefixes := []string{"-G", "-G\x01", "-G\x02", "-X"}
		c := ClientPrefixes{RequestID: req}
		for _, x := range prefixes {
			switch g.r.IntN(4) {
			case 0:
				c.Allow = append(c.Allow, x)
			case 1:
				c.Deny = append(c.Deny, x)
			}
		}
		return c
	default:
		c := PrivateAnnounceBatch{Time: g.clock}
		if g.r.IntN(3) == 0 {
			c.MaxRate = uint64(1 + g.r.IntN(100))
		}
		for range 1 + g.r.IntN(5) {
			a := PrivateAnnounce{Announce: g.announce(), Uploaded: uint64(g.r.IntN(500)), Downloaded: uint64(g.r.IntN(500))}
			// Few records, so that reports of one record meet: the
			// first sets its baseline, the next ones credit it.
			p := g.r.IntN(genPrivPeers)
			a.Time, a.InfoHash, a.Peer, a.IP = 0, genHash(g.r.IntN(genPrivHashes)), genSwarmPeer(p), ip(genSwarmIPs[p%len(genSwarmIPs)])
			switch g.r.IntN(5) {
			case 0:
				a.Event = SwarmStarted
			case 1, 2:
				a.Event = SwarmCredit
			}
			if a.Event != SwarmStopped && a.Port == 0 {
				a.Port = 6881 // a stop's zero port: only a stop may have it
			}
			a.Passkey = [PasskeySize]byte(pkey(byte(1 + g.r.IntN(5))))
			a.At = g.clock - int64(g.r.IntN(20))
			c.Announces = append(c.Announces, a)
		}
		return c
	}
}

// announce returns a random Announce.
func (g *cmdGen) announce() Announce {
	p := g.r.IntN(genSwarmPeers)
	// A peer mostly announces from "its" address, sometimes from another.
	addr := genSwarmIPs[p%len(genSwarmIPs)]
	if g.r.IntN(6) == 0 {
		addr = genSwarmIPs[g.r.IntN(len(genSwarmIPs))]
	}
	a := Announce{
		InfoHash: genHash(g.r.IntN(genHashes)), Peer: genSwarmPeer(p), IP: ip(addr),
		Port: uint16(6881 + g.r.IntN(3)), Seeder: g.r.IntN(3) == 0, Time: g.clock,
	}
	if g.r.IntN(3) > 0 {
		a.HasKey, a.Key = true, uint32(p%7+g.r.IntN(2)*g.r.IntN(2))
	}
	switch e := g.r.IntN(10); {
	case e < 2:
		a.Event = SwarmCompleted
	case e < 4:
		a.Event = SwarmStopped
		if g.r.IntN(2) == 0 {
			a.Port = 0
		}
	}
	return a
}

// policy returns a random TrackerPolicy.
func (g *cmdGen) policy() TrackerPolicy {
	c := TrackerPolicy{RequestID: 1 + g.r.Uint64N(genReqs)}
	if g.r.IntN(3) == 0 {
		c.SetMode = true
		c.Mode = TrackerMode(g.r.IntN(3))
	} else if g.r.IntN(2) == 0 {
		c.Mode = TrackerMode(g.r.IntN(2))
	}
	used := map[InfoHash]bool{}
	for range g.r.IntN(3) {
		h := genHash(g.r.IntN(genHashes))
		if !used[h] {
			used[h] = true
			c.Allow = append(c.Allow, h)
		}
	}
	if g.r.IntN(3) == 0 {
		if h := genHash(g.r.IntN(genHashes)); !used[h] {
			c.Deny = append(c.Deny, h)
		}
	}
	return c
}

// command returns a random encoded command that is not a Batch.
func (g *cmdGen) command() []byte {
	g.clock += int64(g.r.IntN(10))
	if g.r.IntN(3) == 0 {
		return mustEncode(g.tb, g.swarmCommand())
	}
	var c Command
	switch k := g.r.IntN(100); {
	case k < 20:
		id, t, req := g.auth()
		c = JoinPeer{Peer: id, Token: t, Addr: fmt.Sprintf("10.0.0.%d:%d", g.r.IntN(3), 7000+g.r.IntN(2)), RequestID: req, Time: g.clock}
	case k < 60:
		id, t, req := g.auth()
		n := 1 + g.r.IntN(4)
		if g.r.IntN(4) == 0 {
			n = 10 + g.r.IntN(genFiles) // large sets switch to the bucketed shape
		}
		files := make([]FileMeta, n)
		for i := range files {
			files[i] = g.fileMeta()
		}
		// Drop entries that repeat an ID with different metadata: those
		// are invalid and would make the whole command a no-op.
		slices.SortStableFunc(files, func(a, b FileMeta) int { return cmpStr(string(a.ID), string(b.ID)) })
		files = slices.CompactFunc(files, func(a, b FileMeta) bool { return a.ID == b.ID })
		c = RegisterFiles{Peer: id, Token: t, RequestID: req, Files: files}
	case k < 77:
		id, t, req := g.auth()
		ids := make([]FileID, g.r.IntN(5))
		for i := range ids {
			ids[i] = fid(g.r.IntN(genFiles))
		}
		c = UnregisterFiles{Peer: id, Token: t, RequestID: req, Files: ids}
	case k < 80:
		id, t, req := g.auth()
		c = LeavePeer{Peer: id, Token: t, RequestID: req}
	case k < 84:
		ids := make([]PeerID, g.r.IntN(3))
		for i := range ids {
			ids[i] = genPeer(g.r.IntN(genPeers + 1))
		}
		c = ExpirePeers{Peers: ids, Time: g.clock - int64(g.r.IntN(30))}
	case k < 87:
		b := make([]byte, 2+g.r.IntN(12))
		for i := range b {
			b[i] = byte(g.r.Uint32())
		}
		b[0] = byte(1 + g.r.IntN(10))
		b[1] = 1
		return b
	case k < 89:
		// A raw but valid-looking command with a zero request id.
		return encodeUnchecked(g.tb, LeavePeer{Peer: genPeer(0), Token: tok(string(genPeer(0)))})
	default:
		id, t, req := g.auth()
		c = JoinPeer{Peer: id, Token: t, Addr: "10.0.0.9:7000", RequestID: req, Time: g.clock}
	}
	return mustEncode(g.tb, c)
}

// entry returns a random log entry: mostly commands, some batches, some
// entries raft passes to the FSM that are not commands.
func (g *cmdGen) entry(index uint64) *raft.Log {
	l := &raft.Log{Index: index, Term: 1, Type: raft.LogCommand}
	switch k := g.r.IntN(100); {
	case k < 4:
		l.Type = raft.LogConfiguration
		l.Data = []byte("configuration")
	case k < 12:
		cmds := make([][]byte, 1+g.r.IntN(6))
		for i := range cmds {
			cmds[i] = g.command()
			for len(cmds[i]) < 2 || CommandType(cmds[i][0]) == CmdBatch {
				cmds[i] = g.command()
			}
		}
		l.Data = mustEncode(g.tb, Batch{Commands: cmds})
	default:
		l.Data = g.command()
	}
	return l
}

func (g *cmdGen) log(n int) []*raft.Log {
	logs := make([]*raft.Log, n)
	for i := range logs {
		logs[i] = g.entry(uint64(i + 1))
	}
	return logs
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// normalize makes a response comparable: errors become their text.
func normalize(r any) string {
	resp, ok := r.(Response)
	if !ok {
		return fmt.Sprintf("%#v", r)
	}
	s := fmt.Sprintf("{err=%v dup=%v expired=%v swarmExpired=%d results=[", resp.Err, resp.Duplicate, resp.Expired, resp.ExpiredSwarmPeers)
	for _, rr := range resp.Results {
		s += normalize(rr) + " "
	}
	return s + "]}"
}

const propertyEntries = 3000

// Replicas that apply the same log, one entry at a time or in batches of any
// size, reach the same state and return the same responses; the incremental
// digest always equals the digest recomputed from scratch.
func TestPropertyReplicasAgree(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			logs := newCmdGen(t, seed).log(propertyEntries)
			universe := genFileUniverse()

			one, batched, again := New(), New(), New()
			var oneResp []string
			digests := make(map[uint64]string)
			kinds := map[string]int{}
			for _, l := range logs {
				r := one.Apply(l)
				oneResp = append(oneResp, normalize(r))
				if resp, ok := r.(Response); ok {
					switch {
					case resp.Duplicate:
						kinds["duplicate"]++
					case resp.Err != nil:
						kinds[fmt.Sprintf("%T", errorsRoot(resp.Err))+" "+errorsRoot(resp.Err).Error()]++
					default:
						kinds["ok"]++
					}
				}
				again.Apply(l)
				digests[l.Index] = one.Digest()
				checkDigest(t, one)
				if l.Index%50 == 0 {
					checkSearch(t, one, universe, searchQueries)
				}
			}
			t.Logf("seed %d: final %+v; outcomes %v", seed, one.Counts(), kinds)

			r := rand.New(rand.NewPCG(seed, 7))
			var batchedResp []string
			for i := 0; i < len(logs); {
				n := min(1+r.IntN(64), len(logs)-i)
				out := batched.ApplyBatch(logs[i : i+n])
				if len(out) != n {
					t.Fatalf("ApplyBatch of %d returned %d results", n, len(out))
				}
				for _, o := range out {
					batchedResp = append(batchedResp, normalize(o))
				}
				i += n
				if got, want := batched.Digest(), digests[uint64(i)]; got != want {
					t.Fatalf("after entry %d: batched digest %s, one-by-one %s", i, got, want)
				}
			}
			for i := range oneResp {
				if oneResp[i] != batchedResp[i] {
					t.Fatalf("entry %d: ApplyBatch response %s, Apply response %s", i+1, batchedResp[i], oneResp[i])
				}
			}
			want := viewOf(one, universe)
			diffViews(t, viewOf(again, universe), want)
			diffViews(t, viewOf(batched, universe), want)
		})
	}
}

func errorsRoot(err error) error {
	for _, s := range []error{ErrInvalid, ErrUnknownPeer, ErrUnauthorized, ErrConflict, ErrUnknownCommand, ErrNotTracked} {
		if errors.Is(err, s) {
			return s
		}
	}
	return err
}

// A snapshot reflects the state at Snapshot() time even when Apply continues
// before (and while) Persist runs; restoring it into a fresh FSM yields the
// same digest and queries, and the restored FSM then applies the rest of the
// log to the same final state as the original.
func TestPropertySnapshotRestore(t *testing.T) {
	for _, seed := range []uint64{11, 12} {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			logs := newCmdGen(t, seed).log(propertyEntries)
			universe := genFileUniverse()
			r := rand.New(rand.NewPCG(seed, 99))
			f := New()

			type pending struct {
				snap  raft.FSMSnapshot
				view  view
				at    int // entries applied when taken
				bytes []byte
				done  chan struct{}
			}
			var all []*pending
			var wg sync.WaitGroup
			next := 50 + r.IntN(150)
			for i, l := range logs {
				f.Apply(l)
				if i+1 != next {
					continue
				}
				next += 50 + r.IntN(300)
				snap, err := f.Snapshot()
				if err != nil {
					t.Fatal(err)
				}
				p := &pending{snap: snap, view: viewOf(f, universe), at: i + 1, done: make(chan struct{})}
				all = append(all, p)
				if r.IntN(2) == 0 {
					// Persist concurrently with the applies that follow;
					// the race detector checks copy-on-write.
					wg.Go(func() {
						defer close(p.done)
						var sink memSink
						if err := p.snap.Persist(&sink); err != nil {
							t.Error(err)
						}
						p.snap.Release()
						p.bytes = sink.Bytes()
					})
				} else {
					close(p.done)
				}
			}
			wg.Wait()
			final := viewOf(f, universe)
			for _, p := range all {
				if p.bytes == nil {
					p.bytes = persist(t, p.snap) // persisted long after Snapshot()
				}
				g := New()
				// Give g some unrelated state first: Restore must replace it.
				n := &node{tb: t, f: g}
				n.mustApply(JoinPeer{Peer: "stale", Token: tok("stale"), Addr: "s:1", RequestID: 1, Time: 1})
				if err := restore(g, p.bytes); err != nil {
					t.Fatalf("restore snapshot taken after %d entries: %v", p.at, err)
				}
				checkDigest(t, g)
				checkSearch(t, g, universe, searchQueries)
				diffViews(t, viewOf(g, universe), p.view)
				for _, l := range logs[p.at:] {
					g.Apply(l)
				}
				diffViews(t, viewOf(g, universe), final)
			}
			t.Logf("seed %d: checked %d snapshots", seed, len(all))
		})
	}
}

// Queries, snapshots and Persist run concurrently with Apply without data
// races (run with -race), and every query answer is internally consistent.
func TestQueriesConcurrentWithApply(t *testing.T) {
	logs := newCmdGen(t, 21).log(1500)
	universe := genFileUniverse()
	f := New()
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
				switch (i + w) % 5 {
				case 0:
					for _, p := range f.Peers() {
						f.PeerFiles(p.ID)
						f.Peer(p.ID)
					}
				case 1:
					for _, id := range universe {
						if info, hs, ok := f.Lookup(id); ok && info.Holders != len(hs) {
							t.Errorf("Lookup(%.8s): Holders %d but %d holders listed", id, info.Holders, len(hs))
						}
					}
				case 2:
					f.Search(searchQueries[i%len(searchQueries)], 3)
				case 3:
					f.Counts()
					f.Digest()
					f.AppliedIndex()
				case 4:
					f.Search("", 0)
				}
			}
		})
	}
	var persisted sync.WaitGroup
	for i, l := range logs {
		f.Apply(l)
		if i%300 == 150 {
			persistInBackground(t, f, &persisted)
		}
	}
	close(stop)
	wg.Wait()
	persisted.Wait()
	checkDigest(t, f)
}
