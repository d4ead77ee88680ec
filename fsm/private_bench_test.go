package fsm

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// BenchmarkApplyPrivateCredits measures the state machine's cost of one
// credited re-announce in a private tracker of 10,000 members and 100,000
// records in 10,000 swarms (each member on ten torrents, so ten books
// each): batches of 512 credits with growing counters, the shape of a
// leader's accounting entry, applied without decoding. One op is one
// credit.
func BenchmarkApplyPrivateCredits(b *testing.B) {
	const members, swarms, per = 10_000, 10_000, 10
	const records = swarms * per
	f := privWithMembers(b, members)
	f.mu.Lock()
	defer f.mu.Unlock()
	announce := func(i int, ev SwarmEvent, up uint64, at int64) PrivateAnnounce {
		p := PrivateAnnounce{Announce: Announce{InfoHash: memHash(i / per), Peer: memPeer(i), IP: memIP(i), Port: uint16(6881 + i%per), Key: uint32(i), HasKey: true, Event: ev}, Uploaded: up, At: at}
		binary.BigEndian.PutUint32(p.Passkey[:], uint32(i%members+1))
		return p
	}
	now := int64(1e9)
	for i := range records {
		f.st.policy.allow[memHash(i/per)] = struct{}{}
		p := announce(i, SwarmUpdate, 0, now)
		if r := f.privateAnnounce(&p, now, nil, 0); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	const batch = 512
	c := PrivateAnnounceBatch{MaxRate: DefaultMaxRate, Announces: make([]PrivateAnnounce, batch)}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if n%batch == 0 {
			now += int64(1e9)
			c.Time = now
			for j := range c.Announces {
				k := n + j
				c.Announces[j] = announce(k*7%records, SwarmCredit, uint64(k/records+1)*1000, now)
			}
			for _, r := range f.applyPrivateAnnounceBatch(c).Results {
				if r.Err != nil {
					b.Fatal(r.Err)
				}
			}
		}
		n++
	}
}

// privWithMembers returns an FSM in private mode with n members, member i
// (from 0) named member%06d with the passkey that is i+1 big-endian, as
// the benchmarks' announces carry.
func privWithMembers(tb testing.TB, n int) *FSM {
	f := New()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.policy.mode = TrackerPrivate
	for i := range n {
		k := make([]byte, PasskeySize)
		binary.BigEndian.PutUint32(k, uint32(i+1))
		if r := f.trackerMember(TrackerMember{Op: MemberAdd, Name: fmt.Sprintf("member%06d", i), Passkey: k, RequestID: uint64(i + 1)}); r.Err != nil {
			tb.Fatal(r.Err)
		}
	}
	return f
}
