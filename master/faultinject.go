package master

// Hooks for tests and the fault harness (master/mastertest, peer and cmd
// tests). Nothing in a production deployment calls them.

// Block is a fault-injection hook for tests and the harness: it cuts this
// master's links to the given IPs, both ways, by closing its open
// connections with them and refusing new ones on its cluster listener and
// its outgoing dials, as a network partition would. To cut a link both
// ways between two masters, block each from the other. Safe to call from
// any goroutine; it does not block on the network.
func (m *Master) Block(ips ...string) { m.mux.Block(ips...) }

// Unblock is Block's undo: it restores this master's links to the given
// IPs, or to all if none are given.
func (m *Master) Unblock(ips ...string) { m.mux.Unblock(ips...) }

// LeaderReady reports whether this master leads and has passed its term's
// barrier, so its index holds every write committed before the term began
// and it serves leader and linearizable reads. Tests and the harness wait
// for it instead of IsLeader, which turns true before the barrier. Safe to
// call from any goroutine; it does not block.
func (m *Master) LeaderReady() bool { return m.leaderReady() }
