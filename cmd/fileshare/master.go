package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"fileshare/master"
)

// shutdownGrace bounds a graceful shutdown: leadership hand-off, draining
// requests and stopping raft normally take well under a second.
const shutdownGrace = 3 * time.Second

func newMasterCmd(g *globalFlags, stderr io.Writer) *cobra.Command {
	var cfg master.Config
	var initial, join string
	var tf tlsFlags
	cmd := &cobra.Command{
		Use:   "master --id ID --data-dir DIR --listen HOST:PORT --http HOST:PORT (--initial-cluster ID=ADDR,... | --join ADDR,...)",
		Short: "Run a SwarmMaster (one node of the index cluster)",
		Long: `Run a SwarmMaster until SIGINT or SIGTERM.

Bootstrap a new cluster by starting every master with the same
--initial-cluster; restarting a master with the same flags is safe (it
bootstraps only once). Add a master to a running cluster with --join.
On SIGTERM a leader hands leadership to another master before it exits.

With --cert-file, --key-file and --trusted-ca-file (see 'fileshare tls
init') the cluster port speaks only TLS: masters authenticate each other,
cluster administration needs an admin or master certificate, and a peer may
act only as the key it presents. Without them a master listens only on a
loopback address, unless --insecure says the network is trusted.`,
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

			// Stop on the first signal; the deferred Close runs the
			// graceful shutdown (leadership hand-off first).
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			m, err := master.New(ctx, cfg)
			if err != nil {
				return err
			}
			<-ctx.Done()
			stop() // a second signal now ends the process at once
			logger.Info("signal received; shutting down")
			done := make(chan error, 1)
			go func() { done <- m.Close() }()
			select {
			case err := <-done:
				return err
			case <-time.After(shutdownGrace):
				// A shutdown that hangs is a bug; leave the evidence.
				fmt.Fprintf(stderr, "shutdown did not finish within %v; goroutines:\n", shutdownGrace)
				_ = pprof.Lookup("goroutine").WriteTo(stderr, 2)
				return fmt.Errorf("shutdown did not finish within %v", shutdownGrace)
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ID, "id", "", "this master's ID (letters, digits, '.', '_', '-')")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the Raft log and snapshots")
	f.StringVar(&cfg.Listen, "listen", "", "host:port of the cluster port (Raft and RPC)")
	f.StringVar(&cfg.Advertise, "advertise", "", "address other nodes dial (default: --listen)")
	f.StringVar(&cfg.HTTP, "http", "", "host:port of the HTTP port (/v1/status, /v1/healthz, /v1/readyz, /metrics, the /ui/ dashboard)")
	f.StringVar(&initial, "initial-cluster", "", "bootstrap a new cluster: ID=HOST:PORT,... including this master")
	f.StringVar(&join, "join", "", "join a running cluster through any of these masters: HOST:PORT,...")
	f.DurationVar(&cfg.JoinTimeout, "join-timeout", 60*time.Second, "how long --join keeps retrying")
	f.DurationVar(&cfg.PeerLease, "peer-lease", 15*time.Second, "how long a silent peer stays in the index")
	f.DurationVar(&cfg.HeartbeatTimeout, "raft-heartbeat-timeout", 0, "raft heartbeat timeout (default 400ms)")
	f.DurationVar(&cfg.ElectionTimeout, "raft-election-timeout", 0, "raft election timeout (default 400ms)")
	f.DurationVar(&cfg.LeaderLeaseTimeout, "raft-leader-lease", 0, "raft leader lease (default 200ms)")
	f.Uint64Var(&cfg.SnapshotThreshold, "snapshot-threshold", 0, "log entries between snapshots (default 8192)")
	tf.add(f, true, "of this master, signed by the cluster CA")
	f.BoolVar(&cfg.Insecure, "insecure", false, "allow plaintext on a non-loopback --listen: anyone who reaches the port can then rewrite the index")
	f.BoolVar(&cfg.EnablePprof, "enable-pprof", false, "serve /debug/pprof on the --http port")
	f.StringVar(&cfg.Metrics, "metrics", master.MetricsBasic, "what /metrics on the --http port serves: basic, or extensive (adds raft's and boltdb's own metrics)")
	f.IntVar(&cfg.MaxFilesPerPeer, "max-files-per-peer", 1_000_000, "most files one peer may hold in the index (-1: no limit)")
	f.IntVar(&cfg.MaxPeersPerIP, "max-peers-per-ip", 1024, "most peers that may join through this master from one IP (-1: no limit)")
	f.IntVar(&cfg.MaxCommandBytes, "max-entry-bytes", 256<<10, "largest log entry one peer request may make, in bytes")
	addTrackerFlags(f, &cfg.Tracker)
	return cmd
}
