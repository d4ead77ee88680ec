package master

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/client"
	"fileshare/fsm"
)

// Lost-quorum recovery. When a majority of the masters is gone for good,
// the survivors cannot elect a leader and the cluster stops taking
// writes. To recover (as with Consul's and rqlite's peers.json):
//
//  1. Stop every surviving master.
//  2. On each survivor, write RecoveryFile into its data dir listing the
//     survivors, the same list on each ('fileshare cluster recover
//     --data-dir DIR --members ID=HOST:PORT,...' writes it; one survivor
//     alone recovers as a single-master cluster).
//  3. Start the survivors with their usual flags. At start-up a master
//     that finds the file checks that no member of its last known
//     configuration answers as part of a working cluster (see below),
//     then rewrites its Raft state with raft.RecoverCluster so that the
//     configuration is exactly the file's members, renames the file to
//     RecoveryFile+".applied" (so a restart does not recover again), and
//     starts. The survivors elect a leader among themselves.
//  4. Add new masters with 'fileshare master --join'.
//
// Every entry a survivor holds is kept, including entries it holds but
// never learnt were committed: recover from the survivor with the highest
// last index (cluster status shows it) if they differ. An acknowledged
// write was on a majority; if all of that majority is lost, so is the write.
//
// The fork check: before it changes anything, the master asks every other
// member of its last known configuration for its status (each for up to
// recoveryProbeTimeout). If any answers and knows a leader, the cluster
// still has a working quorum, and recovering would start a second cluster
// beside it; the master refuses with ErrRecoverHealthy and changes nothing.
// A member that does not answer, or answers without a leader, is no
// obstacle.
const RecoveryFile = "peers.json"

// recoveryProbeTimeout bounds the status call to each old member.
const recoveryProbeTimeout = 2 * time.Second

// Recovery errors.
var (
	// ErrRecoverHealthy means a member of the last known configuration
	// reported a leader, so recovery was refused.
	ErrRecoverHealthy = errors.New("refusing lost-quorum recovery: the cluster still has a leader")
	// ErrBadRecoveryFile means RecoveryFile could not be used as written.
	ErrBadRecoveryFile = errors.New("invalid recovery file")
)

// recoveryEntry is one line of RecoveryFile: a JSON array of
// {"id": "m1", "address": "10.0.0.1:7001"}, the shape of Consul's
// peers.json.
type recoveryEntry struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// WriteRecoveryFile writes RecoveryFile into dataDir listing members,
// after checking them as --initial-cluster is checked. The master applies
// it at its next start. It replaces any earlier file atomically.
func WriteRecoveryFile(dataDir string, members []Member) error {
	if _, err := validMembers(members); err != nil {
		return err
	}
	if st, err := os.Stat(filepath.Join(dataDir, "raft.db")); err != nil || st.IsDir() {
		return fmt.Errorf("%w: %s holds no raft.db: give the data dir of a master that has run (--data-dir)", ErrBadRecoveryFile, dataDir)
	}
	entries := make([]recoveryEntry, len(members))
	for i, m := range members {
		entries[i] = recoveryEntry{ID: m.ID, Address: m.Addr}
	}
	b, err := json.MarshalIndent(entries, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dataDir, ".peers-*.json")
	if err != nil {
		return fmt.Errorf("write the recovery file in %s: %w", dataDir, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write the recovery file in %s: %w", dataDir, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dataDir, RecoveryFile))
}

// validMembers checks a member list as withDefaults checks
// --initial-cluster: valid, dialable, no ID or address twice.
func validMembers(members []Member) ([]raft.Server, error) {
	if len(members) == 0 {
		return nil, fmt.Errorf("%w: it lists no members", ErrBadRecoveryFile)
	}
	var servers []raft.Server
	ids, addrs := map[string]bool{}, map[string]bool{}
	for _, m := range members {
		if err := validID(m.ID); err != nil {
			return nil, fmt.Errorf("%w: member %q: %v", ErrBadRecoveryFile, m.ID, err)
		}
		if err := checkDialable(m.Addr); err != nil {
			return nil, fmt.Errorf("%w: member %s address %q %v", ErrBadRecoveryFile, m.ID, m.Addr, err)
		}
		if ids[m.ID] || addrs[m.Addr] {
			return nil, fmt.Errorf("%w: %s or %s is listed twice", ErrBadRecoveryFile, m.ID, m.Addr)
		}
		ids[m.ID], addrs[m.Addr] = true, true
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.Addr)})
	}
	return servers, nil
}

func readRecoveryFile(path string) ([]Member, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var entries []recoveryEntry
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("%w: %s is not a JSON array of {\"id\": ..., \"address\": ...}: %v", ErrBadRecoveryFile, path, err)
	}
	out := make([]Member, len(entries))
	for i, e := range entries {
		out[i] = Member{ID: e.ID, Addr: e.Address}
	}
	return out, nil
}

// recoverFromFile applies RecoveryFile if the data dir holds one (see
// RecoveryFile for the procedure and the fork check). It runs in New
// before NewRaft, once the cluster listener is up (the fork check dials
// from it). It reports whether it recovered.
func (m *Master) recoverFromFile(ctx context.Context, rc *raft.Config, hasState bool, logs raft.LogStore, snaps raft.SnapshotStore) (bool, error) {
	path := filepath.Join(m.cfg.DataDir, RecoveryFile)
	members, err := readRecoveryFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	fix := fmt.Sprintf("fix or remove %s", path)
	servers, err := validMembers(members)
	if err != nil {
		return false, fmt.Errorf("%s: %w; %s", path, err, fix)
	}
	if !slices.ContainsFunc(members, func(mem Member) bool { return mem.ID == m.cfg.ID && mem.Addr == m.advertise }) {
		return false, fmt.Errorf("%w: %s does not list this master (%s at %s); %s", ErrBadRecoveryFile, path, m.cfg.ID, m.advertise, fix)
	}
	if !hasState {
		return false, fmt.Errorf("%w: %s is in a data dir with no raft state, so there is nothing to recover; remove it (a new cluster starts with --initial-cluster)", ErrBadRecoveryFile, path)
	}
	old, err := lastConfiguration(logs, snaps)
	if err != nil {
		return false, fmt.Errorf("lost-quorum recovery: read the last configuration in %s: %w", m.cfg.DataDir, err)
	}
	if err := m.probeForLeader(ctx, old); err != nil {
		return false, fmt.Errorf("%w; remove %s and start this master normally (or rejoin it with 'fileshare cluster remove' and --join)", err, path)
	}
	m.logger.Warn("lost-quorum recovery: rewriting the raft configuration", "file", path, "old", fmtServers(old), "new", fmtServers(servers))
	if err := raft.RecoverCluster(rc, fsm.New(), logs, m.store, snaps, m.raftTrans, raft.Configuration{Servers: servers}); err != nil {
		return false, fmt.Errorf("lost-quorum recovery: %w", err)
	}
	if err := os.Rename(path, path+".applied"); err != nil {
		return false, fmt.Errorf("lost-quorum recovery succeeded but %s could not be renamed (remove it before the next start): %w", path, err)
	}
	m.logger.Warn("lost-quorum recovery done; add new masters with --join", "members", fmtServers(servers))
	return true, nil
}

// probeForLeader asks every server but this one for its status, in
// parallel, and returns ErrRecoverHealthy if any knows a leader.
func (m *Master) probeForLeader(ctx context.Context, servers []raft.Server) error {
	var mu sync.Mutex
	var found []string
	var wg sync.WaitGroup
	for _, s := range servers {
		if string(s.ID) == m.cfg.ID || string(s.Address) == m.advertise {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, recoveryProbeTimeout)
			defer cancel()
			var st client.Status
			err := m.client.Call(cctx, string(s.Address), client.MethodStatus, &client.StatusRequest{}, &st)
			if err != nil {
				m.logger.Info("lost-quorum recovery: old member does not answer", "id", s.ID, "addr", s.Address, "err", err)
				return
			}
			if st.LeaderID != "" || st.State == raft.Leader.String() {
				mu.Lock()
				found = append(found, fmt.Sprintf("%s at %s reports leader %s (term %d)", st.ID, s.Address, st.LeaderID, st.Term))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(found) > 0 {
		slices.Sort(found)
		return fmt.Errorf("%w: %s; recovering would fork it into two clusters", ErrRecoverHealthy, strings.Join(found, "; "))
	}
	return nil
}

// lastConfiguration returns the latest configuration in the stores: the
// newest snapshot's, replaced by any configuration entry in the log after
// it (as raft itself computes it at start-up).
func lastConfiguration(logs raft.LogStore, snaps raft.SnapshotStore) (servers []raft.Server, err error) {
	list, err := snaps.List()
	if err != nil {
		return nil, err
	}
	var after uint64
	if len(list) > 0 {
		servers, after = list[0].Configuration.Servers, list[0].Index
	}
	first, err := logs.FirstIndex()
	if err != nil {
		return nil, err
	}
	last, err := logs.LastIndex()
	if err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil { // raft.DecodeConfiguration panics on bad data
			err = fmt.Errorf("a configuration entry in the log is damaged: %v", r)
		}
	}()
	for i := max(first, after+1); i <= last && i > 0; i++ {
		var e raft.Log
		if err := logs.GetLog(i, &e); err != nil {
			return nil, fmt.Errorf("read log entry %d: %w", i, err)
		}
		if e.Type == raft.LogConfiguration {
			servers = raft.DecodeConfiguration(e.Data).Servers
		}
	}
	return servers, nil
}

func fmtServers(servers []raft.Server) string {
	parts := make([]string, len(servers))
	for i, s := range servers {
		parts[i] = fmt.Sprintf("%s=%s", s.ID, s.Address)
	}
	return strings.Join(parts, ",")
}
