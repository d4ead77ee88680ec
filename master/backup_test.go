package master_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/master/mastertest"
)

func testMeta(size int) master.ArchiveMeta {
	return master.ArchiveMeta{
		RaftIndex: 42, RaftTerm: 3, Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Version: "test",
		SnapshotSize: int64(size), LeaderID: "m1", LeaderAddr: "127.0.0.1:7001",
		Members: []client.BackupMember{{ID: "m1", Addr: "127.0.0.1:7001"}},
	}
}

func archiveBytes(t testing.TB, meta master.ArchiveMeta, snap []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := master.WriteArchive(&buf, meta, bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// An archive reads back exactly as written, and every kind of damage is
// an ErrBadArchive whose message names it.
func TestBackupArchiveRoundTripAndDamage(t *testing.T) {
	snap := bytes.Repeat([]byte("snapshot bytes "), 1000)
	meta := testMeta(len(snap))
	good := archiveBytes(t, meta, snap)

	var got bytes.Buffer
	gotMeta, _, err := master.ReadArchive(bytes.NewReader(good), &got)
	if err != nil {
		t.Fatalf("read a good archive: %v", err)
	}
	if !bytes.Equal(got.Bytes(), snap) || gotMeta.RaftIndex != 42 || gotMeta.RaftTerm != 3 || !gotMeta.Time.Equal(meta.Time) || gotMeta.LeaderID != "m1" || len(gotMeta.Members) != 1 {
		t.Fatalf("round trip: got meta %+v and %d snapshot bytes, want %+v and %d", gotMeta, got.Len(), meta, len(snap))
	}

	flip := func(i int) []byte {
		b := slices.Clone(good)
		b[i] ^= 0x01
		return b
	}
	metaEnd := 16 + bytes.IndexByte(good[16:], '}') + 1
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "ends inside its 16-byte header"},
		{"not an archive", []byte("hello, this is not a backup at all"), "does not start with"},
		{"bad magic", flip(0), "does not start with"},
		{"future version", flip(11), "format version 3"},
		{"huge metadata length", func() []byte { b := slices.Clone(good); b[12] = 0xff; return b }(), "metadata length"},
		{"damaged metadata", flip(20), ""},
		{"damaged snapshot", flip(metaEnd + 100), "checksum mismatch"},
		{"damaged checksum", flip(len(good) - 1), "checksum mismatch"},
		{"truncated snapshot", good[:metaEnd+10], "truncated"},
		{"truncated checksum", good[:len(good)-5], "27 of the 32 checksum bytes"},
		{"trailing bytes", append(slices.Clone(good), 0), "bytes follow the checksum"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := master.ReadArchive(bytes.NewReader(tc.data), &bytes.Buffer{})
			if !errors.Is(err, master.ErrBadArchive) {
				t.Fatalf("got %v, want ErrBadArchive", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// WriteArchive refuses a snapshot stream shorter or longer than announced
// instead of writing an archive that would not verify.
func TestBackupArchiveWriterRefusesWrongLength(t *testing.T) {
	for _, n := range []int{99, 101} {
		var buf bytes.Buffer
		if _, err := master.WriteArchive(&buf, testMeta(100), bytes.NewReader(make([]byte, n))); err == nil {
			t.Fatalf("a %d-byte snapshot announced as 100 bytes was written", n)
		}
	}
}

// FuzzReadArchive: whatever file a user hands it, ReadArchive returns an
// error or a metadata and snapshot that write back into an archive that
// reads the same.
func FuzzReadArchive(f *testing.F) {
	f.Add(archiveBytes(f, testMeta(5), []byte("hello")))
	f.Add(archiveBytes(f, testMeta(0), nil))
	f.Add([]byte("FSBACKUP\x00\x00\x00\x01\x00\x00\x00\x02{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var snap bytes.Buffer
		meta, _, err := master.ReadArchive(bytes.NewReader(data), &snap)
		if err != nil {
			return
		}
		again := archiveBytes(t, meta, snap.Bytes())
		var snap2 bytes.Buffer
		meta2, _, err := master.ReadArchive(bytes.NewReader(again), &snap2)
		if err != nil {
			t.Fatalf("re-written archive does not read: %v", err)
		}
		if !bytes.Equal(snap.Bytes(), snap2.Bytes()) || meta2.RaftIndex != meta.RaftIndex || meta2.SnapshotSize != meta.SnapshotSize {
			t.Fatalf("round trip changed the archive: %+v vs %+v", meta, meta2)
		}
	})
}

// lookupAll returns how many of ids a linearizable lookup finds.
func lookupAll(t *testing.T, c *client.Client, ids []string) (found int) {
	t.Helper()
	for _, id := range ids {
		r, err := c.Lookup(t.Context(), id, client.ReadLinearizable)
		if err != nil {
			t.Fatalf("lookup %s: %v", id, err)
		}
		if r.Found {
			found++
		}
	}
	return found
}

// Backup → wipe every data dir → restore into 3 new masters: every
// acknowledged registration is back, all three start from the identical
// state under the new membership, a restart with the same --restore
// starts normally, and peers that do not renew within one lease after the
// restore are expired while one that heartbeats keeps its files.
func TestBackupRestoreIntoNewClusterKeepsEveryAcknowledgedRegistration(t *testing.T) {
	old := mastertest.New(t, 3, mastertest.Options{TLS: true})
	old.Leader()
	alive, gone := identity("backup-alive"), identity("backup-gone")
	var acked, aliveFiles []string
	for _, id := range []client.Identity{alive, gone} {
		pc := old.PeerClient(id)
		if _, err := pc.Join(t.Context(), id, "127.0.0.1:9101"); err != nil {
			t.Fatal(err)
		}
		ids := registerMany(t, pc, id, "bk-"+id.PeerID[:8], 150)
		if id.PeerID == alive.PeerID {
			aliveFiles = ids
		}
		acked = append(acked, ids...)
	}
	if len(acked) != 300 {
		t.Fatalf("%d registrations acknowledged, want 300", len(acked))
	}
	digest := old.Converge()

	// The backup goes through a follower only: it must reach the leader.
	leader := old.Leader()
	path := filepath.Join(t.TempDir(), "index.fsbackup")
	meta, err := master.SaveBackup(t.Context(), old.Client(old.Addr(old.Follower(leader))), path)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	if meta.LeaderID != old.ID(leader) || meta.RaftIndex == 0 || len(meta.Members) != 3 {
		t.Fatalf("backup metadata %+v: want leader %s, an index and 3 members", meta, old.ID(leader))
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	contents, err := master.InspectArchive(fh)
	fh.Close()
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	if contents.Counts.Files != 300 || contents.Counts.Peers != 2 || contents.Counts.Holdings != 300 || contents.Digest != digest {
		t.Fatalf("inspect: %+v, want 300 files, 2 peers, 300 holdings and digest %s", contents, digest)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("backup dir holds %d entries, want only the archive (no temp file left)", len(entries))
	}

	// Destroy the old cluster and every data dir.
	for i := range old.Len() {
		old.Kill(i)
		if err := os.RemoveAll(old.Config(i).DataDir); err != nil {
			t.Fatal(err)
		}
	}

	lease := 3 * time.Second
	restored := mastertest.New(t, 3, mastertest.Options{Config: func(cfg *master.Config) {
		cfg.Restore = path
		cfg.PeerLease = lease
	}})
	restored.Leader()
	if got := restored.Converge(); got != digest {
		t.Fatalf("restored cluster's digest %s, want the backup's %s", got, digest)
	}
	// Keep one peer alive from the moment the cluster is up.
	pc := restored.PeerClient(alive)
	stopBeat := make(chan struct{})
	beatDone := make(chan struct{})
	go func() {
		defer close(beatDone)
		tick := time.NewTicker(lease / 6)
		defer tick.Stop()
		for {
			_, _ = pc.Heartbeat(t.Context(), alive)
			select {
			case <-stopBeat:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { close(stopBeat); <-beatDone }()

	cl := restored.Client()
	if n := lookupAll(t, cl, acked); n != len(acked) {
		t.Fatalf("after restore %d of %d acknowledged registrations are found", n, len(acked))
	}
	st := restored.Status(0)
	var addrs []string
	for _, mem := range st.Members {
		addrs = append(addrs, mem.Addr)
	}
	slices.Sort(addrs)
	if want := slices.Sorted(slices.Values(restored.Addrs())); !slices.Equal(addrs, want) {
		t.Fatalf("restored members at %v, want the new cluster's %v", addrs, want)
	}
	if st.Term <= meta.RaftTerm {
		t.Fatalf("restored cluster at term %d, want above the backup's %d", st.Term, meta.RaftTerm)
	}

	// Peers that do not renew within a lease are expired; one that
	// heartbeats keeps its place.
	poll.Until(t, 4*lease+10*time.Second, "the silent peer's files to expire after the restore", func() bool {
		r, err := cl.Peers(t.Context(), client.ReadLinearizable)
		return err == nil && len(r.Peers) == 1 && r.Peers[0].ID == alive.PeerID
	})
	if n := lookupAll(t, cl, aliveFiles); n != len(aliveFiles) {
		t.Fatalf("the heartbeating peer kept %d of %d files", n, len(aliveFiles))
	}

	// A restart with the same --restore starts from its data dir.
	restored.Kill(1)
	restored.Restart(1)
	restored.Converge()

	// A data dir with other state is refused.
	other := restored.Config(2)
	restored.Kill(2)
	other.Restore = filepath.Join(t.TempDir(), "other.fsbackup")
	if err := os.WriteFile(other.Restore, archiveBytes(t, testMeta(3), []byte("abc")), 0o600); err != nil {
		t.Fatal(err)
	}
	if m, err := master.New(t.Context(), other); !errors.Is(err, master.ErrRestoreHasState) {
		if m != nil {
			m.CloseNow()
		}
		t.Fatalf("restore into a data dir with other state: got %v, want ErrRestoreHasState", err)
	}
}

// A damaged archive is refused before anything is written: the data dir
// stays empty of raft state and a later plain start bootstraps normally.
func TestRestoreRefusesDamagedArchive(t *testing.T) {
	snap := bytes.Repeat([]byte{7}, 1000)
	b := archiveBytes(t, testMeta(len(snap)), snap)
	b[len(b)-40] ^= 0xff
	path := filepath.Join(t.TempDir(), "bad.fsbackup")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := mastertest.NewUnstarted(1, mastertest.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.Config(0)
	cfg.Restore = path
	m, err := master.New(t.Context(), cfg)
	if !errors.Is(err, master.ErrBadArchive) || !strings.Contains(err.Error(), "checksum mismatch") {
		if m != nil {
			m.CloseNow()
		}
		t.Fatalf("restore of a damaged archive: got %v, want ErrBadArchive naming the checksum", err)
	}
	if snaps, _ := filepath.Glob(filepath.Join(cfg.DataDir, "snapshots", "*")); len(snaps) != 0 {
		t.Fatalf("a refused restore left snapshots behind: %v", snaps)
	}
}

// registerBulk registers n files with 200-byte names from one new peer,
// 500 per call, and returns their IDs.
func registerBulk(tb testing.TB, c *client.Client, id client.Identity, n int) []string {
	tb.Helper()
	if _, err := c.Join(tb.Context(), id, "127.0.0.1:9401"); err != nil {
		tb.Fatal(err)
	}
	var ids []string
	pad := strings.Repeat("x", 180)
	for start := 0; start < n; start += 500 {
		var batch []client.FileEntry
		for i := start; i < min(n, start+500); i++ {
			f := fileEntry(fmt.Sprintf("bulk-%s-%08d", pad, i))
			batch = append(batch, f)
			ids = append(ids, f.ID)
		}
		if _, err := c.Register(tb.Context(), id, batch); err != nil {
			tb.Fatalf("register files %d..: %v", start, err)
		}
	}
	return ids
}

// The chunk protocol: a snapshot larger than one chunk arrives in order
// and checks out; a lost reply can be asked for again and gets the same
// bytes; an out-of-order offset, an unknown session and a session over
// the limit are refused with their sentinels.
func TestBackupChunkProtocol(t *testing.T) {
	c := mastertest.New(t, 1, mastertest.Options{Config: func(cfg *master.Config) { cfg.MaxFilesPerPeer = -1 }})
	leader := c.Leader()
	cl := c.Client()
	registerBulk(t, cl, identity("bulk"), 25000)
	addr := c.Addr(leader)

	var info client.BackupInfo
	if err := cl.CallAt(t.Context(), addr, client.MethodBackupOpen, &client.BackupOpenRequest{}, &info); err != nil {
		t.Fatal(err)
	}
	if info.Size <= client.BackupChunkSize {
		t.Fatalf("snapshot of %d bytes fits one %d-byte chunk; the test needs several", info.Size, client.BackupChunkSize)
	}
	read := func(off int64) (client.BackupReadReply, error) {
		var out client.BackupReadReply
		err := cl.CallAt(t.Context(), addr, client.MethodBackupRead, &client.BackupReadRequest{Session: info.Session, Offset: off}, &out)
		return out, err
	}
	first, err := read(0)
	if err != nil || len(first.Data) != client.BackupChunkSize || first.EOF {
		t.Fatalf("first chunk: %d bytes, EOF %v, err %v; want %d bytes", len(first.Data), first.EOF, err, client.BackupChunkSize)
	}
	again, err := read(0)
	if err != nil || !bytes.Equal(again.Data, first.Data) {
		t.Fatalf("retry of the first chunk: err %v, same bytes %v", err, bytes.Equal(again.Data, first.Data))
	}
	if _, err := read(7); !errors.Is(err, client.ErrBackupOffset) {
		t.Fatalf("out-of-order read: got %v, want ErrBackupOffset", err)
	}
	var extra []client.BackupInfo
	for range client.MaxBackupSessions - 1 {
		var more client.BackupInfo
		if err := cl.CallAt(t.Context(), addr, client.MethodBackupOpen, &client.BackupOpenRequest{}, &more); err != nil {
			t.Fatal(err)
		}
		extra = append(extra, more)
	}
	if err := cl.CallAt(t.Context(), addr, client.MethodBackupOpen, &client.BackupOpenRequest{}, &client.BackupInfo{}); !errors.Is(err, client.ErrBackupBusy) {
		t.Fatalf("backup over the session limit: got %v, want ErrBackupBusy", err)
	}
	for _, e := range extra {
		if err := cl.CallAt(t.Context(), addr, client.MethodBackupClose, &client.BackupCloseRequest{Session: e.Session}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := (func() (client.BackupReadReply, error) {
		var out client.BackupReadReply
		err := cl.CallAt(t.Context(), addr, client.MethodBackupRead, &client.BackupReadRequest{Session: extra[0].Session}, &out)
		return out, err
	})(); !errors.Is(err, client.ErrBackupSession) {
		t.Fatalf("read of a closed session: got %v, want ErrBackupSession", err)
	}
	if err := cl.CallAt(t.Context(), addr, client.MethodBackupClose, &client.BackupCloseRequest{Session: info.Session}, nil); err != nil {
		t.Fatal(err)
	}

	// The whole stream, through the client, verifies.
	path := filepath.Join(t.TempDir(), "big.fsbackup")
	meta, err := master.SaveBackup(t.Context(), cl, path)
	if err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	got, err := master.InspectArchive(fh)
	if err != nil || got.Counts.Files != 25000 || got.Digest != c.Converge() {
		t.Fatalf("inspect of a %d-byte backup: %+v, err %v; want 25000 files and the cluster's digest", meta.SnapshotSize, got, err)
	}
}

// BenchmarkSaveBackup measures a backup of a 100,000-file index on one
// master: b.SetBytes is the snapshot size.
func BenchmarkSaveBackup(b *testing.B) {
	c := mastertest.New(b, 1, mastertest.Options{Config: func(cfg *master.Config) { cfg.MaxFilesPerPeer = -1 }})
	c.Leader()
	cl := c.Client()
	registerBulk(b, cl, identity("bench"), 100_000)
	path := filepath.Join(b.TempDir(), "bench.fsbackup")
	var size int64
	for b.Loop() {
		meta, err := master.SaveBackup(b.Context(), cl, path)
		if err != nil {
			b.Fatal(err)
		}
		size = meta.SnapshotSize
	}
	b.SetBytes(size)
}
