package peer

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rewriteKeepingStat overwrites the file at path with b (same length) and
// restores its mtime, so that size and mtime say nothing changed.
func rewriteKeepingStat(t *testing.T, path string, b []byte) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != st.Size() {
		t.Fatalf("rewrite of %s: %d bytes, want %d", path, len(b), st.Size())
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
}

func rootOf(t *testing.T, id string) [32]byte {
	t.Helper()
	raw, err := hex.DecodeString(id)
	if err != nil {
		t.Fatal(err)
	}
	return [32]byte(raw)
}

// A holder whose file changed on disk after it registered it never sends
// the changed bytes as the registered file: a piece that no longer hashes
// to its registered hash (size and mtime unchanged) and a file whose size
// changed both get statusChanged, and the holder rehashes the file and
// re-registers it under its new ID, dropping the old one.
func TestChangedFileIsAnsweredAsChangedAndReregistered(t *testing.T) {
	c := newTestCluster(t, nil)
	old := randomBytes(21, 3*DefaultPieceSize)
	share := shareFolder(t, map[string][]byte{"f.bin": old, "g.bin": randomBytes(22, 1000)})
	// No periodic rescan: only the piece server's discovery can make the
	// peer notice.
	alice := startPeer(t, c, "alice", share, func(cfg *Config) { cfg.RescanInterval = time.Hour })
	if err := alice.Rescan(t.Context()); err != nil {
		t.Fatal(err)
	}
	mc := c.client()
	oldID := idOf(t, old)
	waitHolders(t, mc, oldID, 1)

	changed := randomBytes(23, len(old))
	rewriteKeepingStat(t, filepath.Join(share, "f.bin"), changed)
	st, body := rawRequest(t, alice.Addr(), pieceRequest{Op: opPiece, File: rootOf(t, oldID), Index: 1})
	if st != statusChanged || !strings.Contains(body, "changed on disk") {
		t.Fatalf("piece of a file rewritten in place: status %d %q, want statusChanged (%d)", st, body, statusChanged)
	}
	newID := idOf(t, changed)
	waitHolders(t, mc, newID, 1)
	waitHolders(t, mc, oldID, 0)

	// A size change is caught before any read.
	gID := idOf(t, randomBytes(22, 1000))
	if err := os.WriteFile(filepath.Join(share, "g.bin"), randomBytes(24, 2000), 0o644); err != nil {
		t.Fatal(err)
	}
	if st, body := rawRequest(t, alice.Addr(), pieceRequest{Op: opPiece, File: rootOf(t, gID), Index: 0}); st != statusChanged {
		t.Fatalf("piece of a file whose size changed: status %d %q, want statusChanged", st, body)
	}
	waitHolders(t, mc, idOf(t, randomBytes(24, 2000)), 1)
}

// A downloader whose only holder's copy changed since it registered the
// file ends with ErrHoldersChanged, saying so and to search again; the
// holder is not called a liar (ErrNoHonestHolder) nor unreachable
// (ErrNoHolders), and no byte of the changed copy is kept.
func TestDownloadFromAChangedHolderSaysTheCopiesChanged(t *testing.T) {
	c := newTestCluster(t, nil)
	old := randomBytes(31, 4*DefaultPieceSize+7)
	share := shareFolder(t, map[string][]byte{"f.bin": old})
	alice := startPeer(t, c, "alice", share, func(cfg *Config) { cfg.RescanInterval = time.Hour })
	if err := alice.Rescan(t.Context()); err != nil {
		t.Fatal(err)
	}
	id := idOf(t, old)
	waitHolders(t, c.client(), id, 1)
	rewriteKeepingStat(t, filepath.Join(share, "f.bin"), randomBytes(32, len(old)))

	bob := startPeer(t, c, "bob", "", nil)
	dest := filepath.Join(t.TempDir(), "f.bin")
	res, err := bob.Download(t.Context(), id, dest, DownloadOptions{StallTimeout: 10 * time.Second})
	if !errors.Is(err, ErrHoldersChanged) {
		t.Fatalf("download from a holder whose copy changed: err = %v, want ErrHoldersChanged", err)
	}
	if errors.Is(err, ErrNoHonestHolder) || errors.Is(err, ErrNoHolders) {
		t.Errorf("err = %v also blames the holders' honesty or reachability", err)
	}
	for _, want := range []string{"changed since they registered", "search again", pid("alice")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %q, want it to say %q", err, want)
		}
	}
	if len(res.Dropped) != 0 {
		t.Errorf("Dropped = %v, want no holder dropped as a liar", res.Dropped)
	}
	if _, err := os.Stat(dest); err == nil {
		t.Error("the destination exists after a failed download")
	}
}

// The new status round-trips through the response codec and names itself
// in the downloader's error, which matches errHolderChanged and nothing
// else does.
func TestStatusChangedRoundTrips(t *testing.T) {
	b := errorResponse(statusChanged, "file x changed on disk")
	h, err := decodeRespHeader(b[:respHeaderLen])
	if err != nil || h.Status != statusChanged || int(h.Len) != len(b)-respHeaderLen {
		t.Fatalf("decode statusChanged header: %+v, %v", h, err)
	}
	e := &remoteError{Status: statusChanged, Msg: "file x changed on disk"}
	if !errors.Is(e, errHolderChanged) || !strings.Contains(e.Error(), "file changed") {
		t.Fatalf("remoteError %q: errors.Is(errHolderChanged) = %v", e, errors.Is(e, errHolderChanged))
	}
	if errors.Is(&remoteError{Status: statusNotFound}, errHolderChanged) {
		t.Fatal("a not-found answer matches errHolderChanged")
	}
}
