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
