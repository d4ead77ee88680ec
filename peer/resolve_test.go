package peer

import (
	"errors"
	"strings"
	"testing"

	"fileshare/client"
	"fileshare/fsm"
)

// A unique prefix of a file ID (at least 8 hex digits) resolves to that
// file; a prefix several IDs share, or one that fits one file by ID and
// another by name, is ambiguous and lists every candidate; a prefix of
// nothing is not found; a prefix shorter than 8 digits is only a name.
func TestResolveByIDPrefix(t *testing.T) {
	c := newTestCluster(t, nil)
	mc := c.client()
	id, err := client.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mc.Join(t.Context(), id, "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	fileID := func(prefix, fill string) string {
		return prefix + strings.Repeat(fill, fsm.FileIDLen-len(prefix))
	}
	lone := fileID("1234567890", "a")
	twinA, twinB := fileID("abcdef01", "1"), fileID("abcdef01", "2")
	decoy := fileID("5555", "5") // named like another file's ID prefix
	files := []client.FileEntry{
		{ID: lone, Name: "lone.txt", Size: 1, PieceSize: 1 << 18},
		{ID: twinA, Name: "twin-a", Size: 1, PieceSize: 1 << 18},
		{ID: twinB, Name: "twin-b", Size: 1, PieceSize: 1 << 18},
		{ID: decoy, Name: lone[:12], Size: 1, PieceSize: 1 << 18},
	}
	if _, err := mc.Register(t.Context(), id, files); err != nil {
		t.Fatal(err)
	}

	for _, ref := range []string{lone[:8], lone[:20], lone[:63]} {
		if f, err := Resolve(t.Context(), mc, ref); err != nil || f.ID != lone || f.Name != "lone.txt" {
			t.Errorf("Resolve(%s) = %s %q, %v; want %s lone.txt", ref, f.ID, f.Name, err, lone)
		}
	}
	var amb *AmbiguousError
	_, err = Resolve(t.Context(), mc, "abcdef01")
	if !errors.As(err, &amb) || len(amb.Candidates) != 2 || amb.Candidates[0].ID != twinA || amb.Candidates[1].ID != twinB || amb.Named {
		t.Fatalf("Resolve(abcdef01) = %v, want an AmbiguousError listing twin-a and twin-b", err)
	}
	// lone[:12] is both a prefix of lone's ID and the decoy's name.
	if _, err := Resolve(t.Context(), mc, lone[:12]); !errors.As(err, &amb) || len(amb.Candidates) != 2 {
		t.Fatalf("Resolve(%s) = %v, want an AmbiguousError listing the file it prefixes and the file named so", lone[:12], err)
	}
	if _, err := Resolve(t.Context(), mc, "fedcba98"); !errors.Is(err, ErrFileNotFound) || !strings.Contains(err.Error(), "no file ID starts with") {
		t.Fatalf("Resolve of a prefix of nothing = %v, want ErrFileNotFound saying no ID starts with it", err)
	}
	if _, err := Resolve(t.Context(), mc, twinA[:7]); !errors.Is(err, ErrFileNotFound) {
		t.Fatalf("Resolve of a 7-digit prefix = %v, want ErrFileNotFound (too short to be a prefix)", err)
	}
	// The index refuses malformed prefixes with ErrInvalid.
	if _, err := mc.Find(t.Context(), "ABCDEF01", 0, client.ReadLinearizable); !errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("Find(ABCDEF01) = %v, want fsm.ErrInvalid", err)
	}
	if r, err := mc.Find(t.Context(), "abcdef01", 1, client.ReadLinearizable); err != nil || r.Total != 2 || len(r.Files) != 1 || r.Files[0].ID != twinA {
		t.Fatalf("Find(abcdef01, limit 1) = %+v, %v; want twin-a of 2", r, err)
	}
}
