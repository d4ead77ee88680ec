package master

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"

	"fileshare/client"
)

// Membership hygiene on the leader, by hashicorp/raft-autopilot (what
// Consul and Nomad run):
//
//   - A master that joins is added as a non-voter; autopilot promotes it
//     to voter once it has been healthy (in touch with the leader, in the
//     leader's term, at most autopilotMaxTrailingLogs behind) for
//     Config.ServerStabilizationTime. A master still catching up therefore
//     never counts towards the quorum, so adding one to a 2-of-3 cluster
//     cannot stall writes.
//   - With Config.CleanupDeadMasters, a member the leader has not reached
//     for Config.DeadMasterTimeout is removed from the configuration, but
//     never below Config.MinQuorum voters and never more than a minority
//     at once (autopilot's own rule).
//
// Autopilot needs to know which servers are alive. Consul learns that from
// Serf; we have no gossip layer, so the leader probes every member with
// the Cluster.Status RPC each AutopilotInterval (autopilot's state update
// asks for exactly those stats) and a member counts as failed once no probe
// has succeeded for DeadMasterTimeout. Each leader term starts with a fresh
// delegate, so a new leader gives every member the whole timeout before it
// can be judged dead.

// autopilotMaxTrailingLogs is how far behind the leader's last index a
// member may be and still count as healthy (Consul's default is 250; a
// Status probe and the leader's index are read a few milliseconds apart,
// which under a write burst is worth hundreds of entries).
const autopilotMaxTrailingLogs = 1024

// apDelegate is autopilot's view of this master while it leads: one per
// leader term, created by leaderSession.
type apDelegate struct {
	m   *Master
	cfg *autopilot.Config

	mu       sync.Mutex
	lastSeen map[raft.ServerID]time.Time // last successful probe (or first sighting)

	// removals tracks the RemoveServer calls RemoveFailedServer starts;
	// leaderSession waits for them after stopping autopilot.
	removals sync.WaitGroup
	ctx      context.Context // the leader session
}

func newAPDelegate(ctx context.Context, m *Master) *apDelegate {
	return &apDelegate{
		m:   m,
		ctx: ctx,
		cfg: &autopilot.Config{
			CleanupDeadServers: m.cfg.CleanupDeadMasters,
			// A follower hears from the leader every HeartbeatTimeout/10;
			// twice the heartbeat timeout absorbs GC pauses on a loaded
			// machine while still catching a member that is cut off.
			LastContactThreshold:    2 * m.cfg.HeartbeatTimeout,
			MaxTrailingLogs:         autopilotMaxTrailingLogs,
			MinQuorum:               uint(m.cfg.MinQuorum),
			ServerStabilizationTime: m.cfg.ServerStabilizationTime,
		},
		lastSeen: map[raft.ServerID]time.Time{},
	}
}

// AutopilotConfig implements autopilot.ApplicationIntegration.
func (d *apDelegate) AutopilotConfig() *autopilot.Config { return d.cfg }

// NotifyState implements autopilot.ApplicationIntegration; the state is
// read back through Master.Status, so nothing is done here.
func (d *apDelegate) NotifyState(*autopilot.State) {}

// KnownServers returns every member of the Raft configuration, alive if
// the leader has reached it within DeadMasterTimeout. It must list every
// member: autopilot removes members it does not list as stale.
func (d *apDelegate) KnownServers() map[raft.ServerID]*autopilot.Server {
	servers, err := d.m.configuration()
	if err != nil {
		return nil // autopilot skips this round
	}
	leaderID := raft.ServerID(d.m.cfg.ID)
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[raft.ServerID]*autopilot.Server, len(servers))
	for _, s := range servers {
		seen, ok := d.lastSeen[s.ID]
		if !ok || s.ID == leaderID {
			seen = now
			d.lastSeen[s.ID] = now
		}
		status := autopilot.NodeAlive
		if now.Sub(seen) > d.m.cfg.DeadMasterTimeout {
			status = autopilot.NodeFailed
		}
		out[s.ID] = &autopilot.Server{
			ID: s.ID, Name: string(s.ID), Address: s.Address,
			NodeStatus: status, RaftVersion: raft.ProtocolVersionMax,
			IsLeader: s.ID == leaderID,
			// Every master may vote: the removal rules count potential
			// voters by this type.
			NodeType: autopilot.NodeVoter,
		}
	}
	return out
}

// FetchServerStats probes every server in parallel with the Status RPC
// (the leader itself from its own raft) until ctx, which autopilot bounds
// to half its update interval, ends.
func (d *apDelegate) FetchServerStats(ctx context.Context, servers map[raft.ServerID]*autopilot.Server) map[raft.ServerID]*autopilot.ServerStats {
	out := make(map[raft.ServerID]*autopilot.ServerStats, len(servers))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, srv := range servers {
		if id == raft.ServerID(d.m.cfg.ID) {
			term, _ := strconv.ParseUint(d.m.raft.Stats()["last_log_term"], 10, 64)
			mu.Lock()
			out[id] = &autopilot.ServerStats{LastContact: 0, LastTerm: term, LastIndex: d.m.raft.LastIndex()}
			mu.Unlock()
			continue
		}
		// Owned by this call, which waits for it; ctx bounds it.
		wg.Go(func() {
			var st client.Status
			if err := d.m.client.Call(ctx, string(srv.Address), client.MethodStatus, &client.StatusRequest{}, &st); err != nil || st.ID != string(id) {
				return
			}
			stats := &autopilot.ServerStats{LastContact: -1, LastTerm: st.Term, LastIndex: st.LastIndex}
			for _, mem := range st.Members {
				if mem.ID == st.ID && mem.LastContactMillis >= 0 {
					stats.LastContact = time.Duration(mem.LastContactMillis) * time.Millisecond
				}
			}
			mu.Lock()
			out[id] = stats
			mu.Unlock()
			d.mu.Lock()
			d.lastSeen[id] = time.Now()
			d.mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// RemoveFailedServer implements autopilot.ApplicationIntegration: it
// removes srv from the configuration in the background (autopilot wants
// it to return at once); leaderSession waits for it.
func (d *apDelegate) RemoveFailedServer(srv *autopilot.Server) {
	d.mu.Lock()
	since := d.lastSeen[srv.ID]
	d.mu.Unlock()
	if d.ctx.Err() != nil {
		return
	}
	d.removals.Go(func() {
		d.m.logger.Warn("removing dead master from the cluster", "id", srv.ID, "addr", srv.Address,
			"unreachable_for", time.Since(since).Round(time.Second), "min_quorum", d.m.cfg.MinQuorum)
		if err := d.m.raft.RemoveServer(srv.ID, 0, d.m.cfg.ApplyTimeout).Error(); err != nil {
			d.m.logger.Warn("could not remove dead master; will retry", "id", srv.ID, "err", err)
			return
		}
		d.m.logger.Info("removed dead master", "id", srv.ID)
	})
}

// runAutopilot runs autopilot while ctx (a leader session) lasts, and
// returns once it and every removal it started have stopped.
func (m *Master) runAutopilot(ctx context.Context) {
	d := newAPDelegate(ctx, m)
	ap := autopilot.New(m.raft, d,
		autopilot.WithLogger(newHCLogBridge(m.logger, "autopilot")),
		autopilot.WithUpdateInterval(m.cfg.AutopilotInterval),
		autopilot.WithReconcileInterval(m.cfg.AutopilotInterval),
	)
	m.pilot.Store(d)
	defer m.pilot.CompareAndSwap(d, nil)
	ap.Start(ctx)
	<-ctx.Done()
	<-ap.Stop()
	d.removals.Wait()
}

// dead returns the members not reached for DeadMasterTimeout.
func (d *apDelegate) dead() map[string]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]bool{}
	for id, seen := range d.lastSeen {
		if time.Since(seen) > d.m.cfg.DeadMasterTimeout {
			out[string(id)] = true
		}
	}
	return out
}

// addJoiner adds a master that asked to join as a non-voter, which
// autopilot promotes to voter once it has been stable for
// ServerStabilizationTime. Only the leader calls it.
func (m *Master) addJoiner(id, addr string) error {
	return m.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, m.cfg.ApplyTimeout).Error()
}
