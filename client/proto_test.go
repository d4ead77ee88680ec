package client

import (
	"runtime"
	"testing"

	"fileshare/transport"
)

// Every API request and reply that a master or client decodes from the
// network must survive arbitrary bytes: whatever decodes re-encodes and
// decodes again without error, and no input costs the decoder much more
// memory than its own length.
func FuzzDecodeAPI(f *testing.F) {
	seeds := []any{
		&RegisterRequest{WriteHeader: WriteHeader{PeerID: "p", RequestID: 9}, Files: []FileEntry{{ID: "ab", Name: "n", Size: 3, PieceSize: 16384}}},
		&LookupReply{Found: true, Holders: []HolderEntry{{PeerID: "p", Addr: "127.0.0.1:1", Name: "n"}}},
		&SearchRequest{ReadHeader: ReadHeader{Level: ReadStale}, Query: "a b", Limit: 10},
		&Status{ID: "m1", Members: []Member{{ID: "m1", Leader: true}}},
	}
	for _, r := range seeds {
		b, err := transport.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(msgpackBomb(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		defer func() {
			runtime.ReadMemStats(&after)
			if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(64*len(b)+4<<20); got > limit {
				t.Fatalf("decoding %d bytes allocated %d bytes (limit %d)", len(b), got, limit)
			}
		}()
		for _, v := range []func() any{
			func() any { return new(RegisterRequest) },
			func() any { return new(UnregisterRequest) },
			func() any { return new(PeerJoinRequest) },
			func() any { return new(HeartbeatRequest) },
			func() any { return new(LookupRequest) },
			func() any { return new(LookupReply) },
			func() any { return new(SearchRequest) },
			func() any { return new(SearchReply) },
			func() any { return new(PeersReply) },
			func() any { return new(Status) },
			func() any { return new(MemberJoinRequest) },
			func() any { return new(TransferLeaderReply) },
			func() any { return new(FindRequest) },
			func() any { return new(FindReply) },
		} {
			x := v()
			if transport.Unmarshal(b, x) != nil {
				continue
			}
			b2, err := transport.Marshal(x)
			if err != nil {
				t.Fatalf("%T: re-encode: %v", x, err)
			}
			if err := transport.Unmarshal(b2, v()); err != nil {
				t.Fatalf("%T: decode of re-encoded value: %v", x, err)
			}
		}
	})
}
