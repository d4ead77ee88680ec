package master

import (
	"context"

	"github.com/hashicorp/raft"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/tracker"
)

// metricsSource is what the metrics read from their master: its identity
// and leadership, raft's progress and observations, the index's counts,
// the tracker front-ends' counters and the members' status. *Master
// implements it; the metrics reach nothing else of the master.
type metricsSource interface {
	// ID is this master's server ID.
	ID() string
	// Leader is the leader this master knows of ("" if none).
	Leader() (id, addr string)
	// IsLeader reports whether this master is the Raft leader right now.
	IsLeader() bool
	// lifetime ends when the master begins to shut down.
	lifetime() context.Context
	// raftNode is the master's running raft.
	raftNode() raftProgress
	// indexCounts is the size of this master's copy of the index.
	indexCounts() fsm.Counts
	// swarmStats is the number of swarms and peer records in this
	// master's copy of the index.
	swarmStats() (swarms, peers int)
	// TrackerStats is the tracker front-ends' counters, nil for one that is off.
	TrackerStats() (httpStats, udpStats *tracker.Stats)
	// configuration is raft's latest configuration.
	configuration() ([]raft.Server, error)
	// callStatus asks the master at addr for its status.
	callStatus(ctx context.Context, addr string, st *client.Status) error
}

// dashboardSource is what the dashboard reads from its master: its
// identity and status, the other members' status, and the index's and
// tracker's sizes. *Master implements it; the dashboard reaches nothing
// else of the master.
type dashboardSource interface {
	// ID is this master's server ID.
	ID() string
	// lifetime ends when the master begins to shut down.
	lifetime() context.Context
	// Status is this master's own status (client.MethodStatus).
	Status(ctx context.Context, members bool) client.Status
	// callStatus asks the master at addr for its status.
	callStatus(ctx context.Context, addr string, st *client.Status) error
	// lastLeaderContact is this master's last contact with its leader.
	lastLeaderContact() int64
	// swarmStats is the number of swarms and peer records in this
	// master's copy of the index.
	swarmStats() (swarms, peers int)
	// announces is the tracker's answered announces, both protocols.
	announces() uint64
}

// *Master is the source of its metrics and its dashboard.
var (
	_ metricsSource   = (*Master)(nil)
	_ dashboardSource = (*Master)(nil)
)

// raftProgress is the part of *raft.Raft the metrics read.
type raftProgress interface {
	CurrentTerm() uint64
	CommitIndex() uint64
	AppliedIndex() uint64
	LastIndex() uint64
	RegisterObserver(*raft.Observer)
	DeregisterObserver(*raft.Observer)
}

// lifetime ends when the master begins to shut down (metricsSource).
func (m *Master) lifetime() context.Context { return m.ctx }

// raftNode is the master's running raft (metricsSource).
func (m *Master) raftNode() raftProgress { return m.raft }

// indexCounts is the size of this master's copy of the index (metricsSource).
func (m *Master) indexCounts() fsm.Counts { return m.fsm.Counts() }

// swarmStats is the number of swarms and peer records in this master's
// copy of the index (metricsSource).
func (m *Master) swarmStats() (swarms, peers int) { return m.fsm.SwarmStats() }

// callStatus asks the master at addr for its status over the cluster
// port (metricsSource).
func (m *Master) callStatus(ctx context.Context, addr string, st *client.Status) error {
	return m.client.Call(ctx, addr, client.MethodStatus, &client.StatusRequest{}, st)
}

// announces is the tracker's answered announces, both protocols.
func (m *Master) announces() uint64 {
	var n uint64
	h, u := m.TrackerStats()
	for _, st := range []*tracker.Stats{h, u} {
		if st != nil {
			n += st.Announces.Load()
		}
	}
	return n
}
