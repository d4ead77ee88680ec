package fsm

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"runtime"
	"testing"
)

// memFileID is a deterministic, well-spread FileID.
func memFileID(i int) FileID {
	var raw [32]byte
	binary.BigEndian.PutUint64(raw[:], uint64(i)*0x9E3779B97F4A7C15+1)
	binary.BigEndian.PutUint64(raw[24:], uint64(i))
	return FileID(hex.EncodeToString(raw[:]))
}

// memPeerID looks like client.PeerIDOf: 26 base32 characters.
func memPeerID(i int) PeerID { return PeerID(fmt.Sprintf("PEERIDPEERIDPEERIDPEER%04d", i)) }

// buildFiles fills a new FSM with files files, each held by holders peers
// (of peers peers in all) under the same name, registering 500 files per
// command and applying the commands directly (the state is the same as
// through Encode and Apply, minus the decoding time).
func buildFiles(tb testing.TB, peers, files, holders int) *FSM {
	f := New()
	f.mu.Lock()
	defer f.mu.Unlock()
	for p := range peers {
		id := memPeerID(p)
		if r := f.joinPeer(JoinPeer{Peer: id, Token: tok(string(id)), Addr: "192.168.1.1:7000", RequestID: 1, Time: 1}); r.Err != nil {
			tb.Fatalf("join: %v", r.Err)
		}
	}
	req := uint64(2)
	batch := make([][]FileMeta, peers)
	flush := func(p int) {
		id := memPeerID(p)
		if r := f.registerFiles(RegisterFiles{Peer: id, Token: tok(string(id)), RequestID: req, Files: batch[p]}); r.Err != nil {
			tb.Fatalf("register: %v", r.Err)
		}
		req++
		batch[p] = batch[p][:0]
	}
	for i := range files {
		m := FileMeta{ID: memFileID(i), Name: fmt.Sprintf("Some File %07d.mkv", i), Size: int64(i) << 20, PieceSize: 1 << 20}
		for h := range holders {
			p := (i + h) % peers
			batch[p] = append(batch[p], m)
			if len(batch[p]) == 500 {
				flush(p)
			}
		}
	}
	for p := range peers {
		if len(batch[p]) > 0 {
			flush(p)
		}
	}
	if c := f.st.counts; c.Files != files || c.Holdings != files*holders {
		tb.Fatalf("built %+v, want %d files, %d holdings", c, files, files*holders)
	}
	return f
}

// heapPerFile returns the live heap bytes per file and per holding of an
// FSM built by buildFiles.
func heapPerFile(tb testing.TB, peers, files, holders int) (perFile, perHolding float64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f := buildFiles(tb, peers, files, holders)
	runtime.GC()
	runtime.ReadMemStats(&after)
	total := float64(int64(after.HeapAlloc) - int64(before.HeapAlloc))
	runtime.KeepAlive(f)
	return total / float64(files), total / float64(files*holders)
}

// BenchmarkFileMemory reports live heap bytes per file and per holding at
// 1M files with one holder (all from one peer), and at 100k files with
// three holders each.
func BenchmarkFileMemory(b *testing.B) {
	for _, tc := range []struct {
		name                  string
		peers, files, holders int
	}{{"files=1M/holders=1", 1, 1_000_000, 1}, {"files=100k/holders=3", 10, 100_000, 3}} {
		b.Run(tc.name, func(b *testing.B) {
			var perFile, perHolding float64
			for b.Loop() {
				perFile, perHolding = heapPerFile(b, tc.peers, tc.files, tc.holders)
			}
			b.ReportMetric(perFile, "heap-bytes/file")
			b.ReportMetric(perHolding, "heap-bytes/holding")
		})
	}
}

// BenchmarkFileSnapshotPersist measures Snapshot plus Persist at 1M files
// with one holder each.
func BenchmarkFileSnapshotPersist(b *testing.B) {
	f := buildFiles(b, 1, 1_000_000, 1)
	var size int64
	for b.Loop() {
		snap, _ := f.Snapshot()
		sink := &discardSink{}
		if err := snap.Persist(sink); err != nil {
			b.Fatal(err)
		}
		snap.Release()
		size = sink.n
	}
	b.ReportMetric(float64(size)/1e6, "snapshot-bytes/file")
}

// BenchmarkFileRestore measures Restore of a snapshot of 1M files with one
// holder each.
func BenchmarkFileRestore(b *testing.B) {
	data := snapshotBytes(b, buildFiles(b, 1, 1_000_000, 1))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := restore(New(), data); err != nil {
			b.Fatal(err)
		}
	}
}

// The file index stays under its memory budget: 120 heap bytes per file
// with one holder at 1M files from one peer (measured: about 103). Under
// the race detector or -short it builds a tenth of the index.
func TestFileMemoryPerFile(t *testing.T) {
	files := 1_000_000
	if raceEnabled || testing.Short() {
		files = 100_000
	}
	per, _ := heapPerFile(t, 1, files, 1)
	t.Logf("%d files × 1 holder: %.1f heap bytes per file", files, per)
	if per > 120 {
		t.Fatalf("%.1f heap bytes per file, want at most 120", per)
	}
}

// Churn through names, holders and whole files keeps the incremental
// digest equal to a recomputed one, and every snapshot restores to the same
// view: this drives name sharing, arena compaction, the promotion of a
// file's second holder when the first leaves, and holder sets above
// smallMax, across snapshots taken in the middle.
func TestFileChurnKeepsStateConsistent(t *testing.T) {
	n := newNode(t)
	const peers = 40
	for i := range peers {
		id := memPeerID(i)
		n.mustApply(JoinPeer{Peer: id, Token: tok(string(id)), Addr: "10.0.0.1:7000", RequestID: 1, Time: 1})
	}
	req := uint64(2)
	rnd := uint64(1)
	next := func(k int) int { rnd = rnd*6364136223846793005 + 1442695040888963407; return int(rnd>>33) % k }
	var universe []FileID
	for k := range 300 {
		universe = append(universe, FileID(fmt.Sprintf("0%d", k%3))+memFileID(k)[2:])
	}
	var snaps [][]byte
	var views []view
	for round := range 60 {
		for range 40 {
			p := memPeerID(next(peers))
			var ms []FileMeta
			var ids []FileID
			seen := map[int]bool{}
			for range 50 {
				// 300 files, all in shards 0..2 so that arenas churn.
				k := next(300)
				if seen[k] {
					continue
				}
				seen[k] = true
				id := universe[k]
				ms = append(ms, FileMeta{ID: id, Name: fmt.Sprintf("Name %d v%d", k, next(3)), Size: int64(k), PieceSize: 1 << 16})
				ids = append(ids, id)
			}
			if next(3) == 0 {
				n.mustApply(UnregisterFiles{Peer: p, Token: tok(string(p)), RequestID: req, Files: ids})
			} else {
				n.mustApply(RegisterFiles{Peer: p, Token: tok(string(p)), RequestID: req, Files: ms})
			}
			req++
		}
		if got, want := n.f.Digest(), n.f.recomputeDigest(); got != want {
			t.Fatalf("round %d: incremental digest %s, recomputed %s", round, got, want)
		}
		if round%10 == 9 {
			id := memPeerID(next(peers))
			n.mustApply(LeavePeer{Peer: id, Token: tok(string(id)), RequestID: req})
			n.mustApply(JoinPeer{Peer: id, Token: tok(string(id)), Addr: "10.0.0.2:7000", RequestID: req + 1, Time: 2})
			req += 2
		}
		if round%7 == 0 {
			snaps = append(snaps, snapshotBytes(t, n.f))
			views = append(views, viewOf(n.f, universe))
		}
	}
	if c := n.f.Counts(); c.Files < 100 || c.Holdings < 3*c.Files {
		t.Fatalf("churn left %+v: too small to exercise shared holders", c)
	}
	for i, b := range snaps {
		g := New()
		if err := restore(g, b); err != nil {
			t.Fatalf("restore snapshot %d: %v", i, err)
		}
		diffViews(t, viewOf(g, universe), views[i])
	}
}
