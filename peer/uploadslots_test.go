package peer

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/hex"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"fileshare/internal/poll"
	"fileshare/transport"
)

// dialPieceFrom opens a TLS piece stream to addr from the loopback address
// from (127.0.0.x), as any stranger with a peer key can.
func dialPieceFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	creds, err := transport.PeerTLS(testKey("slot-hoarder"), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(raw, creds.PeerClientConfig(func(ed25519.PublicKey) error { return nil }))
	if err := tc.Handshake(); err != nil {
		raw.Close()
		t.Fatal(err)
	}
	if _, err := tc.Write([]byte{transport.StreamPiece}); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Time{})
	t.Cleanup(func() { tc.Close() })
	return tc
}

// downloadWithin downloads id from whoever holds it and fails the test if
// that takes longer than limit.
func downloadWithin(t *testing.T, p *Peer, id string, want []byte, limit time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	dest := filepath.Join(t.TempDir(), "out")
	start := time.Now()
	if _, err := p.Download(ctx, id, dest, DownloadOptions{}); err != nil {
		t.Fatalf("download while the upload slots were held: %v after %v", err, time.Since(start).Round(time.Millisecond))
	}
	if sha256File(t, dest) != sha256File(t, writeTemp(t, want)) {
		t.Fatal("downloaded file differs")
	}
	t.Logf("download took %v", time.Since(start).Round(time.Millisecond))
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	return filepath.Join(shareFolder(t, map[string][]byte{"f": b}), "f")
}

// Connections that take every upload slot and then send nothing (or
// nothing whole) lose their slots to a downloader: it gets the file in
// seconds, not "busy" until it gives up.
func TestIdleConnectionsCannotHoldUploadSlots(t *testing.T) {
	c := newTestCluster(t, nil)
	data := randomBytes(11, 3<<20)
	alice := startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"f": data}), nil)
	bob := startPeer(t, c, "bob", "", nil)
	id := idOf(t, data)
	waitHolders(t, c.client(), id, 1)

	var hoard []net.Conn
	for i := range 16 { // Config.MaxUploads' default
		conn := dialPieceFrom(t, "127.0.0.1", alice.Addr())
		if i%2 == 1 {
			_, _ = conn.Write([]byte{protoVersion}) // the first byte of a request, and no more
		}
		hoard = append(hoard, conn)
	}
	downloadWithin(t, bob, id, data, 20*time.Second)
	closed := 0
	for _, conn := range hoard {
		_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := conn.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			closed++
		}
	}
	if closed == 0 {
		t.Error("no hoarding connection lost its slot")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// A source that keeps every upload slot busy (16 connections asking for
// the hash list over and over) holds more than its share: a downloader at
// another address still gets slots and the file.
func TestUploadSlotsAreSharedAmongSources(t *testing.T) {
	c := newTestCluster(t, nil)
	data := randomBytes(12, 3<<20)
	alice := startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"f": data}), nil)
	bob := startPeer(t, c, "bob", "", nil)
	id := idOf(t, data)
	waitHolders(t, c.client(), id, 1)
	raw, _ := hex.DecodeString(id)
	req := pieceRequest{Op: opHashes, File: [32]byte(raw)}.appendTo(nil)

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for range 16 {
		conn := dialPieceFrom(t, "127.0.0.2", alice.Addr())
		// Owned by this test, which cancels and waits for it.
		wg.Go(func() {
			br := bufio.NewReader(conn)
			for ctx.Err() == nil {
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := conn.Write(req); err != nil {
					return
				}
				h, err := readHeader(br)
				if err != nil {
					return
				}
				if _, err := io.CopyN(io.Discard, br, int64(h.Len)); err != nil {
					return
				}
			}
		})
	}
	// Every slot is the busy source's before the download starts: one
	// more connection from it is refused.
	poll.Until(t, 10*time.Second, "the busy source to hold all 16 slots", func() bool {
		probe := dialPieceFrom(t, "127.0.0.2", alice.Addr())
		defer probe.Close()
		_ = probe.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := probe.Write(req); err != nil {
			return false
		}
		h, err := readHeader(bufio.NewReader(probe))
		return err == nil && h.Status == statusBusy
	})
	downloadWithin(t, bob, id, data, 20*time.Second)
}

// The slot table on its own: a full table refuses a newcomer from the
// source that holds everything while its connections make progress,
// reclaims a slot idle for uploadReclaimIdle, and gives a newcomer from
// another source the slot of the source holding the most.
func TestUploadSlotTable(t *testing.T) {
	now := time.Unix(1000, 0)
	conn := func(ip string) net.Conn { return fakeConn{addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 1}} }
	u := newUploadSlots(3)
	var slots []*uploadSlot
	for range 3 {
		s, v := u.admit(conn("192.0.2.1"), now)
		if s == nil || v != nil {
			t.Fatal("a slot with room in the table was refused")
		}
		s.markBusy()
		slots = append(slots, s)
	}
	if s, _ := u.admit(conn("192.0.2.1"), now); s != nil {
		t.Fatal("a newcomer from the source holding every busy slot got one")
	}
	s, v := u.admit(conn("198.51.100.1"), now)
	if s == nil || v == nil {
		t.Fatal("a newcomer from another source got no slot from the source holding all 3")
	}
	// Now 2 + 1: neither source holds two more than the other.
	if s, _ := u.admit(conn("203.0.113.1"), now); s == nil {
		t.Fatal("a third source got no slot from one holding 2 against its 0")
	}
	// Table: 192.0.2.1 ×1, 198.51.100.1 ×1, 203.0.113.1 ×1, all idle
	// since now (admitted) except the busy one left.
	if s, _ := u.admit(conn("203.0.113.2"), now.Add(uploadReclaimIdle/2)); s != nil {
		t.Fatal("a slot was reclaimed before uploadReclaimIdle")
	}
	if s, v := u.admit(conn("203.0.113.2"), now.Add(uploadReclaimIdle)); s == nil || v == nil {
		t.Fatal("an idle slot was not reclaimed after uploadReclaimIdle")
	}
	for _, s := range slots {
		u.release(s) // released twice or after being reclaimed: harmless
		u.release(s)
	}
	if n := len(u.held); n > 3 {
		t.Fatalf("%d slots held, more than the table's 3", n)
	}
}

type fakeConn struct {
	net.Conn
	addr net.Addr
}

func (f fakeConn) RemoteAddr() net.Addr { return f.addr }
