package master

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"

	"fileshare/fsm"
)

// What hashicorp/raft v1.7.3 and raft-boltdb/v2 do with a broken disk, and
// what this file adds (observed in storage_test.go and by reading raft's
// source):
//
//   - A full disk. bbolt returns the write's ENOSPC from Commit and rolls the
//     transaction back, so nothing half-written becomes visible. On a
//     follower, raft answers the AppendEntries with failure and the leader
//     keeps retrying; once space is back the follower catches up. On the
//     leader, raft fails every Apply of the batch (nothing is acknowledged)
//     and steps down; it cannot win an election while it cannot persist its
//     term either, so the majority with room elects a leader and serves. A
//     snapshot that cannot be written is cancelled (its temporary directory
//     removed), the previous one stays, and raft tries again at the next
//     SnapshotInterval. None of this makes raft exit, so a full master stays
//     up and recovers; diskLog adds the one clear, rate-limited error that
//     names the data dir.
//   - Damage. bbolt checksums only its two meta pages: a flipped byte in a
//     data page (where log entries live) reads back as a different entry,
//     and a truncated file or a damaged branch page can make bbolt panic or
//     fault. raft verifies a snapshot's CRC64 when it opens it, but on
//     start it silently skips a snapshot whose meta.json does not parse and
//     falls back to an older snapshot when the newest fails to restore,
//     and it panics on a log entry it cannot read. So checkDataDir, before
//     raft starts, checks the bolt file (consistency check with faults
//     turned into errors), reads every log entry through diskLog (which
//     checksums each entry it stores), and opens and fully restores the
//     newest snapshot. Any damage is an error wrapping ErrDamaged, and the
//     master refuses to start rather than serve or replicate a wrong index.

// ErrDamaged means the data dir holds a damaged raft log or snapshot. The
// master refuses to start from it: wipe the data dir and start it with
// --join to copy the index from the cluster, or start a new cluster from a
// backup with --restore.
var ErrDamaged = errors.New("the data dir is damaged")

// damagedHelp is what a user does about ErrDamaged.
const damagedHelp = "wipe the data dir and start this master with {Join} to copy the index from the rest of the cluster, or start a new cluster from a backup with {Restore}"

func damaged(dir, what string, err error) error {
	return fieldErr(ErrDamaged, "DataDir", "%s in %s: %v; %s", what, dir, err, damagedHelp)
}

// dataDirLocked is ErrDataDirLocked for dir, as a *ConfigError.
func dataDirLocked(dir string) error {
	return fieldErr(ErrDataDirLocked, "DataDir", "%s; stop the other master or choose another {DataDir}", dir)
}

// StorageHooks wrap the master's raft storage. They exist for tests that
// inject disk faults (a full disk, a failing snapshot write) without root;
// a nil hook means the real store. Production code leaves them nil.
type StorageHooks struct {
	// WrapLogStore wraps the bolt log store, below the entry checksums,
	// the full-disk report and raft's log cache.
	WrapLogStore func(raft.LogStore) raft.LogStore
	// WrapSnapshotStore wraps the file snapshot store.
	WrapSnapshotStore func(raft.SnapshotStore) raft.SnapshotStore
	// NoSync makes the raft log and stable store (bolt) skip every
	// fsync, including the one after growing the file: UNSAFE, a
	// power loss then loses acknowledged writes. For the fault
	// harness's self-test only (UnsafeNoFsyncEnv). Snapshots are still
	// fsynced: hashicorp/raft's file snapshot store has no switch for
	// that, and the log alone is what acknowledges a write.
	NoSync bool
}

// checkBolt opens the bolt file at path read-only and runs bbolt's
// consistency check over every page. bbolt may panic, or fault on a page
// past the end of a truncated file, on damage; both are turned into an
// error wrapping ErrDamaged. A missing file is no damage (a new master).
func checkBolt(dir, path string) (err error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = damaged(dir, "the raft log raft.db", fmt.Errorf("bbolt failed reading it: %v", r))
		}
	}()
	// A fault on a mapped page (a file truncated under the mapping) is
	// a panic we can recover, not a crash, in this goroutine.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if st, err := os.Stat(path); err == nil && st.Size() < 4*int64(os.Getpagesize()) {
		return damaged(dir, "the raft log raft.db", fmt.Errorf("it is %d bytes, shorter than a bolt file's first four pages", st.Size()))
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return dataDirLocked(dir)
		}
		return damaged(dir, "the raft log raft.db", err)
	}
	defer db.Close()
	var errs []error
	_ = db.View(func(tx *bbolt.Tx) error {
		if tx.Size() > fileSize(path) {
			errs = append(errs, fmt.Errorf("the file is %d bytes but its pages reach %d (truncated)", fileSize(path), tx.Size()))
			return nil
		}
		for e := range tx.Check() {
			errs = append(errs, e)
			if len(errs) >= 3 {
				break
			}
		}
		return nil
	})
	if len(errs) > 0 {
		return damaged(dir, "the raft log raft.db", errors.Join(errs...))
	}
	return nil
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// checkLogs reads every entry of logs (a diskLog, which verifies each
// entry's checksum) and reports the first it cannot read as ErrDamaged.
// It also reports a gap between the newest snapshot and the first entry.
func checkLogs(dir string, logs raft.LogStore, snapIndex uint64) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = damaged(dir, "the raft log raft.db", fmt.Errorf("reading it failed: %v", r))
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	first, err := logs.FirstIndex()
	if err != nil {
		return damaged(dir, "the raft log raft.db", err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return damaged(dir, "the raft log raft.db", err)
	}
	if last == 0 {
		return nil
	}
	if first > snapIndex+1 {
		return damaged(dir, "the raft log raft.db", fmt.Errorf("it starts at entry %d but the newest snapshot ends at %d", first, snapIndex))
	}
	var l raft.Log
	for i := first; i <= last; i++ {
		if err := logs.GetLog(i, &l); err != nil {
			return damaged(dir, "the raft log raft.db", fmt.Errorf("entry %d of %d..%d: %v", i, first, last, err))
		}
		if l.Index != i {
			return damaged(dir, "the raft log raft.db", fmt.Errorf("entry %d reads back as entry %d", i, l.Index))
		}
	}
	return nil
}

// checkSnapshots checks the snapshot store in dir before raft starts:
// every snapshot directory must have a readable meta.json (raft would
// otherwise skip it silently and start from an older state), and the
// newest snapshot must open (Open verifies its CRC64 over the whole
// state file). That its contents restore (fsm.Restore verifies their
// digest) is checked when raft restores it at start, through
// restoreGuard, so a large index is restored once, not twice. It returns
// the newest snapshot's index, 0 if there is none.
func checkSnapshots(dir string, snaps raft.SnapshotStore) (uint64, error) {
	sdir := filepath.Join(dir, "snapshots")
	ents, err := os.ReadDir(sdir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("read snapshot dir %s: %w", sdir, err)
	}
	for _, e := range ents {
		if !e.IsDir() || filepath.Ext(e.Name()) == ".tmp" {
			continue
		}
		meta := filepath.Join(sdir, e.Name(), "meta.json")
		if err := checkMetaJSON(meta); err != nil {
			return 0, damaged(dir, "snapshot "+e.Name(), err)
		}
	}
	list, err := snaps.List()
	if err != nil {
		return 0, damaged(dir, "the snapshot store", err)
	}
	if len(list) == 0 {
		return 0, nil
	}
	newest := list[0]
	_, rc, err := snaps.Open(newest.ID)
	if err != nil {
		return 0, damaged(dir, "snapshot "+newest.ID, err)
	}
	if err := rc.Close(); err != nil {
		return 0, damaged(dir, "snapshot "+newest.ID, err)
	}
	return newest.Index, nil
}

// restoreGuard is the FSM raft gets: the index, with a record of the
// first Restore that failed. At start, raft restores the newest snapshot
// and, if that fails, quietly falls back to an older one (and with it to
// an older index whose later entries may be gone from the log); New
// checks the record right after raft.NewRaft and refuses to go on.
type restoreGuard struct {
	*fsm.FSM
	mu     sync.Mutex
	failed error
}

// Restore implements raft.FSM.
func (g *restoreGuard) Restore(rc io.ReadCloser) error {
	err := g.FSM.Restore(rc)
	if err != nil {
		g.mu.Lock()
		if g.failed == nil {
			g.failed = err
		}
		g.mu.Unlock()
	}
	return err
}

// restoreFailed returns the first Restore error, if any.
func (g *restoreGuard) restoreFailed() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.failed
}

// checkMetaJSON checks that a snapshot's meta.json parses and names the
// fields raft needs.
func checkMetaJSON(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("meta.json: %v", err)
	}
	var m struct {
		ID    string
		Index uint64
		Term  uint64
		Size  int64
		CRC   []byte
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("meta.json does not parse: %v", err)
	}
	if m.ID == "" || m.Index == 0 || m.Term == 0 || len(m.CRC) != 8 {
		return fmt.Errorf("meta.json lacks the snapshot's ID, index, term or CRC")
	}
	return nil
}

// diskLog wraps the raft log store. It checksums every entry it stores
// (CRC-32C over index, term, type, data and extensions, kept in front of
// the entry's Extensions, which our FSM does not use) and verifies it on
// every read, so a flipped byte in raft.db is an error instead of a
// different command. An entry stored without a checksum (by a build before
// this one) is read as is. It also turns a full disk into one clear,
// rate-limited error naming the data dir. Safe for concurrent use, like the
// store it wraps.
type diskLog struct {
	raft.LogStore
	dir    string
	logger *slog.Logger

	mu       sync.Mutex
	lastWarn time.Time // monotonic; when the full-disk error was last logged
	full     bool      // the last write failed for lack of space
	dropped  int       // full-disk failures since lastWarn
}

// diskFullEvery is how often, at most, diskLog logs a full disk.
const diskFullEvery = 30 * time.Second

var logSumMagic = []byte("fsc1")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func logSum(l *raft.Log, ext []byte) uint32 {
	var hdr [17]byte
	binary.BigEndian.PutUint64(hdr[0:], l.Index)
	binary.BigEndian.PutUint64(hdr[8:], l.Term)
	hdr[16] = byte(l.Type)
	c := crc32.Update(0, castagnoli, hdr[:])
	c = crc32.Update(c, castagnoli, l.Data)
	return crc32.Update(c, castagnoli, ext)
}

// ErrLogChecksum means a log entry read back from raft.db does not match
// the checksum stored with it.
var ErrLogChecksum = errors.New("log entry checksum mismatch")

// StoreLogs implements raft.LogStore.
func (d *diskLog) StoreLogs(logs []*raft.Log) error {
	out := make([]*raft.Log, len(logs))
	for i, l := range logs {
		c := *l // never edit raft's (and the log cache's) copy
		ext := make([]byte, 0, len(logSumMagic)+4+len(l.Extensions))
		ext = append(ext, logSumMagic...)
		ext = binary.BigEndian.AppendUint32(ext, logSum(l, l.Extensions))
		c.Extensions = append(ext, l.Extensions...)
		out[i] = &c
	}
	return d.noteWrite(d.LogStore.StoreLogs(out))
}

// StoreLog implements raft.LogStore.
func (d *diskLog) StoreLog(l *raft.Log) error { return d.StoreLogs([]*raft.Log{l}) }

// GetLog implements raft.LogStore.
func (d *diskLog) GetLog(index uint64, l *raft.Log) error {
	if err := d.LogStore.GetLog(index, l); err != nil {
		return err
	}
	ext := l.Extensions
	if !bytes.HasPrefix(ext, logSumMagic) {
		return nil // stored by an older build, without a checksum
	}
	if len(ext) < len(logSumMagic)+4 {
		return fmt.Errorf("entry %d: %w (checksum cut short)", index, ErrLogChecksum)
	}
	want := binary.BigEndian.Uint32(ext[len(logSumMagic):])
	rest := ext[len(logSumMagic)+4:]
	if len(rest) == 0 {
		rest = nil
	}
	if got := logSum(l, rest); got != want || l.Index != index {
		return fmt.Errorf("entry %d: %w", index, ErrLogChecksum)
	}
	l.Extensions = rest
	return nil
}

// DeleteRange implements raft.LogStore.
func (d *diskLog) DeleteRange(min, max uint64) error {
	return d.noteWrite(d.LogStore.DeleteRange(min, max))
}

// noteWrite logs a full disk once per diskFullEvery (and once when space
// is back) and returns err unchanged.
func (d *diskLog) noteWrite(err error) error {
	full := isDiskFull(err)
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case full && (!d.full || time.Since(d.lastWarn) >= diskFullEvery):
		d.logger.Error("the data dir's disk is full: this master cannot persist raft entries, so it acknowledges nothing and lags; the rest of the cluster keeps serving while a majority has room. Free space on that disk and it catches up by itself",
			"data_dir", d.dir, "err", err, "failures_since_last_report", d.dropped)
		d.lastWarn, d.full, d.dropped = time.Now(), true, 0
	case full:
		d.dropped++
	case err == nil && d.full:
		d.logger.Info("the data dir has room again; writes to the raft log succeed", "data_dir", d.dir)
		d.full, d.dropped = false, 0
	}
	return err
}

// isDiskFull reports whether err says the disk (or the user's quota) is
// full.
func isDiskFull(err error) bool {
	return err != nil && (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT))
}

// snapStore wraps the snapshot store so a snapshot that fails for lack of
// space is reported in the same words as the log (raft itself keeps the
// previous snapshot and retries at the next interval).
type snapStore struct {
	raft.SnapshotStore
	log *diskLog
}

// Create implements raft.SnapshotStore.
func (s snapStore) Create(version raft.SnapshotVersion, index, term uint64, conf raft.Configuration, confIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, conf, confIndex, trans)
	if err != nil {
		return nil, s.log.noteWrite(err)
	}
	return snapSink{SnapshotSink: sink, log: s.log}, nil
}

type snapSink struct {
	raft.SnapshotSink
	log *diskLog
}

func (s snapSink) Write(p []byte) (int, error) {
	n, err := s.SnapshotSink.Write(p)
	if err != nil {
		s.log.noteWrite(err)
	}
	return n, err
}

func (s snapSink) Close() error {
	err := s.SnapshotSink.Close()
	if isDiskFull(err) {
		s.log.noteWrite(err)
	}
	return err
}

var _ io.Writer = snapSink{}
