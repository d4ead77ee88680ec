package master

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/transport"
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
// The fork check: before it changes anything, the master must show that
// the old majority is gone, since recovering beside a cluster that still
// works (or will again once a partition heals) leaves two clusters for
// good. It asks every other member of its last known configuration for
// its status (each for up to recoveryProbeTimeout), and refuses, changing
// nothing, when
//
//   - any member reports a leader (ErrRecoverHealthy);
//   - any member that the recovery file does not list answers at all: it
//     runs, and must be stopped or listed first (ErrRecoverMembersAlive);
//   - the members that the file does not list and that are not shown gone
//     are enough for a quorum of the old configuration
//     (ErrRecoverUnverified): they may be alive behind a partition.
//
// A member is shown gone when its address refuses the connection: the
// host is up and no master listens there. A timeout, a reset or an
// unreachable network proves nothing. When the old masters' hosts are
// down for good, so that nothing can answer, the operator says so with
// RecoveryOverrideFile ('fileshare cluster recover
// --force-split-brain-risk'), and the master recovers anyway, logging the
// risk. Members listed in the file are the other survivors, recovered the
// same way; a lost member must never be started again with its old data.
const RecoveryFile = "peers.json"

// RecoveryOverrideFile, beside RecoveryFile, makes the master recover even
// when it cannot show that the old majority is gone (ErrRecoverUnverified).
// Its presence is the operator's statement that the unreachable old
// masters are gone for good; if they are only cut off, two clusters
// result. It never overrides ErrRecoverHealthy or ErrRecoverMembersAlive.
const RecoveryOverrideFile = "peers.json.force-split-brain-risk"

// recoveryProbeTimeout bounds the status call to each old member.
const recoveryProbeTimeout = 2 * time.Second

// Recovery errors.
var (
	// ErrRecoverHealthy means a member of the last known configuration
	// reported a leader, so recovery was refused.
	ErrRecoverHealthy = errors.New("refusing lost-quorum recovery: the cluster still has a leader")
	// ErrRecoverMembersAlive means a member of the last known
	// configuration that the recovery file does not list answered: it
	// runs, so the old majority is not shown gone.
	ErrRecoverMembersAlive = errors.New("refusing lost-quorum recovery: old members not in the recovery file are running")
	// ErrRecoverUnverified means enough old members for a quorum could not
	// be reached but are not shown gone: they may be working behind a
	// partition.
	ErrRecoverUnverified = errors.New("refusing lost-quorum recovery: cannot show that the old majority is gone")
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

// RecoveryOptions are the choices of WriteRecoveryFile.
type RecoveryOptions struct {
	// ForceSplitBrainRisk writes RecoveryOverrideFile too: recover even
	// if the old majority cannot be shown gone.
	ForceSplitBrainRisk bool
}

// WriteRecoveryFile writes RecoveryFile into dataDir listing members,
// after checking them as --initial-cluster is checked, and writes or
// removes RecoveryOverrideFile as opts says. The master applies it at its
// next start. It replaces any earlier file atomically.
func WriteRecoveryFile(dataDir string, members []Member, opts ...RecoveryOptions) error {
	if _, err := validMembers(members); err != nil {
		return err
	}
	if st, err := os.Stat(filepath.Join(dataDir, "raft.db")); err != nil || st.IsDir() {
		return fmt.Errorf("%w: %s holds no raft.db: give the data dir of a master that has run", ErrBadRecoveryFile, dataDir)
	}
	override := filepath.Join(dataDir, RecoveryOverrideFile)
	if len(opts) > 0 && opts[0].ForceSplitBrainRisk {
		if err := os.WriteFile(override, []byte("the operator states that the unreachable old masters are gone for good\n"), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", override, err)
		}
	} else if err := os.Remove(override); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove an earlier %s: %w", override, err)
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
		return false, fmt.Errorf("%w: %s is in a data dir with no raft state, so there is nothing to recover; remove it (a new cluster starts from an initial cluster)", ErrBadRecoveryFile, path)
	}
	old, err := lastConfiguration(logs, snaps)
	if err != nil {
		return false, fmt.Errorf("lost-quorum recovery: read the last configuration in %s: %w", m.cfg.DataDir, err)
	}
	overridePath := filepath.Join(m.cfg.DataDir, RecoveryOverrideFile)
	_, oerr := os.Stat(overridePath)
	force := oerr == nil
	if err := m.checkOldMajorityGone(ctx, old, members, force); err != nil {
		if errors.Is(err, ErrRecoverUnverified) {
			return false, fieldErr(err, "RecoveryOptions.ForceSplitBrainRisk", "if those masters' hosts are gone for good, write the file again with {RecoveryOptions.ForceSplitBrainRisk} (if they are only cut off, two clusters result); otherwise remove %s and start this master normally", path)
		}
		return false, fieldErr(err, "Join", "remove %s and start this master normally (or rejoin it with 'fileshare cluster remove' and {Join})", path)
	}
	m.logger.Warn("lost-quorum recovery: rewriting the raft configuration", "file", path, "old", fmtServers(old), "new", fmtServers(servers))
	if err := raft.RecoverCluster(rc, fsm.New(), logs, m.store, snaps, m.raftTrans, raft.Configuration{Servers: servers}); err != nil {
		return false, fmt.Errorf("lost-quorum recovery: %w", err)
	}
	if err := os.Rename(path, path+".applied"); err != nil {
		return false, fmt.Errorf("lost-quorum recovery succeeded but %s could not be renamed (remove it before the next start): %w", path, err)
	}
	if force {
		if err := os.Remove(overridePath); err != nil {
			m.logger.Warn("cannot remove the recovery override file; remove it by hand", "path", overridePath, "err", err)
		}
	}
	m.logger.Warn("lost-quorum recovery done; add new masters by joining them to the cluster", "members", fmtServers(servers))
	return true, nil
}

// checkOldMajorityGone asks every server of old but this one for its
// status, in parallel, and refuses recovery to members unless the old
// majority is shown gone (see RecoveryFile). force accepts members that
// cannot be reached and are not shown gone.
func (m *Master) checkOldMajorityGone(ctx context.Context, old []raft.Server, members []Member, force bool) error {
	listed := map[string]bool{}
	for _, mem := range members {
		listed[mem.ID] = true
	}
	var (
		mu                   sync.Mutex
		leaders, alive, lost []string
		wg                   sync.WaitGroup
	)
	voters := 0
	for _, s := range old {
		if s.Suffrage == raft.Voter {
			voters++
		}
		if string(s.ID) == m.cfg.ID || string(s.Address) == m.advertise {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, recoveryProbeTimeout)
			defer cancel()
			var st client.Status
			err := m.client.Call(cctx, string(s.Address), client.MethodStatus, &client.StatusRequest{}, &st)
			refused := err != nil && errors.Is(err, transport.ErrNoListener) && connRefused(cctx, string(s.Address))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && (st.LeaderID != "" || st.State == client.StateLeader):
				leaders = append(leaders, fmt.Sprintf("%s at %s reports leader %s (term %d)", st.ID, s.Address, st.LeaderID, st.Term))
			case err == nil && !listed[string(s.ID)]:
				alive = append(alive, fmt.Sprintf("%s at %s answers (%s, no leader)", s.ID, s.Address, st.State))
			case err == nil:
				// Another survivor, recovered or about to be.
			case refused:
				m.logger.Info("lost-quorum recovery: nothing listens at an old member's address", "id", s.ID, "addr", s.Address)
			case listed[string(s.ID)]:
				m.logger.Info("lost-quorum recovery: another survivor does not answer", "id", s.ID, "addr", s.Address, "err", err)
			case s.Suffrage == raft.Voter:
				m.logger.Warn("lost-quorum recovery: an old member cannot be reached, and may be alive", "id", s.ID, "addr", s.Address, "err", err)
				lost = append(lost, fmt.Sprintf("%s at %s (%v)", s.ID, s.Address, err))
			}
		})
	}
	wg.Wait()
	slices.Sort(leaders)
	slices.Sort(alive)
	slices.Sort(lost)
	if len(leaders) > 0 {
		return fmt.Errorf("%w: %s; recovering would fork it into two clusters", ErrRecoverHealthy, strings.Join(leaders, "; "))
	}
	if len(alive) > 0 {
		return fmt.Errorf("%w: %s; stop them (or list them in the recovery file) first", ErrRecoverMembersAlive, strings.Join(alive, "; "))
	}
	if quorum := voters/2 + 1; len(lost) >= quorum {
		if !force {
			return fmt.Errorf("%w: %d of the %d old voters, a quorum, cannot be reached but do not refuse connections, so they may be a working cluster behind a partition: %s", ErrRecoverUnverified, len(lost), voters, strings.Join(lost, "; "))
		}
		m.logger.Warn("lost-quorum recovery forced (ForceSplitBrainRisk): old members that may be alive are unreachable; if they are, there are now two clusters", "unreachable", strings.Join(lost, "; "))
	}
	return nil
}

// connRefused reports whether a TCP connection to addr is refused: the
// host is up and nothing listens there. A timeout or an unreachable
// network is not a refusal.
func connRefused(ctx context.Context, addr string) bool {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
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
