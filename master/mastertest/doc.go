// Package mastertest runs a cluster of SwarmMasters inside one process, on
// loopback, for tests, examples and the demo — what net/http/httptest is to
// an HTTP server.
//
// A Cluster is N masters (m1 … mN) that bootstrap one Raft cluster, each
// with a free port chosen by internal/freeport and a real raft-boltdb log in
// a data dir of its own. The harness can wait for a leader, crash (Kill) or
// stop a member and restart it with the same Config, cut one member's links
// to the others and heal them (Isolate, Heal), report each member's status,
// and check that every running member holds the same index.
//
// Two layers:
//
//   - The core (Start, NewUnstarted, the methods of Cluster) takes a
//     context for everything that blocks and returns errors, so programs
//     that are not tests — the demo — can use it.
//   - T, from New, wraps a Cluster for a test: its methods fail the test
//     instead of returning errors, wait with test-sized timeouts, log to the
//     test's output when FILESHARE_TEST_LOG is set, and stop the cluster at
//     the test's cleanup.
//
// A Cluster is safe for use by several goroutines: a test may kill a
// member from one goroutine while another waits for a leader.
//
//	c := mastertest.New(t, 3, mastertest.Options{})
//	leader := c.Leader()
//	cl := c.Client() // a client.Client for every member
//	c.Kill(leader)
//	c.Leader() // a new one
//	c.Restart(leader)
//	c.Converge() // every member holds the same index again
package mastertest
