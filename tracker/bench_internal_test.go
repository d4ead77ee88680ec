package tracker

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

type nopBackend struct{ reply AnnounceReply }

func (n *nopBackend) Announce(context.Context, *AnnounceRequest) (*AnnounceReply, error) {
	return &n.reply, nil
}
func (n *nopBackend) Scrape(_ context.Context, h []InfoHash) ([]ScrapeEntry, error) {
	return make([]ScrapeEntry, len(h)), nil
}

// BenchmarkUDPHandleRenewal is what a read loop spends on one renewal
// besides the system calls: rate limit, connection-ID check, parse, a
// Backend that answers at once with 50 peers, encode.
func BenchmarkUDPHandleRenewal(b *testing.B) {
	nb := &nopBackend{}
	for i := range 50 {
		nb.reply.Peers = append(nb.reply.Peers, Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 6881)})
	}
	s, err := NewUDPServer(nb, UDPConfig{LimitLoopback: true, SourceRate: 1e9, SourceBurst: 1e9})
	if err != nil {
		b.Fatal(err)
	}
	w := s.newWorker()
	w.keys = s.ring.keys()
	from := netip.MustParseAddrPort("198.51.100.1:6881")
	now := time.Now()
	id := w.mac.issue(w.keys, from, now)
	pkt := make([]byte, udpAnnounceLen)
	binary.BigEndian.PutUint64(pkt, id)
	binary.BigEndian.PutUint32(pkt[8:], UDPActionAnnounce)
	binary.BigEndian.PutUint32(pkt[92:], 50)
	binary.BigEndian.PutUint16(pkt[96:], 6881)
	out := make([]byte, 0, udpMaxPacket)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		r, _ := w.handle(ctx, out[:0], pkt, from, now, true)
		if len(r) != 20+50*6 {
			b.Fatalf("reply of %d bytes", len(r))
		}
	}
}

// BenchmarkConnIDCheck compares the connection-ID check (AES CBC-MAC,
// the current slot) with the HMAC-SHA256 this tracker used before.
func BenchmarkConnIDCheck(b *testing.B) {
	from := netip.MustParseAddrPort("198.51.100.1:6881")
	now := time.Now()
	b.Run("aes", func(b *testing.B) {
		k := newConnIDKeys([][]byte{[]byte("secret")})
		var m connIDMAC
		id := m.issue(k, from, now)
		b.ReportAllocs()
		for b.Loop() {
			if !m.valid(k, id, from, now) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("aes-forged", func(b *testing.B) {
		k := newConnIDKeys([][]byte{[]byte("secret")})
		var m connIDMAC
		id := m.issue(k, from, now) ^ 1
		b.ReportAllocs()
		for b.Loop() {
			if m.valid(k, id, from, now) {
				b.Fatal("valid")
			}
		}
	})
	b.Run("hmac-sha256", func(b *testing.B) {
		mac := hmac.New(sha256.New, []byte("secret"))
		var sum [sha256.Size]byte
		var buf [26]byte
		a := from.Addr().As16()
		copy(buf[:], a[:])
		binary.BigEndian.PutUint16(buf[16:], from.Port())
		binary.BigEndian.PutUint64(buf[18:], uint64(now.Unix()/60))
		b.ReportAllocs()
		for b.Loop() {
			mac.Reset()
			mac.Write(buf[:])
			_ = mac.Sum(sum[:0])
		}
	})
}
