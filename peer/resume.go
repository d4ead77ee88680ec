package peer

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"math/bits"
	"os"
	"path/filepath"

	"fileshare/fsm"
)

// Files a download keeps next to its destination DEST until it completes:
// the data, written in place piece by piece, and the resume state.
const (
	// PartialSuffix names the in-progress data file, DEST + PartialSuffix.
	// The share-folder scanner never shares such files.
	PartialSuffix = ".fileshare-partial"
	// ResumeSuffix names the resume state, DEST + ResumeSuffix.
	ResumeSuffix = ".fileshare-resume"
)

// resumeState records which pieces of a partial download are verified and
// durably written. It is written only after the partial file was fsynced
// with every piece it marks (see partialFile.checkpoint), so after a crash
// every marked piece is on disk; the downloader still re-verifies marked
// pieces when it resumes (hashing is far cheaper than refetching), so a
// partial file damaged or edited in between costs only a refetch.
//
// Encoding (all integers big-endian):
//
//	magic      4 bytes  "FSRS"
//	version    1 byte   1
//	file ID    32 bytes raw Merkle root
//	size       8 bytes  file size
//	piece size 8 bytes
//	pieces     4 bytes  PieceCount(size, piece size)
//	bitmap     ceil(pieces/8) bytes; bit i%8 (LSB first) of byte i/8 = piece i
//	crc        4 bytes  CRC-32 (IEEE) of everything before it
type resumeState struct {
	ID        [32]byte
	Size      int64
	PieceSize int64
	Pieces    int
	Bitmap    []byte
}

var resumeMagic = [4]byte{'F', 'S', 'R', 'S'}

const (
	resumeVersion   = 1
	resumeHeaderLen = 4 + 1 + 32 + 8 + 8 + 4
)

func newResumeState(id [32]byte, size, pieceSize int64) *resumeState {
	n := PieceCount(size, pieceSize)
	return &resumeState{ID: id, Size: size, PieceSize: pieceSize, Pieces: n, Bitmap: make([]byte, (n+7)/8)}
}

func (s *resumeState) has(i int) bool { return s.Bitmap[i/8]&(1<<(i%8)) != 0 }
func (s *resumeState) set(i int)      { s.Bitmap[i/8] |= 1 << (i % 8) }
func (s *resumeState) clear(i int)    { s.Bitmap[i/8] &^= 1 << (i % 8) }

// count returns how many pieces are marked.
func (s *resumeState) count() int {
	n := 0
	for _, b := range s.Bitmap {
		n += bits.OnesCount8(b)
	}
	return n
}

func (s *resumeState) encode() []byte {
	b := make([]byte, 0, resumeHeaderLen+len(s.Bitmap)+4)
	b = append(b, resumeMagic[:]...)
	b = append(b, resumeVersion)
	b = append(b, s.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(s.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(s.PieceSize))
	b = binary.BigEndian.AppendUint32(b, uint32(s.Pieces))
	b = append(b, s.Bitmap...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

// decodeResumeState parses and validates a resume state: magic, version,
// checksum, a valid piece size, a piece count matching size and piece size
// (at most MaxPieces), a bitmap of exactly the right length with no bit set
// past the last piece.
func decodeResumeState(b []byte) (*resumeState, error) {
	if len(b) < resumeHeaderLen+4 {
		return nil, fmt.Errorf("resume state: %d bytes is too short", len(b))
	}
	if [4]byte(b[:4]) != resumeMagic {
		return nil, fmt.Errorf("resume state: bad magic %q", b[:4])
	}
	if b[4] != resumeVersion {
		return nil, fmt.Errorf("resume state: version %d, want %d", b[4], resumeVersion)
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return nil, fmt.Errorf("resume state: checksum mismatch")
	}
	s := &resumeState{}
	copy(s.ID[:], b[5:37])
	size := binary.BigEndian.Uint64(b[37:45])
	ps := binary.BigEndian.Uint64(b[45:53])
	n := binary.BigEndian.Uint32(b[53:57])
	if size > 1<<62 {
		return nil, fmt.Errorf("resume state: size %d out of range", size)
	}
	s.Size, s.PieceSize = int64(size), int64(ps)
	meta := fsm.FileMeta{ID: fsm.FileID(hex.EncodeToString(s.ID[:])), Name: "x", Size: s.Size, PieceSize: s.PieceSize}
	if err := meta.Validate(); err != nil {
		return nil, fmt.Errorf("resume state: %w", err)
	}
	want := PieceCount(s.Size, s.PieceSize)
	if want > MaxPieces || int(n) != want {
		return nil, fmt.Errorf("resume state: %d pieces, want %d for %d bytes in pieces of %d (limit %d)", n, want, s.Size, s.PieceSize, MaxPieces)
	}
	s.Pieces = want
	bm := body[resumeHeaderLen:]
	if len(bm) != (want+7)/8 {
		return nil, fmt.Errorf("resume state: bitmap of %d bytes, want %d", len(bm), (want+7)/8)
	}
	if r := want % 8; r != 0 && bm[len(bm)-1]>>r != 0 {
		return nil, fmt.Errorf("resume state: bits set past the last piece")
	}
	s.Bitmap = append([]byte(nil), bm...)
	return s, nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, fsyncs it and renames it over path, so a crash leaves either
// the old content or the new, never a torn file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return nil
}

// syncDir fsyncs a directory so a rename in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
