package jepsenlike

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// corruptFiles are the files a corrupt fault may damage: the Raft log and
// stable store (raft.db, bolt), and the two files of the newest snapshot
// (hashicorp/raft's file snapshot store: snapshots/TERM-INDEX-MS/).
var corruptFiles = []string{"raft.db", "state.bin", "meta.json"}

// errNothingToDamage means a master's data dir has no file to damage.
var errNothingToDamage = errors.New("nothing to damage")

// damage carries out a corrupt fault's variant ("FILE/HOW", see
// Fault.Variant) on a stopped master's data dir: it flips the bytes of 1–4
// runs of 1–16 bytes at offsets drawn from salt, or truncates the file to
// a length drawn from salt (shorter than it was). A snapshot file is
// taken from the newest snapshot; with no snapshot, raft.db is damaged
// instead and what says so. It returns the damaged path and what was
// done, in words.
func damage(dataDir, variant string, salt uint64) (path, what string, err error) {
	file, how, ok := strings.Cut(variant, "/")
	if !ok || !slices.Contains(corruptFiles, file) || (how != "flip" && how != "truncate") {
		return "", "", fmt.Errorf("corrupt fault variant %q: want FILE/flip or FILE/truncate with FILE one of %s", variant, strings.Join(corruptFiles, ", "))
	}
	var fallback string
	path = filepath.Join(dataDir, file)
	if file != "raft.db" {
		snap, err := newestSnapshot(filepath.Join(dataDir, "snapshots"))
		if err != nil {
			fallback = fmt.Sprintf(" (no snapshot to damage: %v; raft.db instead)", err)
			path = filepath.Join(dataDir, "raft.db")
		} else {
			path = filepath.Join(snap, file)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		return path, "", fmt.Errorf("%w: %v", errNothingToDamage, err)
	}
	if st.Size() == 0 {
		return path, "", fmt.Errorf("%w: %s is empty", errNothingToDamage, path)
	}
	rng := rand.New(rand.NewPCG(salt, 0x64616d616765)) // "damage"
	rel, _ := filepath.Rel(dataDir, path)
	if how == "truncate" {
		n := rng.Int64N(st.Size())
		if err := os.Truncate(path, n); err != nil {
			return path, "", fmt.Errorf("truncate %s: %w", path, err)
		}
		return path, fmt.Sprintf("truncated %s from %d to %d bytes%s", rel, st.Size(), n, fallback), nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return path, "", fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	var runs []string
	for range 1 + rng.IntN(4) {
		off := rng.Int64N(st.Size())
		buf := make([]byte, min(int64(1+rng.IntN(16)), st.Size()-off))
		if _, err := f.ReadAt(buf, off); err != nil {
			return path, "", fmt.Errorf("read %s: %w", path, err)
		}
		for i := range buf {
			buf[i] ^= byte(1 + rng.IntN(255)) // never 0: every byte changes
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			return path, "", fmt.Errorf("write %s: %w", path, err)
		}
		runs = append(runs, fmt.Sprintf("%d@%d", len(buf), off))
	}
	if err := f.Sync(); err != nil {
		return path, "", fmt.Errorf("sync %s: %w", path, err)
	}
	return path, fmt.Sprintf("flipped bytes of %s (%d bytes; len@offset %s)%s", rel, st.Size(), strings.Join(runs, " "), fallback), nil
}

// newestSnapshot returns the directory of the newest complete snapshot
// under dir: hashicorp/raft names them TERM-INDEX-MILLIS and gives an
// unfinished one a ".tmp" suffix.
func newestSnapshot(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	type snap struct {
		name string
		key  [3]uint64
	}
	var snaps []snap
	for _, e := range ents {
		parts := strings.Split(e.Name(), "-")
		if !e.IsDir() || len(parts) != 3 {
			continue
		}
		var s snap
		s.name = e.Name()
		good := true
		for i, p := range parts {
			v, err := strconv.ParseUint(p, 10, 64)
			good = good && err == nil
			s.key[i] = v
		}
		if good {
			snaps = append(snaps, s)
		}
	}
	if len(snaps) == 0 {
		return "", fmt.Errorf("no snapshot in %s", dir)
	}
	best := slices.MaxFunc(snaps, func(a, b snap) int { return slices.Compare(a.key[:], b.key[:]) })
	return filepath.Join(dir, best.name), nil
}

// writeClockOffset sets a master's clock offset for the masters'
// FILESHARE_UNSAFE_CLOCK_FILE hook: one signed Go duration ("+30s",
// "-2m0s", "0s"). It writes a new file and renames it over the old one, so
// the master never reads half a value, and the mtime changes, which is
// what the master watches.
func writeClockOffset(path string, d time.Duration) error {
	s := d.String()
	if d > 0 {
		s = "+" + s
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s+"\n"), 0o644); err != nil {
		return fmt.Errorf("write the clock offset: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write the clock offset: %w", err)
	}
	return nil
}
