package peer

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"fileshare/internal/poll"
)

// A proof vouches for a piece only under the seal it was made for, and only
// for bytes read after the file settled; a whole-file proof (a settled
// scan) vouches for every piece under its seal and nothing under another.
func TestPieceProofHoldsOnlyUnderItsSealAfterTheFileSettled(t *testing.T) {
	now := time.Unix(1_700_000_000, 500)
	fine := fileSeal{Dev: 1, Ino: 2, Ctime: now.UnixNano() - int64(time.Second)}
	racy := fileSeal{Dev: 1, Ino: 2, Ctime: now.UnixNano() - int64(fineSettleAfter/2)}
	coarse := fileSeal{Dev: 1, Ino: 2, Ctime: (now.Unix() - 1) * int64(time.Second)} // a whole second: 2 s margin
	other := fine
	other.Ctime++
	for _, tc := range []struct {
		name string
		seal fileSeal
		want bool
	}{
		{"settled", fine, true},
		{"changed within the margin", racy, false},
		{"whole-second ctime, 1.x s ago", coarse, false},
		{"unknown seal", fileSeal{}, false},
	} {
		if got := tc.seal.settled(now); got != tc.want {
			t.Errorf("%s: settled = %v, want %v", tc.name, got, tc.want)
		}
	}

	p := newPieceProof("f", fine, 130, false)
	if p.proven(fine, 129) {
		t.Fatal("an empty proof vouches for piece 129")
	}
	p.prove(fine, 129, now)
	p.prove(fine, 3, time.Unix(0, fine.Ctime)) // read before the file settled
	p.prove(other, 5, now)                     // read under another seal
	for i, want := range map[int]bool{129: true, 3: false, 5: false, 0: false} {
		if got := p.proven(fine, i); got != want {
			t.Errorf("proven(piece %d) = %v, want %v", i, got, want)
		}
	}
	if p.proven(other, 129) {
		t.Error("piece 129 proven under a seal with another ctime")
	}

	all := newPieceProof("f", fine, 4, true)
	if !all.proven(fine, 3) || all.proven(other, 3) || all.proven(fileSeal{}, 3) {
		t.Error("a whole-file proof must hold under its seal only")
	}
	if newPieceProof("f", fileSeal{}, 4, true).proven(fileSeal{}, 0) {
		t.Error("a proof with no seal vouches for a piece")
	}
}

// A holder that hashed a settled file sends its pieces without hashing
// them again, yet a rewrite in place that puts size and mtime back is still
// answered as changed, never sent as the registered file: the rewrite moved
// the ctime, so the proof no longer holds and the piece is hashed.
func TestSettledFileRewrittenInPlaceIsStillAnsweredAsChanged(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("seals need Linux's stat; elsewhere every piece is hashed, as TestChangedFileIsAnsweredAsChangedAndReregistered checks")
	}
	c := newTestCluster(t, nil)
	old := randomBytes(41, 3*DefaultPieceSize)
	share := shareFolder(t, map[string][]byte{"f.bin": old})
	path := filepath.Join(share, "f.bin")
	// Let the file settle before the peer hashes it, so its scan proves
	// every piece.
	if err := poll.Wait(t.Context(), func() bool {
		st, err := os.Stat(path)
		return err == nil && sealOf(st).settled(time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	alice := startPeer(t, c, "alice", share, func(cfg *Config) { cfg.RescanInterval = time.Hour })
	if err := alice.Rescan(t.Context()); err != nil {
		t.Fatal(err)
	}
	id := idOf(t, old)
	waitHolders(t, c.client(), id, 1)
	sf := alice.servedFile(id)
	if sf == nil || !sf.proof.all {
		t.Fatalf("served file %+v: want a whole-file proof after hashing a settled file", sf)
	}
	if st, body := rawRequest(t, alice.Addr(), pieceRequest{Op: opPiece, File: rootOf(t, id), Index: 2}); st != statusOK || body != string(old[2*DefaultPieceSize:]) {
		t.Fatalf("piece 2 of the untouched file: status %d, %d bytes; want statusOK and the piece", st, len(body))
	}

	rewriteKeepingStat(t, path, randomBytes(42, len(old)))
	st, body := rawRequest(t, alice.Addr(), pieceRequest{Op: opPiece, File: rootOf(t, id), Index: 2})
	if st != statusChanged || !strings.Contains(body, "changed on disk") {
		t.Fatalf("piece of a settled file rewritten in place: status %d %q, want statusChanged (%d)", st, body, statusChanged)
	}
}

// A piece served once from a file too fresh for its scan to prove is
// proven by that serve (if the file had settled by then), and only under
// the file's seal.
func TestServingAPieceProvesItUnderTheSeal(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("seals need Linux's stat")
	}
	c := newTestCluster(t, nil)
	data := randomBytes(43, 2*DefaultPieceSize)
	share := shareFolder(t, map[string][]byte{"g.bin": data})
	alice := startPeer(t, c, "alice", share, func(cfg *Config) { cfg.RescanInterval = time.Hour })
	id := idOf(t, data)
	waitHolders(t, c.client(), id, 1)
	st, err := os.Stat(filepath.Join(share, "g.bin"))
	if err != nil {
		t.Fatal(err)
	}
	seal := sealOf(st)
	if err := poll.Wait(t.Context(), func() bool { return seal.settled(time.Now()) }); err != nil {
		t.Fatal(err)
	}
	if s, _ := rawRequest(t, alice.Addr(), pieceRequest{Op: opPiece, File: rootOf(t, id), Index: 1}); s != statusOK {
		t.Fatalf("piece 1: status %d, want statusOK", s)
	}
	sf := alice.servedFile(id)
	if !sf.proof.proven(seal, 1) {
		t.Fatal("piece 1, hashed and sent after the file settled, is not proven")
	}
	if !sf.proof.all && sf.proof.proven(seal, 0) {
		t.Fatal("piece 0, never sent, is proven")
	}
}
