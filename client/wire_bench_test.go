package client

import "testing"

// BenchmarkAnnounceBatchWire measures the codec of the tracker's hottest
// RPC, a follower's relayed batch of 100 private announces: one op is one
// batch encoded, or decoded.
func BenchmarkAnnounceBatchWire(b *testing.B) {
	var m TrackerAnnounceBatchRequest
	for i := range 100 {
		a := TrackerAnnounceRequest{Port: uint16(6881 + i), Key: uint32(i), HasKey: true, Event: 4, Priv: make([]byte, PrivReportSize)}
		a.InfoHash[0], a.Peer[0], a.IP[15] = byte(i), byte(i), byte(i)
		m.Announces = append(m.Announces, a)
	}
	m.Forwarded = true
	enc := m.AppendWire(nil)
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, len(enc))
		for b.Loop() {
			buf = m.AppendWire(buf[:0])
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var d TrackerAnnounceBatchRequest
			if err := d.DecodeWire(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
