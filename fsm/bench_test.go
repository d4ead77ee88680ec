package fsm

import (
	"fmt"
	"io"
	"runtime"
	"testing"

	"github.com/hashicorp/raft"
)

const benchPeers = 100

func benchJoin(b *testing.B, f *FSM, peers int) uint64 {
	n := &node{tb: b, f: f}
	for i := range peers {
		id := PeerID(fmt.Sprintf("peer-%05d", i))
		n.mustApply(JoinPeer{Peer: id, Token: tok(string(id)), Addr: "192.168.1.1:7000", RequestID: 1, Time: 1})
	}
	return n.index
}

// benchRegisterLogs returns log entries registering files start..start+n-1,
// one file per command, spread over benchPeers peers.
func benchRegisterLogs(b *testing.B, start, n int, index uint64) []*raft.Log {
	logs := make([]*raft.Log, n)
	for j := range logs {
		i := start + j
		id := PeerID(fmt.Sprintf("peer-%05d", i%benchPeers))
		data := mustEncode(b, RegisterFiles{
			Peer: id, Token: tok(string(id)), RequestID: uint64(2 + i/benchPeers),
			Files: []FileMeta{{ID: fid(i), Name: fmt.Sprintf("Some File %07d.mkv", i), Size: int64(i) << 20, PieceSize: 1 << 20}},
		})
		logs[j] = &raft.Log{Index: index + uint64(j) + 1, Type: raft.LogCommand, Data: data}
	}
	return logs
}

// BenchmarkApplyRegister measures applying single-file registrations (decode,
// auth, dedup, index update, digest update), one log entry each.
//
// In the snapshot case a Snapshot is taken (and released) every 4096
// entries, so the copy-on-write cost of the applies that follow is included.
func BenchmarkApplyRegister(b *testing.B) {
	for _, tc := range []struct {
		batch    int
		snapshot bool
	}{{1, false}, {64, false}, {1, true}} {
		batch := tc.batch
		name := fmt.Sprintf("batch=%d", batch)
		if tc.snapshot {
			name += "/snapshotEvery=4096"
		}
		b.Run(name, func(b *testing.B) {
			f := New()
			index := benchJoin(b, f, benchPeers)
			const chunk = 4096
			var logs []*raft.Log
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				if i%chunk == 0 {
					b.StopTimer()
					logs = benchRegisterLogs(b, i, chunk, index)
					index += chunk
					b.StartTimer()
					if tc.snapshot {
						snap, _ := f.Snapshot()
						snap.Release()
					}
				}
				k := i % chunk
				if batch == 1 {
					if r := f.Apply(logs[k]).(Response); r.Err != nil {
						b.Fatal(r.Err)
					}
				} else {
					f.ApplyBatch(logs[k:min(k+batch, chunk)])
				}
			}
		})
	}
}

// buildIndex returns an FSM holding files files spread over peers peers, one
// holder each, registered 500 files per command.
func buildIndex(b *testing.B, peers, files int) *FSM {
	f := New()
	benchJoin(b, f, peers)
	n := &node{tb: b, f: f, index: uint64(peers)}
	per := files / peers
	req := uint64(2)
	for p := range peers {
		id := PeerID(fmt.Sprintf("peer-%05d", p))
		for start := 0; start < per; start += 500 {
			var ms []FileMeta
			for i := start; i < min(start+500, per); i++ {
				k := p*per + i
				ms = append(ms, FileMeta{ID: fid(k), Name: fmt.Sprintf("Some File %07d.mkv", k), Size: int64(k) << 20, PieceSize: 1 << 20})
			}
			n.mustApply(RegisterFiles{Peer: id, Token: tok(string(id)), RequestID: req, Files: ms})
			req++
		}
	}
	return f
}

type discardSink struct{ n int64 }

func (s *discardSink) Write(p []byte) (int, error) { s.n += int64(len(p)); return len(p), nil }
func (s *discardSink) Close() error                { return nil }
func (s *discardSink) Cancel() error               { return nil }
func (s *discardSink) ID() string                  { return "discard" }

// BenchmarkSnapshotPersist measures Snapshot (which must be cheap) plus
// Persist (which streams the whole index) at 100k files.
func BenchmarkSnapshotPersist(b *testing.B) {
	f := buildIndex(b, 1000, 100_000)
	b.ResetTimer()
	var size int64
	for b.Loop() {
		snap, err := f.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		sink := &discardSink{}
		if err := snap.Persist(sink); err != nil {
			b.Fatal(err)
		}
		snap.Release()
		size = sink.n
	}
	b.SetBytes(size)
	b.ReportMetric(float64(size)/100_000, "snapshot-bytes/file")
}

// BenchmarkSnapshot measures Snapshot alone: raft's FSM goroutine is blocked
// only for this long.
func BenchmarkSnapshot(b *testing.B) {
	f := buildIndex(b, 1000, 100_000)
	b.ReportAllocs()
	for b.Loop() {
		snap, _ := f.Snapshot()
		snap.Release()
	}
}

// BenchmarkRestore measures Restore of a 100k-file snapshot.
func BenchmarkRestore(b *testing.B) {
	data := snapshotBytes(b, buildIndex(b, 1000, 100_000))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := restore(New(), data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSearch measures a full scan at 100k files.
func BenchmarkSearch(b *testing.B) {
	f := buildIndex(b, 1000, 100_000)
	for b.Loop() {
		f.Search("file 12345", 10)
	}
}

// BenchmarkHeapPerFile reports live heap bytes per indexed file at 200k
// files with one holder each, for many small peers and for one big peer.
func BenchmarkHeapPerFile(b *testing.B) {
	for _, peers := range []int{1000, 1} {
		b.Run(fmt.Sprintf("peers=%d", peers), func(b *testing.B) {
			const files = 200_000
			var perFile float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				f := buildIndex(b, peers, files)
				runtime.GC()
				runtime.ReadMemStats(&after)
				if got := f.Counts().Files; got != files {
					b.Fatalf("built %d files, want %d", got, files)
				}
				perFile = float64(after.HeapAlloc-before.HeapAlloc) / files
				runtime.KeepAlive(f)
			}
			b.ReportMetric(perFile, "heap-bytes/file")
		})
	}
}

var _ io.Writer = (*discardSink)(nil)
