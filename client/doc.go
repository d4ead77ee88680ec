// Package client is the SwarmMaster API and the client that speaks it.
//
// It owns the vocabulary every caller of the cluster shares — method names,
// requests and replies, read levels, the peer Identity that proves who
// writes — and Client, the failover client that peers, the CLI, the fault
// harness and the benchmarks use. It links neither the peer daemon nor
// raft: a program that only talks to the cluster needs this package and
// transport.
//
// # A call
//
//	c, err := client.New(client.Config{
//		Masters: []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"},
//	})
//	if err != nil { ... }
//	defer c.Close()
//	r, err := c.Lookup(ctx, fileID, client.ReadLinearizable)
//
// Client hides leader changes: it follows "not leader, try X" hints, moves
// to the next master when one does not answer, and retries with jittered
// backoff until the caller's context ends. Every write carries a request ID
// chosen once per logical call, so a retry after an unknown outcome is
// applied at most once. Errors keep their identity across the wire
// (transport.RemoteError), so errors.Is(err, fsm.ErrUnauthorized) works in
// the caller.
//
// # Read levels
//
// Every read names its consistency (ReadLevel): ReadStale from whichever
// master answers, ReadLeader from the leader without a quorum round, and
// ReadLinearizable (the default) after the leader confirms it still leads.
package client
