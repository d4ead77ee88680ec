package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"fileshare/master"
)

// hangGrace is how long past --shutdown-timeout the command waits for
// master.Shutdown, which by then only closes files, before it calls the
// shutdown hung and prints every goroutine as evidence.
const hangGrace = 2 * time.Second

// exitRemoved is the exit status of a master that stopped because the
// cluster removed it (or that refused to start from the data of a
// membership it was removed from). Restarting it will not help: the
// systemd unit lists it in RestartPreventExitStatus.
const exitRemoved = 3

// exitDamaged is the exit status of a master that refused to start because
// its raft log or newest snapshot is damaged (master.ErrDamaged).
// Restarting it will not help: wipe the data dir and start it with --join,
// or start a new cluster from a backup with --restore.
const exitDamaged = 4

func newMasterCmd(g *globalFlags, stderr io.Writer) *cobra.Command {
	var cfg master.Config
	var initial, join string
	var tf tlsFlags
	var shutdownTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "master --id ID --data-dir DIR --listen HOST:PORT --http HOST:PORT (--initial-cluster ID=ADDR,... | --join ADDR,...)",
		Short: "Run a SwarmMaster (one node of the index cluster)",
		Long: `Run a SwarmMaster until SIGINT or SIGTERM.

Bootstrap a new cluster by starting every master with the same
--initial-cluster; restarting a master with the same flags is safe (it
bootstraps only once). Add a master to a running cluster with --join.
On SIGTERM a leader hands leadership to another master before it exits;
the whole shutdown gets --shutdown-timeout.

With --cert-file, --key-file and --trusted-ca-file (see 'fileshare tls
init') the cluster port speaks only TLS: masters authenticate each other,
cluster administration needs an admin or master certificate, and a peer may
act only as the key it presents. Without them a master listens only on a
loopback address, unless --insecure says the network is trusted.

A master that joins becomes a voter once it has been healthy for
--server-stabilization-time. With --cleanup-dead-masters the leader removes
a master it has not reached for --dead-master-timeout, never leaving fewer
than --min-quorum voters. A master that learns it was removed from the
cluster exits with status 3; to add it back, wipe its data dir and start it
with --join.

A master that finds its raft log (raft.db) or its newest snapshot damaged
refuses to start and exits with status 4: it never serves or replicates a
damaged index. Wipe its data dir and start it with --join to copy the index
from the rest of the cluster, or start a new cluster from a backup with
--restore. A full disk does not stop a master: it logs an error naming the
data dir, acknowledges nothing it could not persist, and catches up once
there is room again.

For fault injection only, FILESHARE_UNSAFE_CLOCK_FILE names a file holding
one Go duration (+30s, -2m, 0s) that shifts this master's wall clock; it is
re-read when it changes.

Under systemd with Type=notify the master reports READY=1 once it serves
(before a leader is known, so masters started one after another do not
wait on each other) and STOPPING=1 when it begins to shut down.

` + envHelp + `
Example: FILESHARE_DATA_DIR=/var/lib/fileshare fileshare master ...`,
		Example: `  fileshare tls init --dir /tmp/fs-tls --masters m1,m2,m3
  fileshare master --id m1 --data-dir /tmp/m1 --listen 127.0.0.1:7001 --http 127.0.0.1:8001 \
    --initial-cluster m1=127.0.0.1:7001,m2=127.0.0.1:7002,m3=127.0.0.1:7003 \
    --cert-file /tmp/fs-tls/m1.pem --key-file /tmp/fs-tls/m1-key.pem --trusted-ca-file /tmp/fs-tls/ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger(stderr)
			if err != nil {
				return err
			}
			if initial == "" && join == "" {
				return fmt.Errorf("give --initial-cluster ID=ADDR,... to bootstrap a new cluster, or --join ADDR,... to join a running one")
			}
			if initial != "" {
				if cfg.InitialCluster, err = master.ParseInitialCluster(initial); err != nil {
					return err
				}
			}
			cfg.Join = splitList(join)
			if cfg.TLS, err = tf.load(); err != nil {
				return err
			}
			if cfg.TLS != nil && !cfg.TLS.HasCertificate() {
				return fmt.Errorf("a master with TLS needs --cert-file and --key-file (its own certificate) besides --trusted-ca-file")
			}
			// A deliberate bug for the fault harness's self-test; see master.Fault.
			if cfg.Fault, err = master.ParseFault(os.Getenv("FILESHARE_UNSAFE_FAULT")); err != nil {
				return fmt.Errorf("FILESHARE_UNSAFE_FAULT: %w", err)
			}
			cfg.Logger = logger
			// A skewable wall clock for the fault harness; see master.UnsafeClock.
			if path := os.Getenv(master.UnsafeClockEnv); path != "" {
				logger.Warn("UNSAFE CLOCK HOOK ENABLED: this master's wall clock is shifted by the offset in a file, for fault injection only", "env", master.UnsafeClockEnv, "file", path)
				cfg.Now = master.NewUnsafeClock(path, logger).Now
			}
			// Acknowledge without fsync, for the harness's power-loss self-test.
			if os.Getenv(master.UnsafeNoFsyncEnv) == "1" {
				logger.Warn("UNSAFE NO-FSYNC HOOK ENABLED: this master acknowledges writes it never fsynced; a power loss loses them. For fault injection only", "env", master.UnsafeNoFsyncEnv)
				cfg.Storage.NoSync = true
			}

			// Stop on the first signal; the deferred Close runs the
			// graceful shutdown (leadership hand-off first).
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			m, err := master.New(ctx, cfg)
			if errors.Is(err, master.ErrRemoved) {
				return &exitCode{code: exitRemoved, msg: errorMessage(err)}
			}
			if errors.Is(err, master.ErrDamaged) {
				return &exitCode{code: exitDamaged, msg: errorMessage(err)}
			}
			if err != nil {
				return err
			}
			notify := os.Getenv("NOTIFY_SOCKET")
			if err := sdNotify(notify, "READY=1\nSTATUS=serving as master "+cfg.ID); err != nil {
				logger.Warn("could not tell systemd the master is ready", "err", err)
			}
			removed := false
			select {
			case <-ctx.Done():
				logger.Info("signal received; shutting down")
			case <-m.Removed():
				removed = true
				logger.Error("this master was removed from the cluster; shutting down. To add it back, wipe its data dir and start it with --join", "id", cfg.ID, "data_dir", cfg.DataDir)
			}
			stop() // a second signal now ends the process at once
			if err := sdNotify(notify, "STOPPING=1"); err != nil {
				logger.Warn("could not tell systemd the master is stopping", "err", err)
			}
			// One budget for the whole shutdown: master.Shutdown honours
			// it, abandoning a raft that will not stop when it ends.
			sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- m.Shutdown(sctx) }()
			select {
			case err := <-done:
				if removed {
					return &exitCode{code: exitRemoved, msg: fmt.Sprintf("master %s was removed from the cluster; wipe %s and start it with --join to add it again", cfg.ID, cfg.DataDir)}
				}
				return err
			case <-time.After(shutdownTimeout + hangGrace):
				// A shutdown that hangs is a bug; leave the evidence.
				fmt.Fprintf(stderr, "shutdown did not finish within --shutdown-timeout %v; goroutines:\n", shutdownTimeout)
				_ = pprof.Lookup("goroutine").WriteTo(stderr, 2)
				return fmt.Errorf("shutdown did not finish within --shutdown-timeout %v", shutdownTimeout)
			}
		},
	}
	bindMasterFlags(cmd.Flags(), &cfg, &initial, &join, &tf)
	cmd.Flags().DurationVar(&shutdownTimeout, "shutdown-timeout", master.DefaultShutdownTimeout, "the whole budget of a graceful shutdown on SIGINT or SIGTERM: leadership hand-off, draining HTTP requests, stopping raft (a raft that has not stopped when it ends is abandoned and the master exits with an error); keep it under the service manager's stop timeout")
	return cmd
}

// bindMasterFlags binds the master's flags to cfg, each flag's default
// taken from master.DefaultConfig (TestFlagDefaultsComeFromLibraries
// checks that none is typed here).
func bindMasterFlags(f *pflag.FlagSet, cfg *master.Config, initial, join *string, tf *tlsFlags) {
	def := master.DefaultConfig()
	f.StringVar(&cfg.ID, "id", "", "this master's ID (letters, digits, '.', '_', '-')")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the Raft log and snapshots")
	f.StringVar(&cfg.Listen, "listen", "", "host:port of the cluster port (Raft and RPC)")
	f.StringVar(&cfg.Advertise, "advertise", "", "address other nodes dial (default: --listen)")
	f.StringVar(&cfg.HTTP, "http", "", "host:port of the HTTP port (/v1/status, /v1/healthz, /v1/readyz, /metrics, the /ui/ dashboard)")
	f.StringVar(initial, "initial-cluster", "", "bootstrap a new cluster: ID=HOST:PORT,... including this master")
	f.StringVar(join, "join", "", "join a running cluster through any of these masters: HOST:PORT,...")
	f.StringVar(&cfg.Restore, "restore", "", "start a NEW cluster from this backup file ('fileshare cluster backup'); needs --initial-cluster and an empty --data-dir, the same file and --initial-cluster on every member")
	f.DurationVar(&cfg.JoinTimeout, "join-timeout", def.JoinTimeout, "how long --join keeps retrying")
	f.DurationVar(&cfg.PeerLease, "peer-lease", def.PeerLease, "how long a silent peer stays in the index")
	f.DurationVar(&cfg.HeartbeatTimeout, "raft-heartbeat-timeout", def.HeartbeatTimeout, "raft heartbeat timeout")
	f.DurationVar(&cfg.ElectionTimeout, "raft-election-timeout", def.ElectionTimeout, "raft election timeout")
	f.DurationVar(&cfg.LeaderLeaseTimeout, "raft-leader-lease", def.LeaderLeaseTimeout, "raft leader lease (at most --raft-heartbeat-timeout)")
	f.Uint64Var(&cfg.SnapshotThreshold, "snapshot-threshold", def.SnapshotThreshold, "log entries between snapshots")
	tf.add(f, true, "of this master, signed by the cluster CA")
	f.BoolVar(&cfg.Insecure, "insecure", false, "allow plaintext on a non-loopback --listen: anyone who reaches the port can then rewrite the index")
	f.BoolVar(&cfg.EnablePprof, "enable-pprof", false, "serve /debug/pprof on the --http port")
	f.StringVar(&cfg.Metrics, "metrics", def.Metrics, "what /metrics on the --http port serves: basic, or extensive (adds raft's and boltdb's own metrics)")
	f.IntVar(&cfg.MaxFilesPerPeer, "max-files-per-peer", def.MaxFilesPerPeer, "most files one peer may hold in the index (-1: no limit)")
	f.IntVar(&cfg.MaxPeersPerIP, "max-peers-per-ip", def.MaxPeersPerIP, "most peers that may join through this master from one IP (-1: no limit)")
	f.IntVar(&cfg.MaxCommandBytes, "max-entry-bytes", def.MaxCommandBytes, "largest log entry one peer request may make, in bytes")
	f.IntVar(&cfg.ClusterPort.MaxConns, "max-conns", def.ClusterPort.MaxConns, "most cluster-port connections open at once from anyone but the cluster's members")
	f.IntVar(&cfg.ClusterPort.MaxConnsPerIP, "max-conns-per-ip", def.ClusterPort.MaxConnsPerIP, "most cluster-port connections from one IP address (twice per IPv6 /64, four times per /48)")
	f.IntVar(&cfg.ClusterPort.MaxMemberConns, "max-member-conns", def.ClusterPort.MaxMemberConns, "cluster-port connections kept for the cluster's members, beyond --max-conns")
	f.IntVar(&cfg.ClusterPort.Calls.MaxCallsPerIP, "max-calls-per-ip", def.ClusterPort.Calls.MaxCallsPerIP, "most requests one IP address may have running at once (twice per IPv6 /64, four times per /48)")
	f.IntVar(&cfg.ClusterPort.Calls.MaxReplyBytesPerConn, "max-reply-bytes-per-conn", def.ClusterPort.Calls.MaxReplyBytesPerConn, "reply bytes one connection may have queued or expected before it is read no further")
	f.DurationVar(&cfg.ClusterPort.Calls.WriteTimeout, "write-timeout", def.ClusterPort.Calls.WriteTimeout, "close a cluster-port client that takes no reply for this long")
	f.BoolVar(&cfg.CleanupDeadMasters, "cleanup-dead-masters", false, "let the leader remove masters it has not reached for --dead-master-timeout")
	f.IntVar(&cfg.MinQuorum, "min-quorum", def.MinQuorum, "fewest voters --cleanup-dead-masters leaves")
	f.DurationVar(&cfg.DeadMasterTimeout, "dead-master-timeout", def.DeadMasterTimeout, "how long a master must be unreachable before --cleanup-dead-masters removes it")
	f.DurationVar(&cfg.ServerStabilizationTime, "server-stabilization-time", def.ServerStabilizationTime, "how long a joining master must be healthy before it becomes a voter")
	f.Uint64Var(&cfg.ReadyMaxLag, "ready-max-lag", def.ReadyMaxLag, "most committed entries not yet applied for /v1/readyz to say ready")
	addTrackerFlags(f, &cfg.Tracker, def.Tracker)
	addMasterNATFlags(f, cfg, def)
}
