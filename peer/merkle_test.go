package peer

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"

	"fileshare/fsm"
)

// The vectors below were computed outside Go, with Python's hashlib:
//
//	H = lambda b: hashlib.sha256(b).digest()
//	H(b'')                                            # empty file
//	H(H(b'a') + H(b'b'))                              # 2 leaves
//	H(H(H(b'a') + H(b'b')) + H(H(b'c') + bytes(32)))  # 3 leaves, one zero pad
func TestMerkleRootMatchesHandComputedVectors(t *testing.T) {
	h := func(s string) [32]byte { return sha256.Sum256([]byte(s)) }
	for _, tc := range []struct {
		name   string
		leaves [][32]byte
		want   string
	}{
		{"one leaf is its own root", [][32]byte{h("abc")}, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"two leaves", [][32]byte{h("a"), h("b")}, "e5a01fee14e0ed5c48714f22180f25ad8365b53f9779f79dc4a3d7e93963f94a"},
		{"three leaves padded with a zero leaf", [][32]byte{h("a"), h("b"), h("c")}, "d0a664079d491a97357efa1ce1eab5aeb566adef78a2b910e8d13e901e192832"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FileIDOf(tc.leaves); got != tc.want {
				t.Fatalf("root = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestFileIDOfContent(t *testing.T) {
	a, b, c := strings.Repeat("a", 16384), strings.Repeat("b", 16384), "ccccc"
	for _, tc := range []struct {
		name    string
		content string
		want    string
		pieces  int
	}{
		{"empty file has one empty piece", "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 1},
		{"two full pieces", a + b, "91ba1b58ae584fde9a26d7f74fb955d515d1c576c1c7e865a0bac16d81fa10b3", 2},
		{"two full pieces and a short one", a + b + c, "ad5501804de246cd8ff589870cb4295d03296d356797f48a42ab08f0da9d3efb", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := int64(len(tc.content))
			hs, err := HashPieces(t.Context(), strings.NewReader(tc.content), size, 16384)
			if err != nil {
				t.Fatal(err)
			}
			if len(hs) != tc.pieces {
				t.Fatalf("%d pieces, want %d", len(hs), tc.pieces)
			}
			if got := FileIDOf(hs); got != tc.want {
				t.Fatalf("file ID = %s, want %s", got, tc.want)
			}
			if err := fsm.FileID(FileIDOf(hs)).Validate(); err != nil {
				t.Fatalf("file ID is not a valid fsm.FileID: %v", err)
			}
		})
	}
}

func TestHashPiecesFailsWhenTheFileShrank(t *testing.T) {
	if _, err := HashPieces(t.Context(), bytes.NewReader(make([]byte, 100)), 200, 16384); err == nil {
		t.Fatal("hashing 200 bytes from a 100-byte reader succeeded, want an error")
	}
}

func TestPieceSizeFor(t *testing.T) {
	const KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
	for _, tc := range []struct {
		size int64
		want int64
	}{
		{0, 256 * KiB},
		{1, 256 * KiB},
		{64 * MiB, 256 * KiB},
		{1 * GiB, 256 * KiB}, // exactly 4096 pieces
		{1*GiB + 1, 512 * KiB},
		{2 * GiB, 512 * KiB},
		{64 * GiB, 16 * MiB},
		{1 << 40, 16 * MiB}, // capped: more than 4096 pieces
	} {
		got := PieceSizeFor(tc.size)
		if got != tc.want {
			t.Errorf("PieceSizeFor(%d) = %d, want %d", tc.size, got, tc.want)
		}
		if got < fsm.MinPieceSize || got > fsm.MaxPieceSize || got&(got-1) != 0 {
			t.Errorf("PieceSizeFor(%d) = %d is not a power of two in [16 KiB, 16 MiB]", tc.size, got)
		}
		if n := PieceCount(tc.size, got); tc.size <= 64*GiB && n > TargetPieces {
			t.Errorf("a %d-byte file gets %d pieces, more than %d", tc.size, n, TargetPieces)
		}
	}
}

func TestPieceCountAndLength(t *testing.T) {
	for _, tc := range []struct {
		size, ps int64
		n        int
		last     int64
	}{
		{0, 16384, 1, 0},
		{1, 16384, 1, 1},
		{16384, 16384, 1, 16384},
		{16385, 16384, 2, 1},
	} {
		if n := PieceCount(tc.size, tc.ps); n != tc.n {
			t.Errorf("PieceCount(%d, %d) = %d, want %d", tc.size, tc.ps, n, tc.n)
		}
		if l := pieceLen(tc.size, tc.ps, tc.n-1); l != tc.last {
			t.Errorf("last piece of %d bytes is %d bytes, want %d", tc.size, l, tc.last)
		}
	}
}
