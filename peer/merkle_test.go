package peer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"fileshare/fsm"
)

// The vectors below were computed outside Go, with Python's hashlib:
//
//	H = lambda b: hashlib.sha256(b).digest()
//	H(H(b'a') + H(b'b'))                              # 2 leaves
//	H(H(H(b'a') + H(b'b')) + H(H(b'c') + bytes(32)))  # 3 leaves, one zero pad
//	fid = lambda size, ps, root: hashlib.sha256(b'fileshare file id v2\x00' + struct.pack('>QQ', size, ps) + root).hexdigest()
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
			if got := MerkleRoot(tc.leaves); hex.EncodeToString(got[:]) != tc.want {
				t.Fatalf("root = %x, want %s", got, tc.want)
			}
		})
	}
}

// A file ID commits to the content, the size and the piece size: the same
// bytes cut differently have another ID.
func TestFileIDOfContent(t *testing.T) {
	a, b, c := strings.Repeat("a", 16384), strings.Repeat("b", 16384), "ccccc"
	for _, tc := range []struct {
		name      string
		content   string
		pieceSize int64
		want      string
		pieces    int
	}{
		{"empty file has one empty piece", "", 16384, "d2043df3d6684faaf666038e6daab1eda462eda66b0d4a08eadd470c5670bb46", 1},
		{"two full pieces", a + b, 16384, "8cbae2032407bd3c94954c81e6c572ca4ffa4666cf0bc2fb5cafbf48c2d76730", 2},
		{"two full pieces and a short one", a + b + c, 16384, "0faf7886dab6b8843ce18647a4875ee349b263d854fa31ced1f7ad61d29615df", 3},
		{"the same bytes in larger pieces", a + b + c, 32768, "3371096d6f93283492cc3c996f62cc41abcfb9901ed5cbe0267df5d13495a3aa", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := int64(len(tc.content))
			hs, err := HashPieces(t.Context(), strings.NewReader(tc.content), size, tc.pieceSize)
			if err != nil {
				t.Fatal(err)
			}
			if len(hs) != tc.pieces {
				t.Fatalf("%d pieces, want %d", len(hs), tc.pieces)
			}
			if got := FileIDOf(size, tc.pieceSize, hs); got != tc.want {
				t.Fatalf("file ID = %s, want %s", got, tc.want)
			}
			if FileIDOf(size+1, tc.pieceSize, hs) == tc.want {
				t.Fatal("the ID does not commit to the size")
			}
			if err := fsm.FileID(FileIDOf(size, tc.pieceSize, hs)).Validate(); err != nil {
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
