// Package proccluster starts and controls a cluster of real `fileshare
// master` processes: the one process controller behind the process tests
// of cmd/fileshare, the benchmarks (internal/bench) and the fault harness
// (jepsen-like).
//
// A [Spec] describes one master (ID, addresses, data dir, how it forms or
// joins the cluster, extra flags, environment, log file) and [Spec.Args]
// turns it into the argv, so no caller writes `master --id …` by hand. A
// [Cluster] runs one process per Spec and controls each by PID, never by
// name: [Cluster.Start], [Cluster.Terminate] (SIGTERM, then SIGKILL after a
// grace period), [Cluster.Kill] (SIGKILL), [Cluster.Pause] (SIGSTOP),
// [Cluster.Resume] (SIGCONT), [Cluster.Restart] and [Cluster.Wipe]. Each
// process appends its stdout and stderr to its Spec's log file, after a
// header line naming the start and its argv.
//
// [Cluster.WaitLeader], [Cluster.Leader] and [Cluster.Statuses] poll the
// masters' status (over HTTP /v1/status unless [Config.Status] says
// otherwise) and read its Raft state as a typed [client.RaftState], never by matching
// text at the call site.
//
// A typical use, from a test:
//
//	c, err := proccluster.New(proccluster.Config{Binary: exe, Masters: specs})
//	if err != nil { … }
//	defer c.Close()
//	for i := range c.Len() {
//		if err := c.Start(i); err != nil { … }
//	}
//	leader, err := c.WaitLeader(ctx, -1)
//	c.Kill(leader)
//
// What is specific to one caller stays with it: the harness's proxies,
// iptables rules, per-master IPs and fault bookkeeping live in jepsen-like.
package proccluster
