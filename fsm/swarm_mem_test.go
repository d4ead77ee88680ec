package fsm

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"

	"github.com/hashicorp/raft"
)

// memHash and memPeer are deterministic, well-spread hashes and peer IDs.
func memHash(i int) InfoHash {
	var h InfoHash
	binary.BigEndian.PutUint64(h[:], uint64(i)*0x9E3779B97F4A7C15+1)
	binary.BigEndian.PutUint32(h[16:], uint32(i))
	return h
}

func memPeer(i int) SwarmPeerID {
	var p SwarmPeerID
	copy(p[:], "-qB4520-")
	binary.BigEndian.PutUint64(p[8:], uint64(i)*0xBF58476D1CE4E5B9+7)
	binary.BigEndian.PutUint32(p[16:], uint32(i))
	return p
}

// memIP returns a distinct IPv4 address for every i: the worst case for
// the per-address counts.
func memIP(i int) [16]byte {
	var ip [16]byte
	ip[10], ip[11] = 0xff, 0xff
	binary.BigEndian.PutUint32(ip[12:], uint32(0x0a000000+i+1))
	return ip
}

// buildSwarms fills a new FSM with swarms × perSwarm records, every record
// from its own address, applying the commands directly (the state is the
// same as through Encode and Apply, minus the decoding time).
func buildSwarms(tb testing.TB, swarms, perSwarm int) *FSM {
	f := New()
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range swarms {
		ih := memHash(s)
		for k := range perSwarm {
			i := s*perSwarm + k
			c := Announce{InfoHash: ih, Peer: memPeer(i), IP: memIP(i), Port: uint16(6881 + k), Key: uint32(i), HasKey: true, Seeder: k%3 == 0, Time: int64(i) * 1e6}
			if r := f.announce(c, nil); r.Err != nil {
				tb.Fatalf("announce %d: %v", i, r.Err)
			}
		}
	}
	return f
}

// heapPerSwarmPeer returns the live heap bytes per record of an FSM
// holding swarms × perSwarm records.
func heapPerSwarmPeer(tb testing.TB, swarms, perSwarm int) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f := buildSwarms(tb, swarms, perSwarm)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if _, n := f.SwarmStats(); n != swarms*perSwarm {
		tb.Fatalf("built %d records, want %d", n, swarms*perSwarm)
	}
	per := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(swarms*perSwarm)
	runtime.KeepAlive(f)
	return per
}

// The swarm state stays under its memory budget: 100 heap bytes per
// (swarm, peer) record at 1M records over 100k swarms, each record from
// its own address. The test allows 130 bytes so that runtime changes do not
// make it flaky; BenchmarkSwarmMemory reports the exact figure. Under the
// race detector it builds a tenth of the state.
func TestSwarmMemoryPerRecord(t *testing.T) {
	swarms := 100_000
	if raceEnabled || testing.Short() {
		swarms = 10_000
	}
	per := heapPerSwarmPeer(t, swarms, 10)
	t.Logf("%d swarms × 10 peers: %.1f heap bytes per record", swarms, per)
	if per > 130 {
		t.Fatalf("%.1f heap bytes per swarm record, want at most 130 (target 100)", per)
	}
}

// BenchmarkSwarmMemory reports heap bytes per swarm record at 1M records in
// 100k swarms (the budget is 100), and at 100k records in one swarm.
func BenchmarkSwarmMemory(b *testing.B) {
	for _, tc := range []struct {
		name            string
		swarms, perSwar int
	}{{"swarms=100k/peers=10", 100_000, 10}, {"swarms=1/peers=100k", 1, 100_000}} {
		b.Run(tc.name, func(b *testing.B) {
			var per float64
			for b.Loop() {
				per = heapPerSwarmPeer(b, tc.swarms, tc.perSwar)
			}
			b.ReportMetric(per, "heap-bytes/record")
		})
	}
}

// BenchmarkSwarmPeers measures a 50-peer list from a 100k-record swarm, for
// a leecher and for a seeder: it must not depend on the swarm's size.
func BenchmarkSwarmPeers(b *testing.B) {
	f := buildSwarms(b, 1, 100_000)
	ih := memHash(0)
	for _, seeder := range []bool{false, true} {
		b.Run(fmt.Sprintf("forSeeder=%v", seeder), func(b *testing.B) {
			b.ReportAllocs()
			var rnd uint64
			for b.Loop() {
				rnd += 0x9E3779B97F4A7C15
				if peers, _, _ := f.SwarmPeers(ih, memPeer(1), 50, seeder, rnd); len(peers) != 50 {
					b.Fatalf("got %d peers", len(peers))
				}
			}
		})
	}
}

// BenchmarkApplyAnnounce measures applying encoded announces (decode,
// policy check, record update, digest update) into 10k swarms of 10.
func BenchmarkApplyAnnounce(b *testing.B) {
	f := buildSwarms(b, 10_000, 10)
	logs := make([]*raft.Log, 4096)
	for i := range logs {
		k := i * 24 % 100_000
		logs[i] = &raft.Log{Type: raft.LogCommand, Data: mustEncode(b, Announce{
			InfoHash: memHash(k / 10), Peer: memPeer(k), IP: memIP(k), Port: 7000, Key: uint32(k), HasKey: true,
			Seeder: i%2 == 0, Time: int64(i),
		})}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l := logs[i%len(logs)]
		i++
		l.Index = uint64(i)
		if r := f.Apply(l).(Response); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
}

// BenchmarkSwarmSnapshotPersist measures Snapshot plus Persist at 1M
// records in 100k swarms.
func BenchmarkSwarmSnapshotPersist(b *testing.B) {
	f := buildSwarms(b, 100_000, 10)
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
	b.ReportMetric(float64(size)/1e6, "snapshot-bytes/record")
}
