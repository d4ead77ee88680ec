// Package peer is the FileShare peer as a Go library: MasterClient talks
// to the SwarmMaster cluster with automatic failover (a leader change is
// never an error its caller sees while the caller's deadline allows a
// retry).
//
//	c, err := peer.NewClient(peer.ClientConfig{Masters: []string{"127.0.0.1:7001", "127.0.0.1:7002"}})
//	if err != nil { ... }
//	defer c.Close()
//	me := peer.Identity{PeerID: "alice", Secret: secret}
//	_, err = c.Join(ctx, me, "127.0.0.1:7101")
//	_, err = c.Register(ctx, me, []transport.FileEntry{{ID: id, Name: "notes.txt", Size: n, PieceSize: 1 << 18}})
//	holders, err := c.Lookup(ctx, id, transport.ReadLinearizable)
package peer
