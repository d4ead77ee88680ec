package peer

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math"

	"fileshare/fsm"
)

// Piece sizing. A piece is the unit of transfer, of verification and of
// resume; the choice trades per-piece overhead (one request, one hash, one
// bitmap bit) against parallelism and the cost of refetching one bad piece.
const (
	// DefaultPieceSize is the piece size of every file up to
	// DefaultPieceSize*TargetPieces bytes (1 GiB): 256 KiB. Messages of
	// 64 KiB–1 MiB move 2–3× more bytes per CPU second than 16 KiB ones;
	// IPFS also uses 256 KiB blocks. A small file still gets one piece of
	// this nominal size (its only piece is short).
	DefaultPieceSize = 256 << 10
	// TargetPieces is the piece count above which the piece size doubles
	// (up to fsm.MaxPieceSize): larger files get larger pieces, so a file
	// has at most 4096 pieces up to 64 GiB, its piece-hash list is at most
	// 128 KiB (one round trip) and its resume bitmap at most 512 bytes.
	TargetPieces = 4096
	// MaxPieces is the most pieces a file may have: with 16 MiB pieces,
	// files up to 4 TiB. It bounds the piece-hash list a holder may send
	// (MaxPieces*32 bytes = 8 MiB).
	MaxPieces = 1 << 18
)

// PieceSizeFor returns the piece size this package uses for a file of size
// bytes: DefaultPieceSize, doubled while the file would have more than
// TargetPieces pieces, capped at fsm.MaxPieceSize. The result is always a
// power of two in [fsm.MinPieceSize, fsm.MaxPieceSize]. Downloaders never
// call it: they use the piece size the index stores for the file.
func PieceSizeFor(size int64) int64 {
	ps := int64(DefaultPieceSize)
	for ps < fsm.MaxPieceSize && size > ps*TargetPieces {
		ps *= 2
	}
	return ps
}

// PieceCount returns how many pieces a file of size bytes has with the given
// piece size: ceil(size/pieceSize), and 1 for an empty file (whose one piece
// is empty). pieceSize must be positive.
func PieceCount(size, pieceSize int64) int {
	if size <= 0 {
		return 1
	}
	// size/pieceSize first: size+pieceSize-1 would overflow near the
	// largest int64, and the index describes files a stranger registered.
	n := size / pieceSize
	if size%pieceSize != 0 {
		n++
	}
	return int(min(n, math.MaxInt32))
}

// pieceLen returns the length of piece i of a file: pieceSize for every piece
// but the last, which holds the remainder.
func pieceLen(size, pieceSize int64, i int) int64 {
	off := int64(i) * pieceSize
	return min(pieceSize, size-off)
}

// MerkleRoot returns the root of the SHA-256 Merkle tree over a file's
// piece hashes. A file's ID commits to this root (see FileIDOf).
//
// The tree, in the style of BitTorrent v2:
//
//   - leaf i is SHA-256(piece i), for the n = PieceCount(size, pieceSize)
//     pieces in file order; the last piece may be short, and an empty file
//     has exactly one piece, the empty string, so its leaf (and root) is
//     SHA-256("") = e3b0c442…b855;
//   - the leaves are padded on the right up to the next power of two with
//     leaves of 32 zero bytes (zero values, not hashes of anything);
//   - an inner node is SHA-256(left || right), 64 bytes in;
//   - a tree of one leaf has that leaf as its root.
//
// So for pieces a, b, c: root(a) = H(a); root(a, b) = H(H(a)||H(b));
// root(a, b, c) = H( H(H(a)||H(b)) || H(H(c)||0³²) ).
//
// MerkleRoot panics if leaves is empty: every file has at least one piece.
func MerkleRoot(leaves [][32]byte) [32]byte {
	if len(leaves) == 0 {
		panic("peer: MerkleRoot of no leaves")
	}
	width := 1
	for width < len(leaves) {
		width *= 2
	}
	level := make([][32]byte, width) // zero-padded
	copy(level, leaves)
	var buf [64]byte
	for len(level) > 1 {
		next := level[:len(level)/2]
		for i := range next {
			copy(buf[:32], level[2*i][:])
			copy(buf[32:], level[2*i+1][:])
			next[i] = sha256.Sum256(buf[:])
		}
		level = next
	}
	return level[0]
}

// fileIDDomain starts the input of every file ID, so that no other
// SHA-256 in the system (a piece, a Merkle node) can pass for one.
const fileIDDomain = "fileshare file id v2\x00"

// FileIDOf returns the file ID of a file of size bytes cut into pieces of
// pieceSize whose hashes are leaves: the lowercase hex of
//
//	SHA-256("fileshare file id v2\x00" || size || pieceSize || MerkleRoot(leaves))
//
// with size and pieceSize as 8-byte big-endian integers. The ID commits
// to the size and piece size as well as the content, so nobody can
// register a public file's ID with a wrong size or piece size and so
// block its real seeders; and a downloader that checks a holder's hash
// list against the ID has fixed the tree's shape before it trusts a byte.
func FileIDOf(size, pieceSize int64, leaves [][32]byte) string {
	root := MerkleRoot(leaves)
	var b [len(fileIDDomain) + 16 + 32]byte
	n := copy(b[:], fileIDDomain)
	binary.BigEndian.PutUint64(b[n:], uint64(size))
	binary.BigEndian.PutUint64(b[n+8:], uint64(pieceSize))
	copy(b[n+16:], root[:])
	id := sha256.Sum256(b[:])
	return hex.EncodeToString(id[:])
}

// HashPieces reads size bytes from r and returns the SHA-256 of each piece of
// pieceSize bytes. It reads sequentially, checks ctx between pieces, and
// fails if r ends early (the file shrank while being hashed).
func HashPieces(ctx context.Context, r io.Reader, size, pieceSize int64) ([][32]byte, error) {
	n := PieceCount(size, pieceSize)
	if n > MaxPieces {
		return nil, fmt.Errorf("%w: %d bytes would need %d pieces of %d bytes, limit %d", ErrFileTooLarge, size, n, pieceSize, MaxPieces)
	}
	out := make([][32]byte, n)
	buf := make([]byte, min(pieceSize, max(size, 1)))
	h := sha256.New()
	for i := range n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l := pieceLen(size, pieceSize, i)
		if _, err := io.ReadFull(r, buf[:l]); err != nil {
			return nil, fmt.Errorf("read piece %d: %w", i, err)
		}
		h.Reset()
		h.Write(buf[:l])
		h.Sum(out[i][:0])
	}
	return out, nil
}

// FileHashes is a file's content identity: its ID, size, piece size and
// piece hashes.
type FileHashes struct {
	ID        string
	Size      int64
	PieceSize int64
	Pieces    [][32]byte
}

// HashFile hashes the file at r (size bytes, read sequentially) with the
// piece size PieceSizeFor(size).
func HashFile(ctx context.Context, r io.Reader, size int64) (FileHashes, error) {
	ps := PieceSizeFor(size)
	pieces, err := HashPieces(ctx, r, size, ps)
	if err != nil {
		return FileHashes{}, err
	}
	return FileHashes{ID: FileIDOf(size, ps, pieces), Size: size, PieceSize: ps, Pieces: pieces}, nil
}
