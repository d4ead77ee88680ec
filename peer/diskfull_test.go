package peer

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"fileshare/internal/testenv"
)

// requireRoot skips a test that needs root, or fails it when
// FILESHARE_REQUIRE_ROOT_TESTS=1 (CI runs as root and sets it, so the
// test cannot silently stop running there).
func requireRoot(t *testing.T, what string) {
	t.Helper()
	testenv.NeedRoot(t, what)
}

// A download onto a disk that fills up stops with ErrDiskFull (and
// ENOSPC), naming the path and saying what to do; the resume state marks
// only pieces that are on disk and verify; once there is room the same
// download continues from them and fetches only the rest. The disk is a
// real 3 MiB tmpfs, grown afterwards with a remount.
func TestDownloadOntoAFullDiskStopsKeepsItsPiecesAndResumes(t *testing.T) {
	requireRoot(t, "mounting a small tmpfs")
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	c := newTestCluster(t, nil)
	data := randomBytes(51, 8*mib)
	id := idOf(t, data)
	startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"f.bin": data}), nil)
	carol := startPeer(t, c, "carol", "", nil)
	waitHolders(t, c.client(), id, 1)

	dest := filepath.Join(mnt, "f.bin")
	_, err := carol.Download(t.Context(), id, dest, DownloadOptions{StallTimeout: 10 * time.Second})
	if !errors.Is(err, ErrDiskFull) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("download onto a full disk: err = %v, want ErrDiskFull wrapping ENOSPC", err)
	}
	for _, want := range []string{dest + PartialSuffix, "no space left on device", "free at least", "run the same download again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %q, want it to say %q", err, want)
		}
	}
	b, err := os.ReadFile(dest + ResumeSuffix)
	if err != nil {
		t.Fatalf("no resume state after the disk filled: %v", err)
	}
	st, err := decodeResumeState(b)
	if err != nil {
		t.Fatal(err)
	}
	saved := st.count()
	if saved == 0 || saved == st.Pieces {
		t.Fatalf("resume state marks %d of %d pieces, want some but not all", saved, st.Pieces)
	}
	part, err := os.ReadFile(dest + PartialSuffix)
	if err != nil {
		t.Fatal(err)
	}
	for i := range st.Pieces {
		if !st.has(i) {
			continue
		}
		off := int64(i) * DefaultPieceSize
		if !bytes.Equal(part[off:off+DefaultPieceSize], data[off:off+DefaultPieceSize]) {
			t.Fatalf("resume state marks piece %d, whose bytes on disk are wrong", i)
		}
	}

	if out, err := exec.Command("mount", "-o", "remount,size=32m", mnt).CombinedOutput(); err != nil {
		t.Fatalf("grow the tmpfs: %v: %s", err, out)
	}
	res, err := carol.Download(t.Context(), id, dest, DownloadOptions{})
	if err != nil {
		t.Fatalf("download once there is room: %v", err)
	}
	if res.Resumed != saved || res.Fetched != res.Pieces-saved {
		t.Fatalf("resumed %d and fetched %d of %d pieces; want %d resumed and the rest fetched", res.Resumed, res.Fetched, res.Pieces, saved)
	}
	if sha256File(t, dest) != sha256.Sum256(data) {
		t.Fatal("the resumed file differs from the original")
	}
}

// A write failure of the disk (injected: ENOSPC from the third piece on)
// is ErrDiskFull and errWrite, and the piece is not marked verified.
func TestWritePieceReportsAFullDisk(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "f.bin")
	size := int64(4 * DefaultPieceSize)
	pf, _, err := openPartial(dest, [32]byte{1}, size, DefaultPieceSize, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pf.close()
	real := pf.writeAt
	pf.writeAt = func(b []byte, off int64) (int, error) {
		if off >= 2*DefaultPieceSize {
			n, _ := real(b[:100], off)
			return n, &os.PathError{Op: "write", Path: pf.path, Err: syscall.ENOSPC}
		}
		return real(b, off)
	}
	piece := bytes.Repeat([]byte{3}, DefaultPieceSize)
	if err := pf.writePiece(1, piece); err != nil {
		t.Fatalf("piece 1: %v", err)
	}
	err = pf.writePiece(2, piece)
	if !errors.Is(err, ErrDiskFull) || !errors.Is(err, errWrite) || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), pf.path) {
		t.Fatalf("piece 2 on a full disk: err = %v, want ErrDiskFull, errWrite and ENOSPC naming %s", err, pf.path)
	}
}

// A damaged resume state (flipped bytes, truncated) is never trusted: the
// partial file's pieces are all re-verified instead, the good ones kept and
// the others (a wrong piece, a hole) left to fetch.
func TestDamagedResumeStateIsNotTrustedButGoodPiecesAreKept(t *testing.T) {
	data := randomBytes(61, 4*DefaultPieceSize)
	var hashes [][32]byte
	for i := range 4 {
		hashes = append(hashes, sha256.Sum256(data[i*DefaultPieceSize:(i+1)*DefaultPieceSize]))
	}
	root := rootOf(t, idOf(t, data))
	size := int64(len(data))
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"flipped byte in the bitmap", func(b []byte) []byte { b[resumeHeaderLen] ^= 0x0f; return b }},
		{"flipped byte in the header", func(b []byte) []byte { b[40] ^= 1; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-3] }},
		{"empty", func([]byte) []byte { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "f.bin")
			part := append([]byte(nil), data...)
			copy(part[DefaultPieceSize:], bytes.Repeat([]byte{0xee}, 100)) // piece 1 wrong
			clear(part[3*DefaultPieceSize:])                               // piece 3 a hole
			if err := os.WriteFile(dest+PartialSuffix, part, 0o644); err != nil {
				t.Fatal(err)
			}
			st := newResumeState(root, size, DefaultPieceSize)
			st.set(0)
			st.set(1) // marked, but its bytes are wrong
			if err := os.WriteFile(dest+ResumeSuffix, tc.damage(st.encode()), 0o644); err != nil {
				t.Fatal(err)
			}
			pf, got, err := openPartial(dest, root, size, DefaultPieceSize, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer pf.close()
			if err := pf.reverify(got, hashes); err != nil {
				t.Fatal(err)
			}
			for i, want := range []bool{true, false, true, false} {
				if got.has(i) != want {
					t.Errorf("piece %d kept = %v, want %v", i, got.has(i), want)
				}
			}
		})
	}
}
