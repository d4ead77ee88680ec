package peer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/poll"
	"fileshare/master"
)

const mib = 1 << 20

// A 64 MiB file held by two peers downloads from both at once, byte for
// byte, while the leader is killed in the middle; the downloader then
// registers as a third holder through the new leader.
func TestDownloadFromTwoHoldersSurvivesLeaderKill(t *testing.T) {
	c := newTestCluster(t, nil)
	big := randomBytes(1, 64*mib)
	id := idOf(t, big)
	startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"big.bin": big}), nil)
	startPeer(t, c, "bob", shareFolder(t, map[string][]byte{"big.bin": big}), nil)
	carol := startPeer(t, c, "carol", t.TempDir(), nil)
	mc := c.client()
	waitHolders(t, mc, id, 2)

	oldLeader := c.leader()
	var killed atomic.Bool
	var wg sync.WaitGroup
	defer wg.Wait()
	dest := filepath.Join(t.TempDir(), "big.bin")
	res, err := carol.Download(t.Context(), id, dest, DownloadOptions{
		Seed:      true,
		RateLimit: 48 * mib, // long enough to kill the leader half way
		Progress: func(p Progress) {
			if p.PiecesDone >= p.Pieces/3 && killed.CompareAndSwap(false, true) {
				wg.Add(1)
				go func() { defer wg.Done(); c.stop(oldLeader) }()
			}
		},
	})
	wg.Wait()
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	if !killed.Load() {
		t.Fatal("the download finished before the leader was killed; the test proved nothing")
	}
	if got, want := sha256File(t, dest), sha256.Sum256(big); got != want {
		t.Fatal("downloaded file differs from the original")
	}
	if res.FromHolders[pid("alice")] == 0 || res.FromHolders[pid("bob")] == 0 {
		t.Fatalf("pieces per holder = %v, want some from both alice and bob", res.FromHolders)
	}
	if res.Fetched+res.Resumed != res.Pieces || res.Pieces != 256 {
		t.Fatalf("result %+v: want 256 pieces, all fetched", res)
	}
	if !res.Seeded {
		t.Fatal("the download was not seeded")
	}
	if nl := c.leader(); nl == oldLeader {
		t.Fatalf("leader is still %d", nl)
	}
	hs := waitHolders(t, mc, id, 3)
	if !slices.ContainsFunc(hs, func(h client.HolderEntry) bool { return h.PeerID == pid("carol") }) {
		t.Fatalf("holders %v do not include carol", hs)
	}
	if _, err := os.Stat(dest + PartialSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("partial file left behind: %v", err)
	}
}

// With a single holder nothing is ever fetched twice: a piece that has
// arrived and waits for verification is not re-requested in the end game.
func TestSingleHolderFetchesEveryPieceOnce(t *testing.T) {
	c := newTestCluster(t, nil)
	data := randomBytes(11, 8*mib+12345)
	id := idOf(t, data)
	startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"f.bin": data}), nil)
	carol := startPeer(t, c, "carol", "", nil)
	waitHolders(t, c.client(), id, 1)
	for i := range 3 {
		dest := filepath.Join(t.TempDir(), "f.bin")
		res, err := carol.Download(t.Context(), id, dest, DownloadOptions{})
		if err != nil {
			t.Fatalf("download %d: %v", i, err)
		}
		if res.Duplicates != 0 || res.Fetched != res.Pieces {
			t.Fatalf("download %d: fetched %d of %d pieces with %d duplicates; want every piece once", i, res.Fetched, res.Pieces, res.Duplicates)
		}
		if sha256File(t, dest) != sha256.Sum256(data) {
			t.Fatalf("download %d: file differs from the original", i)
		}
	}
}

// One holder stops in the middle of a download: its outstanding pieces go
// to the other, which finishes the file.
func TestDownloadFinishesWhenAHolderStops(t *testing.T) {
	c := newTestCluster(t, nil)
	data := randomBytes(2, 24*mib)
	id := idOf(t, data)
	alice := startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"f.bin": data}), nil)
	bob := startPeer(t, c, "bob", shareFolder(t, map[string][]byte{"f.bin": data}), nil)
	_ = alice
	carol := startPeer(t, c, "carol", "", nil)
	waitHolders(t, c.client(), id, 2)

	var stopped atomic.Bool
	var wg sync.WaitGroup
	defer wg.Wait()
	dest := filepath.Join(t.TempDir(), "f.bin")
	res, err := carol.Download(t.Context(), id, dest, DownloadOptions{
		RateLimit: 24 * mib,
		Progress: func(p Progress) {
			if p.PiecesDone >= p.Pieces/4 && stopped.CompareAndSwap(false, true) {
				wg.Add(1)
				go func() { defer wg.Done(); bob.Close() }()
			}
		},
	})
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	if !stopped.Load() {
		t.Fatal("the download finished before bob stopped")
	}
	if sha256File(t, dest) != sha256.Sum256(data) {
		t.Fatal("downloaded file differs from the original")
	}
	if res.FromHolders[pid("alice")] == 0 {
		t.Fatalf("pieces per holder = %v, want alice to finish the file", res.FromHolders)
	}
}

// A holder that sends corrupt pieces is dropped for the file and every
// piece comes from the honest holder.
func TestLyingHolderIsDroppedAndAnHonestOneFinishes(t *testing.T) {
	c := newTestCluster(t, nil)
	data := randomBytes(3, 8*mib)
	id := idOf(t, data)
	startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"f.bin": data}), nil)
	startPeer(t, c, "mallory", shareFolder(t, map[string][]byte{"f.bin": data}), func(cfg *Config) {
		cfg.corruptPieces = func(_ string, _ int, b []byte) { b[len(b)/2] ^= 0x40 }
	})
	carol := startPeer(t, c, "carol", "", nil)
	waitHolders(t, c.client(), id, 2)

	dest := filepath.Join(t.TempDir(), "f.bin")
	// Two requests in flight per holder and a rate limit make sure both
	// holders are asked for pieces.
	res, err := carol.Download(t.Context(), id, dest, DownloadOptions{MaxInFlight: 2, RateLimit: 32 * mib})
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	if sha256File(t, dest) != sha256.Sum256(data) {
		t.Fatal("downloaded file differs from the original")
	}
	if !slices.Equal(res.Dropped, []string{pid("mallory")}) {
		t.Fatalf("dropped = %v, want [mallory]", res.Dropped)
	}
	if res.FromHolders[pid("mallory")] != 0 || res.FromHolders[pid("alice")] != res.Pieces {
		t.Fatalf("pieces per holder = %v, want all %d from alice", res.FromHolders, res.Pieces)
	}
}

// With only a liar holding the file — here it flips a bit of every piece
// it sends (a file edited on disk is not a lie: see changed_test.go) — the
// download fails with ErrNoHonestHolder naming the file, and keeps no bad
// byte.
func TestOnlyALiarFailsWithErrNoHonestHolder(t *testing.T) {
	c := newTestCluster(t, nil)
	data := randomBytes(4, 2*mib)
	id := idOf(t, data)
	share := shareFolder(t, map[string][]byte{"report.pdf": data})
	mallory := startPeer(t, c, "mallory", share, func(cfg *Config) {
		cfg.corruptPieces = func(_ string, _ int, b []byte) { b[17] ^= 1 }
	})
	carol := startPeer(t, c, "carol", "", nil)
	if err := mallory.Rescan(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitHolders(t, c.client(), id, 1)

	dest := filepath.Join(t.TempDir(), "report.pdf")
	_, err := carol.Download(t.Context(), id, dest, DownloadOptions{StallTimeout: 10 * time.Second})
	if !errors.Is(err, ErrNoHonestHolder) {
		t.Fatalf("err = %v, want ErrNoHonestHolder", err)
	}
	for _, want := range []string{"report.pdf", id, pid("mallory")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	for _, p := range []string{dest, dest + PartialSuffix, dest + ResumeSuffix} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s exists after a download that verified nothing: %v", p, err)
		}
	}
}

// A download cancelled half way resumes from its verified pieces and does
// not fetch them again.
func TestDownloadResumesFromVerifiedPieces(t *testing.T) {
	c := newTestCluster(t, nil)
	data := randomBytes(5, 16*mib)
	id := idOf(t, data)
	share, aliceData := shareFolder(t, map[string][]byte{"f.bin": data}), filepath.Join(t.TempDir(), "alice")
	keepData := func(cfg *Config) { cfg.DataDir = aliceData }
	alice := startPeer(t, c, "alice", share, keepData)
	carol := startPeer(t, c, "carol", "", nil)
	waitHolders(t, c.client(), id, 1)

	dest := filepath.Join(t.TempDir(), "f.bin")
	ctx, cancel := context.WithCancel(t.Context())
	_, err := carol.Download(ctx, id, dest, DownloadOptions{
		RateLimit:          16 * mib,
		CheckpointInterval: 50 * time.Millisecond,
		Progress: func(p Progress) {
			if p.PiecesDone >= p.Pieces/2 {
				cancel()
			}
		},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: err = %v, want context.Canceled", err)
	}
	b, err := os.ReadFile(dest + ResumeSuffix)
	if err != nil {
		t.Fatalf("no resume state after cancellation: %v", err)
	}
	st, err := decodeResumeState(b)
	if err != nil {
		t.Fatal(err)
	}
	saved := st.count()
	if saved < st.Pieces/2 {
		t.Fatalf("resume state marks %d of %d pieces, want at least half", saved, st.Pieces)
	}
	// A run that cannot even fetch the hash list (the only holder is
	// down) keeps what earlier runs verified.
	alice.Close()
	if _, err := carol.Download(t.Context(), id, dest, DownloadOptions{StallTimeout: time.Second}); !errors.Is(err, ErrNoHolders) {
		t.Fatalf("run with the holder down: err = %v, want ErrNoHolders", err)
	}
	if b, err := os.ReadFile(dest + ResumeSuffix); err != nil {
		t.Fatalf("the resume state was deleted by a run that verified nothing: %v", err)
	} else if st, err := decodeResumeState(b); err != nil || st.count() != saved {
		t.Fatalf("resume state after the failed run: %v, %v; want %d pieces", st, err, saved)
	}
	startPeer(t, c, "alice", share, keepData)
	res, err := carol.Download(t.Context(), id, dest, DownloadOptions{})
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	if res.Resumed != saved || res.Fetched != res.Pieces-saved {
		t.Fatalf("second run resumed %d and fetched %d of %d pieces; want %d resumed and the rest fetched", res.Resumed, res.Fetched, res.Pieces, saved)
	}
	if sha256File(t, dest) != sha256.Sum256(data) {
		t.Fatal("resumed file differs from the original")
	}
}

// The piece server serves nothing outside the share folder: a registered
// file replaced by a symlink to a secret, a path with "..", a malformed
// request; and it keeps serving afterwards.
func TestPieceServerRefusesTraversalAndSymlinkEscapes(t *testing.T) {
	c := newTestCluster(t, nil)
	base := t.TempDir()
	secret := []byte("the secret is not in the share folder!")
	os.WriteFile(filepath.Join(base, "secret.txt"), secret, 0o600)
	public := []byte("public content, same size as secret..!")
	if len(public) != len(secret) {
		t.Fatal("test data sizes differ")
	}
	share := shareFolder(t, map[string][]byte{"public.txt": public, "other.txt": []byte("other")})
	alice := startPeer(t, c, "alice", share, func(cfg *Config) { cfg.RescanInterval = time.Hour })
	if err := alice.Rescan(t.Context()); err != nil {
		t.Fatal(err)
	}
	pubID, otherID := idOf(t, public), idOf(t, []byte("other"))

	// A path with ".." smuggled into the served table (as a corrupted
	// scan might) is refused by the open, before the disk is touched.
	fake := sha256.Sum256([]byte("fake"))
	fakeID := hex.EncodeToString(fake[:])
	served := *alice.served.Load()
	withFake := map[string]*sharedFile{fakeID: {ID: fakeID, Path: "../secret.txt", Name: "x", Size: int64(len(secret)), PieceSize: DefaultPieceSize, Hashes: make([]byte, 32)}}
	for k, v := range served {
		withFake[k] = v
	}
	alice.served.Store(&withFake)
	if st, body := rawRequest(t, alice.Addr(), pieceRequest{Op: opPiece, File: fake}); st != statusNotFound || strings.Contains(body, "secret") {
		t.Fatalf("traversal: status %d body %q, want not found and no secret", st, body)
	}

	// The registered file replaced by a symlink out of the folder, with
	// size and mtime made to match: os.Root refuses to follow it.
	p := filepath.Join(share, "public.txt")
	st0, _ := os.Stat(p)
	os.Remove(p)
	os.Chtimes(filepath.Join(base, "secret.txt"), st0.ModTime(), st0.ModTime())
	if err := os.Symlink(filepath.Join(base, "secret.txt"), p); err != nil {
		t.Fatal(err)
	}
	raw, _ := hex.DecodeString(pubID)
	if st, body := rawRequest(t, alice.Addr(), pieceRequest{Op: opPiece, File: [32]byte(raw)}); st != statusNotFound || strings.Contains(body, "secret") {
		t.Fatalf("symlink escape: status %d body %q, want not found and no secret", st, body)
	}

	// A malformed request closes that connection only.
	conn := dialPiece(t, alice.Addr())
	conn.Write([]byte("GET / HTTP/1.0\r\n\r\n" + strings.Repeat("x", 40)))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, _ := io.ReadAll(conn)
	conn.Close()
	if len(rest) < respHeaderLen || rest[0] != statusBadRequest {
		t.Fatalf("malformed request answered %q, want a bad-request header then close", rest)
	}
	raw, _ = hex.DecodeString(otherID)
	if st, body := rawRequest(t, alice.Addr(), pieceRequest{Op: opPiece, File: [32]byte(raw)}); st != statusOK || body != "other" {
		t.Fatalf("after the bad requests: status %d body %q, want the other file", st, body)
	}
	// The rescan the refused open triggered drops the escaped file.
	poll.Until(t, 10*time.Second, "public.txt unregistered", func() bool {
		r, err := c.client().Lookup(t.Context(), pubID, client.ReadLinearizable)
		return err == nil && !r.Found
	})
}

// rawRequest sends one request over the piece protocol and returns the
// status and payload.
func rawRequest(t *testing.T, addr string, r pieceRequest) (byte, string) {
	t.Helper()
	conn := dialPiece(t, addr)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(r.appendTo(nil)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	h, err := readHeader(br)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body := make([]byte, h.Len)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	return h.Status, string(body)
}

// A file deleted from the share folder disappears from search; a new one
// appears.
func TestShareFolderChangesReachTheIndex(t *testing.T) {
	c := newTestCluster(t, nil)
	share := shareFolder(t, map[string][]byte{"notes/a.txt": []byte("a"), "notes/b.txt": []byte("b")})
	startPeer(t, c, "alice", share, nil)
	mc := c.client()
	names := func() []string {
		r, err := mc.Search(t.Context(), "notes", 0, client.ReadLinearizable)
		if err != nil {
			return nil
		}
		var out []string
		for _, f := range r.Files {
			out = append(out, f.Name)
		}
		return out
	}
	poll.Until(t, 10*time.Second, "both notes searchable", func() bool { return slices.Equal(names(), []string{"notes/a.txt", "notes/b.txt"}) })
	os.Remove(filepath.Join(share, "notes", "a.txt"))
	os.WriteFile(filepath.Join(share, "notes", "c.txt"), []byte("c"), 0o644)
	poll.Until(t, 10*time.Second, "a.txt gone and c.txt found", func() bool { return slices.Equal(names(), []string{"notes/b.txt", "notes/c.txt"}) })
}

// A peer that dies (stops heartbeating without leaving) disappears from
// lookups once its lease expires; one that leaves disappears at once.
func TestDeadPeerDisappearsWhenItsLeaseExpires(t *testing.T) {
	c := newTestCluster(t, func(cfg *master.Config) { cfg.PeerLease = time.Second })
	a, b := []byte("alice's file"), []byte("bob's file")
	alice := startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"a": a}), nil)
	bob := startPeer(t, c, "bob", shareFolder(t, map[string][]byte{"b": b}), nil)
	mc := c.client()
	waitHolders(t, mc, idOf(t, a), 1)
	waitHolders(t, mc, idOf(t, b), 1)

	// Heartbeats keep alice in the index across several leases.
	alice.Close()
	start := time.Now()
	poll.Until(t, 10*time.Second, "alice's file expires", func() bool {
		r, err := mc.Lookup(t.Context(), idOf(t, a), client.ReadLinearizable)
		return err == nil && !r.Found
	})
	// Her lease ran from her last heartbeat, at most a third of a lease
	// before Close.
	if time.Since(start) < 600*time.Millisecond {
		t.Fatalf("alice expired %v after she stopped, before her 1 s lease could have run out", time.Since(start))
	}
	if r, err := mc.Lookup(t.Context(), idOf(t, b), client.ReadLinearizable); err != nil || !r.Found {
		t.Fatalf("bob, who heartbeats, lost his file: found=%v err=%v", r.Found, err)
	}
	if err := bob.Leave(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r, err := mc.Lookup(t.Context(), idOf(t, b), client.ReadLinearizable); err != nil || r.Found {
		t.Fatalf("after Leave bob's file is still found=%v (err %v)", r.Found, err)
	}
}

// A peer the index expired (it paused longer than its lease) notices at its
// next heartbeat, joins again and re-registers everything.
func TestExpiredPeerRejoinsAndReregisters(t *testing.T) {
	c := newTestCluster(t, func(cfg *master.Config) { cfg.PeerLease = 500 * time.Millisecond })
	a := []byte("alice's file")
	startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"a": a}), func(cfg *Config) {
		cfg.HeartbeatInterval = 1500 * time.Millisecond // slower than the lease: a "pause"
	})
	mc := c.client()
	id := idOf(t, a)
	waitHolders(t, mc, id, 1)
	poll.Until(t, 10*time.Second, "alice expires", func() bool {
		r, err := mc.Lookup(t.Context(), id, client.ReadLinearizable)
		return err == nil && !r.Found
	})
	waitHolders(t, mc, id, 1)
}

// Only the owner can remove its registrations: another peer's unregister
// is a no-op for the owner's holding, and a request naming the owner's ID
// without the owner's key is refused.
func TestOnePeerCannotUnregisterAnothersFile(t *testing.T) {
	c := newTestCluster(t, nil)
	a := []byte("alice's file")
	id := idOf(t, a)
	startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"a": a}), nil)
	mc := c.client()
	waitHolders(t, mc, id, 1)

	mallory := client.IdentityFromKey(testKey("mallory"))
	if _, err := mc.Join(t.Context(), mallory, "127.0.0.1:9"); err != nil {
		t.Fatal(err)
	}
	if _, err := mc.Unregister(t.Context(), mallory, []string{id}); err != nil {
		t.Fatalf("unregister with mallory's identity: %v", err)
	}
	forged := client.Identity{PeerID: pid("alice"), Key: mallory.Key}
	if _, err := mc.Unregister(t.Context(), forged, []string{id}); !errors.Is(err, master.ErrNotYourPeerID) {
		t.Fatalf("unregister with alice's ID and mallory's key: err = %v, want ErrNotYourPeerID", err)
	}
	if _, err := mc.Leave(t.Context(), forged); !errors.Is(err, master.ErrNotYourPeerID) {
		t.Fatalf("leave with alice's ID and mallory's key: err = %v, want ErrNotYourPeerID", err)
	}
	hs := waitHolders(t, mc, id, 1)
	if hs[0].PeerID != pid("alice") {
		t.Fatalf("holder is %s, want alice", hs[0].PeerID)
	}
}

// After a restart with the same data dir a peer keeps its ID, re-announces
// its files, and unregisters those deleted while it was down.
func TestRestartReannouncesAndForgetsDeletedFiles(t *testing.T) {
	c := newTestCluster(t, nil)
	a, b := []byte("kept"), []byte("deleted while down")
	share := shareFolder(t, map[string][]byte{"a": a, "b": b})
	data := filepath.Join(t.TempDir(), "alice")
	cfg := func(cfg *Config) { cfg.DataDir = data }
	alice := startPeer(t, c, "alice", share, cfg)
	mc := c.client()
	waitHolders(t, mc, idOf(t, a), 1)
	waitHolders(t, mc, idOf(t, b), 1)
	firstID := alice.ID()
	alice.Close()
	os.Remove(filepath.Join(share, "b"))

	alice = startPeer(t, c, "alice", share, cfg)
	if alice.ID() != firstID {
		t.Fatalf("peer ID changed across a restart: %s then %s", firstID, alice.ID())
	}
	if err := alice.Rescan(t.Context()); err != nil {
		t.Fatal(err)
	}
	if hs := waitHolders(t, mc, idOf(t, a), 1); hs[0].PeerID != firstID {
		t.Fatalf("holder %s, want %s", hs[0].PeerID, firstID)
	}
	poll.Until(t, 10*time.Second, "the deleted file unregistered", func() bool {
		r, err := mc.Lookup(t.Context(), idOf(t, b), client.ReadLinearizable)
		return err == nil && !r.Found
	})
	if got := alice.Shared(); len(got) != 1 || got[0].Name != "a" {
		t.Fatalf("Shared() = %+v, want just a", got)
	}
}

func TestResolveByIDAndName(t *testing.T) {
	c := newTestCluster(t, nil)
	x, y := []byte("2023 numbers"), []byte("2024 numbers")
	startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"report-2023.pdf": x, "old/report-2024.pdf": y}), nil)
	mc := c.client()
	waitHolders(t, mc, idOf(t, y), 1)
	waitHolders(t, mc, idOf(t, x), 1)
	for _, tc := range []struct{ ref, want string }{
		{idOf(t, x), "report-2023.pdf"},
		{"report-2023.pdf", "report-2023.pdf"},
		{"report-2024.pdf", "old/report-2024.pdf"}, // the last path element
	} {
		f, err := Resolve(t.Context(), mc, tc.ref)
		if err != nil || f.Name != tc.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tc.ref, f.Name, err, tc.want)
		}
	}
	_, err := Resolve(t.Context(), mc, "report")
	var amb *AmbiguousError
	if !errors.As(err, &amb) || !errors.Is(err, ErrAmbiguous) || len(amb.Candidates) != 2 || amb.Named {
		t.Fatalf("Resolve(report) = %v, want an AmbiguousError with 2 part-matching candidates", err)
	}
	// Part of a name is never enough, even when one file contains it.
	if _, err := Resolve(t.Context(), mc, "2024"); !errors.As(err, &amb) || len(amb.Candidates) != 1 || amb.Named {
		t.Fatalf("Resolve(2024) = %v, want an AmbiguousError listing the one part-matching file", err)
	}
	if _, err := Resolve(t.Context(), mc, "nothing-like-this"); !errors.Is(err, ErrFileNotFound) {
		t.Fatalf("Resolve of an unknown name: %v, want ErrFileNotFound", err)
	}
	if _, err := Resolve(t.Context(), mc, strings.Repeat("ab", 32)); !errors.Is(err, ErrFileNotFound) {
		t.Fatalf("Resolve of an unknown ID: %v, want ErrFileNotFound", err)
	}
}

func TestDownloadRefusals(t *testing.T) {
	c := newTestCluster(t, nil)
	a := []byte("content")
	alice := startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"a": a}), nil)
	carol := startPeer(t, c, "carol", "", nil)
	waitHolders(t, c.client(), idOf(t, a), 1)
	dir := t.TempDir()
	exists := filepath.Join(dir, "exists")
	os.WriteFile(exists, []byte("mine"), 0o644)
	if _, err := carol.Download(t.Context(), idOf(t, a), exists, DownloadOptions{}); !errors.Is(err, ErrDestinationExists) {
		t.Errorf("download over an existing file: %v, want ErrDestinationExists", err)
	}
	if b, _ := os.ReadFile(exists); string(b) != "mine" {
		t.Errorf("existing file overwritten: %q", b)
	}
	busy := filepath.Join(dir, "busy")
	lock, err := os.Create(busy + PartialSuffix)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := tryLock(lock); err != nil {
		t.Fatalf("lock %s: %v", lock.Name(), err)
	}
	if _, err := carol.Download(t.Context(), idOf(t, a), busy, DownloadOptions{}); !errors.Is(err, ErrDestinationExists) || !strings.Contains(err.Error(), "another download") {
		t.Errorf("download to a destination another download holds: %v, want ErrDestinationExists", err)
	}
	if _, err := carol.Download(t.Context(), strings.Repeat("cd", 32), filepath.Join(dir, "x"), DownloadOptions{}); !errors.Is(err, ErrFileNotFound) {
		t.Errorf("download of an unknown ID: %v, want ErrFileNotFound", err)
	}
	if _, err := carol.Download(t.Context(), idOf(t, a), filepath.Join(dir, "y"), DownloadOptions{Seed: true}); !errors.Is(err, ErrConfig) {
		t.Errorf("seeding from a peer without a share folder: %v, want ErrConfig", err)
	}
	// The only holder is the downloader itself.
	if _, err := alice.Download(t.Context(), idOf(t, a), filepath.Join(dir, "z"), DownloadOptions{}); !errors.Is(err, ErrNoHolders) {
		t.Errorf("download held only by oneself: %v, want ErrNoHolders", err)
	}
	empty := []byte{}
	startPeer(t, c, "eve", shareFolder(t, map[string][]byte{"empty": empty}), nil)
	waitHolders(t, c.client(), idOf(t, empty), 1)
	res, err := carol.Download(t.Context(), idOf(t, empty), filepath.Join(dir, "empty"), DownloadOptions{})
	if err != nil || res.Size != 0 {
		t.Fatalf("download of an empty file: %+v, %v", res, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "empty")); err != nil || st.Size() != 0 {
		t.Fatalf("empty file: %v", err)
	}
	if err := carol.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.Download(t.Context(), idOf(t, a), filepath.Join(dir, "w"), DownloadOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("download on a closed peer: %v, want ErrClosed", err)
	}
}

// Close stops every goroutine a peer started: the scanner, the heartbeat,
// the piece server and its connections, and downloads.
func TestCloseStopsEveryGoroutine(t *testing.T) {
	c := newTestCluster(t, nil)
	data := randomBytes(6, 4*mib)
	id := idOf(t, data)
	alice := startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"f": data}), nil)
	// carol shares an (empty) folder too, so she runs every kind of
	// goroutine a peer has; a download-only peer runs no piece server.
	carol := startPeer(t, c, "carol", t.TempDir(), nil)
	waitHolders(t, c.client(), id, 1)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := carol.Download(ctx, id, filepath.Join(t.TempDir(), "f"), DownloadOptions{RateLimit: mib})
		done <- err
	}()
	poll.Until(t, 10*time.Second, "an upload in progress", func() bool { return alice.conns.Len() > 0 })
	if n := len(peerGoroutines()); n < 5 {
		t.Fatalf("only %d goroutines run peer code while sharing and downloading; the check below would prove nothing", n)
	}
	carol.Close() // aborts the download
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("download on a closing peer: %v, want ErrClosed", err)
	}
	alice.Close()
	alice.Close() // safe twice
	if left := peerGoroutines(); len(left) > 0 {
		t.Fatalf("%d goroutines still run peer code after Close:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}

// peerGoroutines returns the stacks of goroutines running this package's
// code, other than tests.
func peerGoroutines() []string {
	buf := make([]byte, 4<<20)
	var out []string
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "fileshare/peer.") && !strings.Contains(g, "fileshare/peer.Test") {
			out = append(out, g)
		}
	}
	return out
}

// Beyond MaxUploads connections, the piece server answers "busy" and hangs
// up; a slot frees when a connection ends.
func TestPieceServerCapsConcurrentUploads(t *testing.T) {
	c := newTestCluster(t, nil)
	a := []byte("capped")
	alice := startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"a": a}), func(cfg *Config) { cfg.MaxUploads = 1 })
	waitHolders(t, c.client(), idOf(t, a), 1)
	raw, _ := hex.DecodeString(idOf(t, a))
	req := pieceRequest{Op: opPiece, File: [32]byte(raw)}

	first := dialPiece(t, alice.Addr())
	defer first.Close()
	first.SetDeadline(time.Now().Add(5 * time.Second))
	first.Write(req.appendTo(nil))
	if h, err := readHeader(bufio.NewReader(first)); err != nil || h.Status != statusOK {
		t.Fatalf("first connection: %+v, %v", h, err)
	}
	if st, body := rawRequest(t, alice.Addr(), req); st != statusBusy {
		t.Fatalf("second connection: status %d %q, want busy", st, body)
	}
	first.Close()
	poll.Until(t, 5*time.Second, "the slot to free", func() bool {
		st, _ := rawRequest(t, alice.Addr(), req)
		return st == statusOK
	})
}

// Killing the leader while a peer registers its folder is invisible: every
// file ends up in the index, with no error reaching the caller.
func TestSharingSurvivesLeaderKill(t *testing.T) {
	c := newTestCluster(t, nil)
	files := map[string][]byte{}
	for i := range 300 {
		files[fmt.Sprintf("dir%d/file-%03d.txt", i%7, i)] = []byte(fmt.Sprintf("content %d", i))
	}
	share := shareFolder(t, files)
	leader := c.leader()
	alice := startPeer(t, c, "alice", share, func(cfg *Config) { cfg.RescanInterval = time.Hour })
	c.stop(leader)
	if err := alice.Rescan(t.Context()); err != nil {
		t.Fatalf("rescan across a leader kill: %v", err)
	}
	if got := len(alice.Shared()); got != len(files) {
		t.Fatalf("alice serves %d files, want %d", got, len(files))
	}
	r, err := c.client().Search(t.Context(), "file-", 1000, client.ReadLinearizable)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Files) != len(files) {
		t.Fatalf("the index lists %d files, want %d", len(r.Files), len(files))
	}
}

// An outsider who registers a known file under another name (so search
// shows that name for it) and their own file under the known file's name
// does not make Resolve pick their file: every holder's name counts.
func TestResolveIsNotFooledByRenaming(t *testing.T) {
	c := newTestCluster(t, nil)
	genuine, malware := []byte("the real report"), []byte("not the report")
	startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"report.pdf": genuine}), nil)
	mallory := client.IdentityFromKey(testKey("mallory"))
	mc := c.client()
	waitHolders(t, mc, idOf(t, genuine), 1)
	if _, err := mc.Join(t.Context(), mallory, "127.0.0.1:9"); err != nil {
		t.Fatal(err)
	}
	entry := func(b []byte, name string) client.FileEntry {
		return client.FileEntry{ID: idOf(t, b), Name: name, Size: int64(len(b)), PieceSize: PieceSizeFor(int64(len(b)))}
	}
	if _, err := mc.Register(t.Context(), mallory, []client.FileEntry{entry(genuine, "a-report.pdf"), entry(malware, "report.pdf")}); err != nil {
		t.Fatal(err)
	}
	_, err := Resolve(t.Context(), mc, "report.pdf")
	var amb *AmbiguousError
	if !errors.As(err, &amb) || !amb.Named || len(amb.Candidates) != 2 {
		t.Fatalf("Resolve(report.pdf) = %v, want an AmbiguousError naming both files", err)
	}
}

// A file a stranger registered with an impossible size (near 2^63 bytes)
// is refused cleanly: no panic, no huge allocation, a clear error.
func TestDownloadOfAnImpossiblySizedFileFailsCleanly(t *testing.T) {
	c := newTestCluster(t, nil)
	carol := startPeer(t, c, "carol", "", nil)
	mallory := client.IdentityFromKey(testKey("mallory"))
	mc := c.client()
	if _, err := mc.Join(t.Context(), mallory, "127.0.0.1:9"); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{math.MaxInt64, math.MaxInt64 - 1, 1 << 62} {
		f := client.FileEntry{ID: strings.Repeat("ef", 32), Name: fmt.Sprintf("huge-%d.bin", size), Size: size, PieceSize: 16 << 20}
		if _, err := mc.Register(t.Context(), mallory, []client.FileEntry{f}); err != nil {
			t.Fatalf("register a %d-byte file: %v", size, err)
		}
		_, err := carol.Download(t.Context(), f.ID, filepath.Join(t.TempDir(), "huge"), DownloadOptions{StallTimeout: 5 * time.Second})
		if !errors.Is(err, ErrFileTooLarge) {
			t.Fatalf("download of a %d-byte file: %v, want ErrFileTooLarge", size, err)
		}
		if _, err := mc.Unregister(t.Context(), mallory, []string{f.ID}); err != nil {
			t.Fatal(err)
		}
	}
}

// A folder of thousands of long-named files is registered, and later
// unregistered, in calls whose log entries stay under the masters' entry
// cap: none is refused for its size.
func TestLargeFoldersFitTheMastersEntryCap(t *testing.T) {
	c := newTestCluster(t, nil)
	files := map[string][]byte{}
	long := strings.Repeat("n", 200)
	for i := range 4500 {
		files[fmt.Sprintf("d%d/%s-%04d.txt", i%10, long, i)] = []byte(fmt.Sprintf("file %d", i))
	}
	share := shareFolder(t, files)
	alice := startPeer(t, c, "alice", share, func(cfg *Config) { cfg.RescanInterval = time.Hour })
	if err := alice.Rescan(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := len(alice.Shared()); got != len(files) {
		t.Fatalf("alice shares %d files, want %d", got, len(files))
	}
	for i := range 10 {
		os.RemoveAll(filepath.Join(share, fmt.Sprintf("d%d", i)))
	}
	if err := alice.Rescan(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := len(alice.Shared()); got != 0 {
		t.Fatalf("alice still shares %d files after they were deleted", got)
	}
	r, err := c.client().Search(t.Context(), long, 10, client.ReadLinearizable)
	if err != nil || len(r.Files) != 0 {
		t.Fatalf("search after the deletions: %d files, %v; want none", len(r.Files), err)
	}
}
