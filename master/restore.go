package master

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
)

// ErrRestoreHasState means Config.Restore was given for a data dir that
// already holds Raft state from something other than that same backup.
var ErrRestoreHasState = errors.New("the data dir already holds raft state")

// restoreMarker is the file in the data dir that records which backup a
// restore wrote, so that a restart with the same --restore flag starts
// from the restored state instead of refusing or restoring again.
const restoreMarker = "restored-from.json"

type restoreRecord struct {
	Archive   string `json:"archive"`
	SHA256    string `json:"sha256"`
	RaftIndex uint64 `json:"raft_index"`
	RaftTerm  uint64 `json:"raft_term"`
}

// keyCurrentTerm is hashicorp/raft's stable-store key for the current
// term (unexported there as keyCurrentTerm in raft.go).
var keyCurrentTerm = []byte("CurrentTerm")

// restoreBackup seeds an empty data dir from the backup archive at
// cfg.Restore, with cfg.InitialCluster as the configuration: etcd's
// "snapshot restore". Every member that restores the same file with the
// same --initial-cluster gets the identical starting state: the backup's
// FSM snapshot, at the backup's index and term, under the new membership.
//
// Why this and not raft.RecoverCluster: RecoverCluster refuses a data dir
// with no state (the case here), and it would restore the FSM and persist
// a second copy of the snapshot. Instead restoreBackup does in one pass
// what RecoverCluster's end result is: it streams the archive's snapshot
// into the snapshot store with the new configuration (committed at the
// snapshot's index), and sets the stable store's current term to the
// backup's term, so that the new cluster's first election is at a later
// term than the snapshot's last entry (raft compares last-log terms when
// voting; a term below the snapshot's would break that). NewRaft then
// starts from that snapshot like any restarting node, and the election
// and everything after are ordinary Raft. The archive's checksum is
// verified while the snapshot is written; on any error the snapshot is
// cancelled and nothing is left behind.
//
// It returns restored=false, with no error, if the data dir already holds
// the state of a restore of this same archive (a restart with the same
// flags). It returns ErrRestoreHasState for any other existing state.
func restoreBackup(cfg Config, hasState bool, stable raft.StableStore, snaps raft.SnapshotStore, trans raft.Transport) (restored bool, err error) {
	marker := filepath.Join(cfg.DataDir, restoreMarker)
	if hasState {
		var rec restoreRecord
		b, rerr := os.ReadFile(marker)
		if rerr == nil && json.Unmarshal(b, &rec) == nil && rec.SHA256 != "" {
			f, err := os.Open(cfg.Restore)
			if err != nil {
				return false, fmt.Errorf("restore %s: %w", cfg.Restore, err)
			}
			defer f.Close()
			_, sum, err := ReadArchive(f, io.Discard)
			if err != nil {
				return false, fmt.Errorf("restore %s: %w", cfg.Restore, err)
			}
			if hex.EncodeToString(sum[:]) == rec.SHA256 {
				return false, nil
			}
		}
		return false, fieldErr(ErrRestoreHasState, "Restore", "in %s; {Restore} starts a new cluster and needs an empty data dir: move the old data dir away (or choose another {DataDir}) and restore again, or start without {Restore} to keep the existing state", cfg.DataDir)
	}
	f, err := os.Open(cfg.Restore)
	if err != nil {
		return false, fieldErr(err, "Restore", "give the file 'fileshare cluster backup' wrote in {Restore}")
	}
	defer f.Close()
	var servers []raft.Server
	for _, mem := range cfg.InitialCluster {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(mem.ID), Address: raft.ServerAddress(mem.Addr)})
	}
	// The index and term come from the archive's header, which ReadArchive
	// parses before it copies any snapshot byte; the sink is created
	// lazily, on the first byte, once they are known.
	lw := &lazySink{create: func(meta ArchiveMeta) (raft.SnapshotSink, error) {
		return snaps.Create(raft.SnapshotVersionMax, meta.RaftIndex, meta.RaftTerm, raft.Configuration{Servers: servers}, meta.RaftIndex, trans)
	}}
	meta, sum, err := readArchiveInto(f, lw, cfg)
	if err != nil {
		lw.cancel()
		return false, fmt.Errorf("restore %s: %w", cfg.Restore, err)
	}
	if err := lw.close(); err != nil {
		return false, fmt.Errorf("restore %s: write the snapshot into %s: %w", cfg.Restore, cfg.DataDir, err)
	}
	if err := stable.SetUint64(keyCurrentTerm, meta.RaftTerm); err != nil {
		return false, fmt.Errorf("restore %s: set the raft term: %w", cfg.Restore, err)
	}
	abs, _ := filepath.Abs(cfg.Restore)
	rec, _ := json.Marshal(restoreRecord{Archive: abs, SHA256: hex.EncodeToString(sum[:]), RaftIndex: meta.RaftIndex, RaftTerm: meta.RaftTerm})
	if err := os.WriteFile(marker, rec, 0o600); err != nil {
		return false, fmt.Errorf("restore: record the restore in %s: %w", marker, err)
	}
	cfg.Logger.Info("restored backup", "archive", cfg.Restore, "raft_index", meta.RaftIndex, "raft_term", meta.RaftTerm,
		"snapshot_bytes", meta.SnapshotSize, "backup_time", meta.Time, "backup_leader", meta.LeaderID, "members", len(servers))
	return true, nil
}

// readArchiveInto is ReadArchive with a lazySink, which learns the
// archive's metadata before its first byte. On a master with a cluster CA
// the archive must carry a signature by a master of that CA.
func readArchiveInto(f *os.File, lw *lazySink, cfg Config) (ArchiveMeta, [32]byte, error) {
	// A first pass verifies the whole archive (checksum and signature)
	// before anything is written, so a damaged or forged file leaves no
	// partial snapshot directory behind even for an instant; the second
	// pass writes.
	meta, sum, sig, err := ReadSignedArchive(f, io.Discard)
	if err != nil {
		return meta, sum, err
	}
	if cfg.TLS.HasCA() {
		signer, err := sig.Verify(cfg.TLS, meta)
		if err != nil {
			return meta, sum, fieldErr(err, "TLS", "restore only a backup that 'fileshare cluster backup' took from a cluster under the CA this master trusts ({TLS})")
		}
		cfg.Logger.Info("backup signature verified", "signer", signer)
	} else if sig == nil {
		cfg.Logger.Warn("restoring an unsigned backup: without TLS nothing shows who made it; its checksum proves only that it is undamaged")
	}
	if _, err := f.Seek(0, 0); err != nil {
		return meta, sum, err
	}
	lw.meta = meta
	meta2, sum2, err := ReadArchive(f, lw)
	if err == nil && sum2 != sum {
		err = fmt.Errorf("%w: the file changed while it was being restored", ErrBadArchive)
	}
	return meta2, sum2, err
}

// lazySink creates a raft snapshot sink on its first Write.
type lazySink struct {
	meta   ArchiveMeta
	create func(ArchiveMeta) (raft.SnapshotSink, error)
	sink   raft.SnapshotSink
}

func (l *lazySink) Write(p []byte) (int, error) {
	if l.sink == nil {
		s, err := l.create(l.meta)
		if err != nil {
			return 0, err
		}
		l.sink = s
	}
	return l.sink.Write(p)
}

func (l *lazySink) cancel() {
	if l.sink != nil {
		_ = l.sink.Cancel()
	}
}

func (l *lazySink) close() error {
	if l.sink == nil {
		return fmt.Errorf("%w: the archive holds an empty snapshot", ErrBadArchive)
	}
	return l.sink.Close()
}
