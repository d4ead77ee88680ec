// Package master is a SwarmMaster node: the FileShare index served by a
// Raft cluster of 3 or 5 masters.
//
// A Master wires hashicorp/raft (raft-boltdb/v2 for the log and stable
// store, a file snapshot store) to the fsm package and to one transport.Mux
// that carries both Raft and the RPC service peers call. It also serves
// HTTP on a second port: status endpoints, Prometheus /metrics (on a
// registry of its own; metrics.go) and the /ui/ dashboard, a static page
// fed by server-sent events (dashboard.go).
//
// # Writes
//
// A peer may send a write to any master. A follower forwards it to the
// leader; while an election is in progress it holds the write and retries
// until the caller's deadline. At the leader, a batcher packs concurrent
// commands into one log entry (fsm.Batch). Every peer write carries a
// request ID that the index deduplicates, so a retry after an unknown
// outcome (raft.ErrLeadershipLost, a lost connection) never applies twice.
//
// # Reads
//
// Each read names its consistency (client.ReadLevel): stale reads are
// answered from the local index on any master; leader reads from the
// leader's index; linearizable reads (the default) by the leader after a
// coalesced VerifyLeader round that began after the read arrived, in the
// same term. A new leader serves leader and linearizable reads only after a
// Barrier in its term has applied everything committed before it.
//
// # Liveness
//
// Peers heartbeat to the leader, which keeps last-seen times in memory
// only; every few seconds it proposes one ExpirePeers command for the peers
// silent longer than the lease. A new leader starts every peer with a full
// lease.
//
// # Lifecycle
//
//	m, err := master.New(ctx, master.Config{ID: "m1", DataDir: dir, Listen: "127.0.0.1:7001",
//		InitialCluster: members})
//	...
//	defer m.Close() // hands off leadership, then stops in order
//
// Shutdown(ctx) is Close with a deadline; CloseNow skips the hand-off, the
// closest an in-process test gets to a crash. Every goroutine a Master
// starts ends before the first of these returns, except helpers blocked on
// a raft future that raft abandoned when it stopped (see batcher and
// verifier).
//
// # Units
//
// The parts of a Master that hold timing or concurrency logic take small
// interfaces, declared next to them, instead of *raft.Raft or *Master: the
// batcher an applier (Apply), the read gate a readRaft (VerifyLeader,
// State, CurrentTerm), the expirer functions for peers, proposals and the
// clock. Their unit tests run each alone against fakes, in virtual time.
package master
