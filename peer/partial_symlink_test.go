package peer

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A partial file or resume state planted as a symbolic link is refused:
// the download neither truncates nor writes the file it points to.
func TestPartialFilesNeverFollowSymlinks(t *testing.T) {
	for _, suffix := range []string{PartialSuffix, ResumeSuffix} {
		t.Run(suffix, func(t *testing.T) {
			dir := t.TempDir()
			victim := filepath.Join(t.TempDir(), "victim")
			want := []byte("a file the download must not touch")
			if err := os.WriteFile(victim, want, 0o644); err != nil {
				t.Fatal(err)
			}
			dest := filepath.Join(dir, "download")
			if err := os.Symlink(victim, dest+suffix); err != nil {
				t.Fatal(err)
			}
			pf, _, err := openPartial(dest, [32]byte{7}, 4<<20, DefaultPieceSize, testLogger(t))
			if pf != nil {
				pf.close()
			}
			if !errors.Is(err, ErrPartialIsSymlink) {
				t.Errorf("openPartial with %s a symlink: %v, want ErrPartialIsSymlink", suffix, err)
			}
			got, rerr := os.ReadFile(victim)
			if rerr != nil || string(got) != string(want) {
				t.Errorf("the symlink's target became %q (%v), want it untouched", got, rerr)
			}
		})
	}
}
