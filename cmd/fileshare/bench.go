package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"fileshare/internal/bench"
	"fileshare/transport"
)

type benchFlags struct {
	masters  string
	caFile   string
	insecure bool
	nodes    int
	dir      string
	clients  int
	duration time.Duration
}

// cluster connects to --masters, or starts a loopback cluster of real
// master processes from this binary (killed when done).
func (f *benchFlags) cluster(ctx context.Context, needOwn bool) (addrs []string, ca *transport.TLS, c *bench.Cluster, cleanup func(), err error) {
	if f.masters != "" && !needOwn {
		if f.caFile != "" {
			if ca, err = transport.LoadTLS("", "", f.caFile); err != nil {
				return nil, nil, nil, nil, err
			}
		}
		return splitList(f.masters), ca, nil, func() {}, nil
	}
	if f.masters != "" && needOwn {
		return nil, nil, nil, nil, fmt.Errorf("this benchmark kills and restarts masters, so it starts its own cluster; drop --masters")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	dir := f.dir
	removeDir := false
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, nil, nil, fmt.Errorf("--dir: %w", err)
		}
	} else {
		if dir, err = os.MkdirTemp("", "fileshare-bench-"); err != nil {
			return nil, nil, nil, nil, err
		}
		removeDir = true
	}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err = bench.StartCluster(sctx, exe, dir, f.nodes, !f.insecure)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("start a %d-master cluster in %s: %w", f.nodes, dir, err)
	}
	return c.Addrs(), c.CA(), c, func() {
		c.Close()
		if removeDir {
			os.RemoveAll(dir)
		}
	}, nil
}

func newBenchCmd(stdout io.Writer) *cobra.Command {
	f := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure throughput, latency, failover and scale; each ends with one summary line",
		Long: `Measure the system. Without --masters, each benchmark starts a loopback
cluster of real master processes from this binary and stops it at the end.
Numbers are medians and percentiles from one run: compare ratios measured in
the same run, not absolute figures across machines.`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.masters, "masters", "", "measure a running cluster at HOST:PORT,... instead of starting one")
	pf.IntVar(&f.nodes, "nodes", 3, "masters to start when --masters is not given")
	pf.StringVar(&f.dir, "dir", "", "directory for the started cluster's data and logs (default: a temporary one, removed)")
	pf.StringVar(&f.caFile, "trusted-ca-file", "", "with --masters: the cluster CA, if the masters run with TLS")
	pf.BoolVar(&f.insecure, "insecure", false, "run the started cluster without TLS (to measure what TLS costs)")

	run := func(needOwn bool, body func(ctx context.Context, addrs []string, ca *transport.TLS, c *bench.Cluster) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			if f.nodes != 1 && f.nodes != 3 && f.nodes != 5 {
				return fmt.Errorf("--nodes %d: use 1, 3 or 5", f.nodes)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			addrs, ca, c, cleanup, err := f.cluster(ctx, needOwn)
			if err != nil {
				return err
			}
			defer cleanup()
			return body(ctx, addrs, ca, c)
		}
	}

	register := &cobra.Command{
		Use:   "register",
		Short: "Acknowledged single-file registrations per second and their latency",
		Args:  cobra.NoArgs,
		RunE: run(false, func(ctx context.Context, addrs []string, ca *transport.TLS, _ *bench.Cluster) error {
			_, err := bench.Register(ctx, bench.LoadConfig{Masters: addrs, CA: ca, Clients: f.clients, Duration: f.duration}, stdout)
			return err
		}),
	}
	var files int
	lookup := &cobra.Command{
		Use:   "lookup",
		Short: "Lookups per second at each read level (stale, leader, linearizable)",
		Args:  cobra.NoArgs,
		RunE: run(false, func(ctx context.Context, addrs []string, ca *transport.TLS, _ *bench.Cluster) error {
			_, err := bench.Lookup(ctx, bench.LoadConfig{Masters: addrs, CA: ca, Clients: f.clients, Duration: f.duration}, files, stdout)
			return err
		}),
	}
	lookup.Flags().IntVar(&files, "files", 10000, "files to register before measuring")
	var trials int
	failover := &cobra.Command{
		Use:   "failover",
		Short: "Time from SIGKILL of the leader to the next acknowledged registration, under load",
		Args:  cobra.NoArgs,
		RunE: run(true, func(ctx context.Context, _ []string, _ *transport.TLS, c *bench.Cluster) error {
			_, err := bench.Failover(ctx, c, trials, f.clients, stdout)
			return err
		}),
	}
	failover.Flags().IntVar(&trials, "trials", 10, "leader kills")
	var scaleFiles int
	scale := &cobra.Command{
		Use:   "scale",
		Short: "Master memory, snapshot time and restart-to-ready time with many files",
		Args:  cobra.NoArgs,
		RunE: run(true, func(ctx context.Context, _ []string, _ *transport.TLS, c *bench.Cluster) error {
			_, err := bench.Scale(ctx, c, scaleFiles, stdout)
			return err
		}),
	}
	scale.Flags().IntVar(&scaleFiles, "files", 1000000, "files to register")
	var size string
	var sources, rounds int
	transfer := &cobra.Command{
		Use:   "transfer",
		Short: "Verified download throughput from 1 or more holders, next to a plain HTTP fetch of the same file",
		Args:  cobra.NoArgs,
		RunE: run(false, func(ctx context.Context, addrs []string, ca *transport.TLS, _ *bench.Cluster) error {
			n, err := positiveBytes(size)
			if err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			dir, err := os.MkdirTemp(f.dir, "fileshare-transfer-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			_, err = bench.Transfer(ctx, addrs, ca, dir, n, sources, rounds, stdout)
			return err
		}),
	}
	transfer.Flags().StringVar(&size, "size", "1GiB", "file size (e.g. 64MiB, 1GiB)")
	transfer.Flags().IntVar(&sources, "sources", 1, "holders to download from")
	transfer.Flags().IntVar(&rounds, "rounds", 3, "measurements of each kind (the medians are reported)")
	for _, c := range []*cobra.Command{register, lookup, failover} {
		c.Flags().IntVar(&f.clients, "clients", 0, "concurrent clients (default: 256 for register and lookup, 16 for failover)")
		c.Flags().DurationVar(&f.duration, "duration", 10*time.Second, "how long to measure (per read level for lookup)")
	}
	register.PreRun = func(*cobra.Command, []string) { f.clients = cmp(f.clients, 256) }
	lookup.PreRun = register.PreRun
	failover.PreRun = func(*cobra.Command, []string) { f.clients = cmp(f.clients, 16) }
	cmd.AddCommand(register, lookup, failover, scale, transfer)
	return cmd
}

// cmp returns v, or def if v is zero.
func cmp(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
