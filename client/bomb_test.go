package client

import (
	"bytes"
	"runtime"
	"testing"

	"fileshare/transport"
)

// msgpackBomb is a RegisterRequest whose Files array announces 2^32-1
// elements (array 32) but carries none, as a stranger might send.
func msgpackBomb(t testing.TB) []byte {
	t.Helper()
	good, err := transport.Marshal(&RegisterRequest{WriteHeader: WriteHeader{PeerID: "p", RequestID: 1}, Files: []FileEntry{}})
	if err != nil {
		t.Fatal(err)
	}
	// The empty Files array is the byte 0x90 right after the key "Files".
	i := bytes.Index(good, append([]byte{0xa5}, "Files"...))
	if i < 0 || good[i+6] != 0x90 {
		t.Fatalf("cannot find the Files array in %x", good)
	}
	bomb := append([]byte{}, good[:i+6]...)
	bomb = append(bomb, 0xdd, 0xff, 0xff, 0xff, 0xff)
	return append(bomb, good[i+7:]...)
}

// A message that announces a huge container costs the decoder no more
// than the bytes it carries, and is refused.
func TestAnAllocationBombIsRefusedCheaply(t *testing.T) {
	bomb := msgpackBomb(t)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var req RegisterRequest
	err := transport.Unmarshal(bomb, &req)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatalf("a %d-byte message announcing 4 billion files decoded into %d files", len(bomb), len(req.Files))
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("decoding a %d-byte bomb allocated %d bytes", len(bomb), got)
	}
}
