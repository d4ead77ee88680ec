// Package fsm is FileShare's index as a deterministic, Raft-replicated state
// machine: which peers have joined, where they listen, which files they hold
// and under which names — and the BitTorrent swarms every master tracks.
//
// # Commands
//
// Every change is a Command, encoded with Encode, proposed to raft by the
// leader, and applied by every master's FSM in log order:
//
//	JoinPeer         a peer announces itself (first join stores its Token)
//	LeavePeer        a peer leaves; its holdings go with it
//	RegisterFiles    a peer holds these files (atomic, set semantics)
//	UnregisterFiles  a peer no longer holds these files (set semantics)
//	ExpirePeers      the leader removes peers whose lease ran out
//	Batch            the leader packs many encoded commands into one entry
//	Announce         a BitTorrent peer enters, changes or leaves a swarm
//	ExpireSwarmPeers the leader removes swarm records whose lease ran out
//	TrackerPolicy    an operator changes which info-hashes are tracked
//
// The encoding is byte 0 = CommandType, byte 1 = CommandVersion, then a
// msgpack body. Decode returns only commands that pass Validate, bounds what
// hostile bytes can make it allocate, and never panics, so a corrupt entry
// becomes an error Response instead of a crashed node.
//
// A master turns a peer's request into a log entry like this:
//
//	data, err := fsm.Encode(fsm.RegisterFiles{
//		Peer:      client.PeerIDOf(pub), // pub: the key the caller's TLS certificate proved
//		Token:     fsm.TokenOf(pub),     // the index checks it against the peer's first join
//		RequestID: reqID,                 // chosen by the client, reused on retry
//		Files:     []fsm.FileMeta{{ID: id, Name: "talk.mp4", Size: n, PieceSize: 1 << 18}},
//	})
//	if err != nil { ... } // errors.Is(err, fsm.ErrInvalid): reject the request
//	fut := r.Apply(data, timeout)
//	if err := fut.Error(); err != nil { ... } // raft-level failure; outcome may be unknown
//	resp := fut.Response().(fsm.Response)
//	if resp.Err != nil { ... } // fsm.ErrUnknownPeer, ErrUnauthorized, ErrConflict ...
//
// # Determinism
//
// Apply does no I/O, reads no clock and no random source, and never depends
// on map iteration order for anything it stores or encodes: time arrives in
// the commands' Time fields, identities in the commands, and randomness for
// peer lists from the caller of SwarmPeers. Two FSMs
// that applied the same log have the same Digest, which is cheap to read and
// meant for cross-checking replicas.
//
// # Idempotence and authentication
//
// Every peer-issued command carries a non-zero RequestID. The FSM remembers
// the last DedupWindow request IDs of each peer with their outcomes; a retry
// (after a timeout or raft.ErrLeadershipLost, when the first outcome is
// unknown) returns Response{Duplicate: true, Err: first outcome} and changes
// nothing. A peer's Token is fixed by its first JoinPeer; a command carrying
// another token fails with ErrUnauthorized and is not remembered, so nobody
// can remove another peer's files or pollute its dedup window.
//
// # Swarms
//
// A swarm record is keyed by (InfoHash, SwarmPeerID, address) and holds the
// port, seeder flag, the client's key and the Time of the last Announce
// applied to it. Only membership changes enter the log; a re-announce that
// changes nothing renews the record's soft lease with TouchSwarmPeer, which
// is not replicated, and the leader proposes ExpireSwarmPeers for what
// SilentSwarmPeers reports:
//
//	if fsm.TouchSwarmPeer(ih, peer, ip, now.UnixNano()) && !changed {
//		reply(fsm.SwarmPeers(ih, peer, numWant, left == 0, rand.Uint64()))
//	}
//	// on the leader, periodically:
//	refs := fsm.SilentSwarmPeers(now.Add(-lease).UnixNano(), fsm.MaxSwarmRefsPerExpire)
//	data, _ := fsm.Encode(fsm.ExpireSwarmPeers{Entries: refs, Time: now.UnixNano()})
//
// Records are packed (56 bytes, no pointers) and a swarm's records sit in
// one slice with the leechers first, so a peer list costs O(numwant) and
// the state stays under 100 heap bytes per record (BenchmarkSwarmMemory).
// SwarmEntriesFrom and SwarmStats are replicated counts the leader checks
// quotas against before proposing.
//
// # Snapshots
//
// Snapshot is O(1) in the size of the index: state is split into shards and
// objects stamped with a generation, and Apply copies whatever a pending
// snapshot still shares before changing it. Persist, on raft's snapshot
// goroutine, streams the frozen view in sorted order; Restore reads it back,
// checks it against the seal at its end (a hash of the applied index and the
// state digest, recomputed from what was read) and replaces the state
// atomically.
//
// # Queries
//
// Lookup, Search, Peers, Peer, PeerFiles, Counts, Digest, AppliedIndex and
// the swarm queries (SwarmPeer, SwarmPeers, Scrape, TrackerAllowed,
// TrackerPolicyState, SwarmEntriesFrom, SwarmStats, SilentSwarmPeers, and
// TouchSwarmPeer, which writes soft state only) may be called from any
// goroutine. They read this node's copy, which may trail
// the leader; the master decides which read level a caller gets. Search is a
// linear scan, but a 64-bit bigram filter per file lets it skip most
// non-matching files without touching them, and it releases the lock between
// shards so that it never holds up Apply for long.
package fsm
