package tracker_test

import (
	"net/netip"
	"testing"
	"time"

	"fileshare/tracker"
	"fileshare/tracker/trackertest"
)

// An ID issued by one tracker is accepted by another holding the same
// secrets: two masters on one IP, and a master after a restart. Without
// shared secrets each tracker refuses the other's IDs.
func TestConnIDsSharedBySecrets(t *testing.T) {
	mem := &trackertest.MemoryBackend{}
	trackertest.TestConnIDsShared(t,
		trackertest.NewSharedSecrets(mem, []byte("cluster secret one")),
		trackertest.NewSharedSecrets(&trackertest.MemoryBackend{}, []byte("cluster secret one")))

	a, b := newUDP(t, mem, tracker.UDPConfig{}), newUDP(t, mem, tracker.UDPConfig{})
	id := trackertest.Connect(t, a, client4)
	if trackertest.Accepts(b, id, client4) {
		t.Error("two trackers without shared secrets accept each other's IDs; the test above proves nothing")
	}
	empty := trackertest.NewSharedSecrets(mem) // no secrets yet: own secret
	if trackertest.Accepts(newUDP(t, empty, tracker.UDPConfig{}), id, client4) {
		t.Error("a tracker whose backend has no secrets accepted another's ID")
	}
	s := newUDP(t, empty, tracker.UDPConfig{})
	if !trackertest.Accepts(s, trackertest.Connect(t, s, client4), client4) {
		t.Error("a tracker whose backend has no secrets refused its own ID")
	}
}

// After the secrets rotate, IDs signed with the previous secret are
// accepted as long as it is still listed (the BEP 15 window), new IDs are
// signed with the new one, and once the previous secret is dropped its
// IDs are refused.
func TestConnIDSecretRotation(t *testing.T) {
	oldS, newS := []byte("secret of the previous period"), []byte("secret of this period")
	b := trackertest.NewSharedSecrets(&trackertest.MemoryBackend{}, oldS)
	s := newUDP(t, b, tracker.UDPConfig{})
	oldID := trackertest.Connect(t, s, client4)

	b.Set(newS, oldS)
	if !trackertest.Accepts(s, oldID, client4) {
		t.Error("after rotation, an ID signed with the previous secret (still listed) was refused")
	}
	newID := trackertest.Connect(t, s, client4)
	onlyNew := newUDP(t, trackertest.NewSharedSecrets(&trackertest.MemoryBackend{}, newS), tracker.UDPConfig{})
	if !trackertest.Accepts(onlyNew, newID, client4) {
		t.Error("after rotation, a new ID is not signed with the newest secret")
	}
	if trackertest.Accepts(onlyNew, oldID, client4) {
		t.Error("a tracker that only has the new secret accepted an ID of the old one")
	}
	b.Set(newS)
	if trackertest.Accepts(s, oldID, client4) {
		t.Error("an ID of a secret no longer listed was accepted")
	}
	if !trackertest.Accepts(s, newID, client4) {
		t.Error("an ID of the current secret was refused")
	}
}

// Masters' clocks differ a little: an ID made just after a slot boundary
// on one is accepted by a master whose clock is a second behind, and
// the window still ends two to three minutes after issue.
func TestConnIDClockSkew(t *testing.T) {
	secret := []byte("shared")
	ahead, behind := &clock{}, &clock{}
	start := time.Date(2025, 1, 1, 0, 1, 0, 0, time.UTC) // a slot boundary
	ahead.ns.Store(start.UnixNano())
	behind.ns.Store(start.Add(-time.Second).UnixNano())
	a := newUDP(t, trackertest.NewSharedSecrets(&trackertest.MemoryBackend{}, secret), tracker.UDPConfig{Now: ahead.now})
	b := newUDP(t, trackertest.NewSharedSecrets(&trackertest.MemoryBackend{}, secret), tracker.UDPConfig{Now: behind.now})
	id := trackertest.Connect(t, a, client4)
	if !trackertest.Accepts(b, id, client4) {
		t.Error("a master one second behind refused an ID made just after a slot boundary")
	}
	behind.advance(120 * time.Second)
	if !trackertest.Accepts(b, id, client4) {
		t.Error("the ID was refused 2 minutes after issue; BEP 15 lets a client use it that long")
	}
	behind.advance(61 * time.Second)
	if trackertest.Accepts(b, id, client4) {
		t.Error("the ID was accepted more than 3 minutes after issue")
	}
	other := netip.MustParseAddrPort("192.0.2.1:40001")
	if trackertest.Accepts(a, id, other) {
		t.Error("the ID was accepted from another port")
	}
}
