package trackertest

import (
	"context"
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"fileshare/tracker"
)

// SharedSecrets wraps a Backend with connection-ID secrets
// (tracker.ConnIDSecrets) that a test sets and rotates, as a cluster's
// replicated secrets would be. The zero Secrets list means "none": the
// tracker falls back to a secret of its own.
type SharedSecrets struct {
	tracker.Backend
	mu      sync.Mutex
	secrets [][]byte
}

// NewSharedSecrets returns b with the given secrets, newest first.
func NewSharedSecrets(b tracker.Backend, secrets ...[]byte) *SharedSecrets {
	return &SharedSecrets{Backend: b, secrets: secrets}
}

// ConnIDSecrets implements tracker.ConnIDSecrets.
func (s *SharedSecrets) ConnIDSecrets() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.secrets
}

// Set replaces the secrets (newest first).
func (s *SharedSecrets) Set(secrets ...[]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets = slices.Clone(secrets)
}

const (
	connClient = "192.0.2.77:6881"
)

// Connect sends a BEP 15 connect to s as if from `from` and returns the
// connection ID, failing t if there is no connect reply.
func Connect(t testing.TB, s *tracker.UDPServer, from netip.AddrPort) uint64 {
	t.Helper()
	pkt := binary.BigEndian.AppendUint64(nil, tracker.UDPProtocolID)
	pkt = binary.BigEndian.AppendUint32(pkt, 0)
	pkt = binary.BigEndian.AppendUint32(pkt, 0x1234)
	r := s.HandlePacket(context.Background(), pkt, from, nil)
	if len(r) != 16 || binary.BigEndian.Uint32(r) != 0 || binary.BigEndian.Uint32(r[4:]) != 0x1234 {
		t.Fatalf("connect from %v: reply %x, want a connect reply", from, r)
	}
	return binary.BigEndian.Uint64(r[8:])
}

// Accepts reports whether s answers a request from `from` carrying
// connection ID id (a one-hash scrape, which changes nothing).
func Accepts(s *tracker.UDPServer, id uint64, from netip.AddrPort) bool {
	pkt := binary.BigEndian.AppendUint64(nil, id)
	pkt = binary.BigEndian.AppendUint32(pkt, 2)
	pkt = binary.BigEndian.AppendUint32(pkt, 0x5678)
	pkt = append(pkt, make([]byte, 20)...)
	r := s.HandlePacket(context.Background(), pkt, from, nil)
	return len(r) >= 8 && binary.BigEndian.Uint32(r[4:]) == 0x5678
}

// TestConnIDsShared checks the contract of tracker.ConnIDSecrets on the
// backends of one cluster (each master's, or one shared): a connection ID
// that a tracker on any of them issued is accepted by a tracker on every
// other — two masters on one IP, as libtorrent keeps one ID per tracker
// IP — and by a new tracker on the same backend, as after a restart of
// the master. Each backend must implement tracker.ConnIDSecrets and
// return the cluster's secrets. It changes no swarm.
func TestConnIDsShared(t *testing.T, backends ...tracker.Backend) {
	t.Helper()
	from := netip.MustParseAddrPort(connClient)
	newServer := func(b tracker.Backend) *tracker.UDPServer {
		t.Helper()
		if _, ok := b.(tracker.ConnIDSecrets); !ok {
			t.Fatalf("backend %T does not implement tracker.ConnIDSecrets", b)
		}
		s, err := tracker.NewUDPServer(b, tracker.UDPConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	servers := make([]*tracker.UDPServer, len(backends))
	for i, b := range backends {
		servers[i] = newServer(b)
	}
	for i, si := range servers {
		id := Connect(t, si, from)
		for j, sj := range servers {
			if !Accepts(sj, id, from) {
				t.Errorf("a connection ID issued by the tracker on backend %d was refused by the one on backend %d; want every master to accept it", i, j)
			}
		}
		if !Accepts(newServer(backends[i]), id, from) {
			t.Errorf("a connection ID issued before a restart of the tracker on backend %d was refused after it; want it accepted", i)
		}
	}
}
