package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
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

	// sub makes a benchmark subcommand, which takes no arguments: it checks
	// --nodes, connects to the cluster (with needOwn, or without --masters,
	// starts one), runs body on it with a context that SIGINT and SIGTERM
	// cancel, and cleans up after.
	sub := func(use, short string, needOwn bool, body func(ctx context.Context, addrs []string, ca *transport.TLS, c *bench.Cluster) error) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
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
			},
		}
	}
	load := func(addrs []string, ca *transport.TLS) bench.LoadConfig {
		return bench.LoadConfig{Masters: addrs, CA: ca, Clients: f.clients, Duration: f.duration}
	}

	register := sub("register", "Acknowledged single-file registrations per second and their latency", false,
		func(ctx context.Context, addrs []string, ca *transport.TLS, _ *bench.Cluster) error {
			_, err := bench.Register(ctx, load(addrs, ca), stdout)
			return err
		})
	var files int
	lookup := sub("lookup", "Lookups per second at each read level (stale, leader, linearizable)", false,
		func(ctx context.Context, addrs []string, ca *transport.TLS, _ *bench.Cluster) error {
			_, err := bench.Lookup(ctx, load(addrs, ca), files, stdout)
			return err
		})
	lookup.Flags().IntVar(&files, "files", 10000, "files to register before measuring")
	var trials int
	failover := sub("failover", "Time from SIGKILL of the leader to the next acknowledged registration, under load", true,
		func(ctx context.Context, _ []string, _ *transport.TLS, c *bench.Cluster) error {
			_, err := bench.Failover(ctx, c, trials, f.clients, stdout)
			return err
		})
	failover.Flags().IntVar(&trials, "trials", 10, "leader kills")
	var scaleFiles int
	scale := sub("scale", "Master memory, snapshot time and restart-to-ready time with many files", true,
		func(ctx context.Context, _ []string, _ *transport.TLS, c *bench.Cluster) error {
			_, err := bench.Scale(ctx, c, scaleFiles, stdout)
			return err
		})
	scale.Flags().IntVar(&scaleFiles, "files", 1000000, "files to register")
	var size string
	var sources, rounds int
	transfer := sub("transfer", "Verified download throughput from 1 or more holders, next to a plain HTTP fetch of the same file", false,
		func(ctx context.Context, addrs []string, ca *transport.TLS, _ *bench.Cluster) error {
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
		})
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
	cmd.AddCommand(register, lookup, failover, scale, transfer, newBenchAnnounceCmd(f, stdout), newBenchTrackerScaleCmd(f, stdout))
	return cmd
}

// startTrackerCluster starts a loopback cluster whose masters serve the
// tracker, in --dir or a temporary directory (removed by cleanup), with
// extra master flags.
func (f *benchFlags) startTrackerCluster(ctx context.Context, extra ...string) (*bench.TrackerCluster, func(), error) {
	if f.masters != "" {
		return nil, nil, fmt.Errorf("this benchmark starts its own cluster (or measures --target URLs); drop --masters")
	}
	if f.nodes != 1 && f.nodes != 3 && f.nodes != 5 {
		return nil, nil, fmt.Errorf("--nodes %d: use 1, 3 or 5", f.nodes)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	dir := f.dir
	removeDir := false
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("--dir: %w", err)
		}
	} else {
		if dir, err = os.MkdirTemp("", "fileshare-bench-"); err != nil {
			return nil, nil, err
		}
		removeDir = true
	}
	sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	c, err := bench.StartTrackerCluster(sctx, exe, dir, f.nodes, !f.insecure, extra...)
	if err != nil {
		if removeDir {
			os.RemoveAll(dir)
		}
		return nil, nil, fmt.Errorf("start a %d-master tracker cluster in %s: %w", f.nodes, dir, err)
	}
	return c, func() {
		c.Close()
		if removeDir {
			os.RemoveAll(dir)
		}
	}, nil
}

// benchTrackerFlags are master flags that let one loopback load generator
// fill the tracker: every simulated peer, and every HTTP connection of an
// open loop, comes from 127.0.0.1.
func benchTrackerFlags(maxPeers int) []string {
	return []string{"--tracker-max-peers-per-ip", strconv.Itoa(maxPeers), "--tracker-max-peers", strconv.Itoa(maxPeers),
		"--tracker-http-max-conns-per-ip", "4096"}
}

// newBenchAnnounceCmd is `fileshare bench announce`.
func newBenchAnnounceCmd(f *benchFlags, stdout io.Writer) *cobra.Command {
	var cfg bench.AnnounceConfig
	var proto, mix, writeSwarms, cpuProfile string
	var targets []string
	var findMax, flashCrowd bool
	var measure string
	var cpuPIDs []int
	var privateMembers int
	search := bench.DefaultMaxSearch()
	cmd := &cobra.Command{
		Use:   "announce",
		Short: "BitTorrent announces per second over HTTP or UDP, with a realistic mix, against the cluster or any tracker",
		Long: `Announces per second and their latency, from --clients workers, each
with its own keep-alive HTTP connection or UDP socket (BEP 15, connection
IDs reused for a minute). Peers are spread over --swarms info-hashes; a
warm-up starts --warmup peers first, then the measurement draws announces
from --mix: changes (started events of new peers: Raft commits in the
cluster), renew (re-announces of started peers: lease renewals) and stopped.

--measure lists what to measure after the one warm-up, in order:
  closed       each worker waits for its answer before its next announce
               (a closed loop), for --duration; the default
  open         --rate announces a second offered whatever the answers (an
               open loop), for --duration: answered/s, p50/p99 from when
               each announce was due, the share unanswered within --timeout
  find-max     the highest open-loop rate held with p99 ≤ 50 ms and < 0.1 %
               unanswered: from --rate (or the closed loop measured before
               it) doubling or halving, then bisecting, each step --step
               long, within --find-max-time
  flash-crowd  a closed loop in which every announce is a new peer on one
               of --hot-swarms swarms, for --flash-duration
--rate alone measures open, --find-max find-max, --flash-crowd flash-crowd.

The user+system CPU time of the tracker over the measurement (from
/proc/PID/stat) is reported per answered announce: of every started master,
or of --cpu-pids with --target.

Without --target it starts a loopback cluster whose masters serve the
tracker and spreads the workers over every master's URL; with --target it
measures any tracker (repeat it for several URLs), e.g. opentracker:
  fileshare bench announce --proto udp --target udp://127.0.0.1:6969/announce
Debian's opentracker tracks only whitelisted torrents; --write-swarms FILE
writes this benchmark's info-hashes in its whitelist format.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if writeSwarms != "" {
				out, err := os.Create(writeSwarms)
				if err != nil {
					return err
				}
				if err := bench.WriteSwarmList(out, cmp(cfg.Swarms, 10000)); err != nil {
					out.Close()
					return err
				}
				return out.Close()
			}
			if proto != "http" && proto != "udp" {
				return fmt.Errorf("--proto %q: use http or udp", proto)
			}
			m, err := bench.ParseMix(mix)
			if err != nil {
				return fmt.Errorf("--mix: %w", err)
			}
			cfg.Mix = m
			if cfg.Rate < 0 {
				return fmt.Errorf("--rate %v: give announces a second > 0", cfg.Rate)
			}
			switch {
			case measure != "" && (findMax || flashCrowd):
				return fmt.Errorf("--measure lists the measurements; drop --find-max and --flash-crowd (write them in the list)")
			case findMax && flashCrowd:
				return fmt.Errorf("--find-max and --flash-crowd are two measurements; write --measure find-max,flash-crowd")
			case findMax:
				measure = string(bench.MeasureFindMax)
			case flashCrowd:
				measure = string(bench.MeasureFlashCrowd)
			case measure == "" && cfg.Rate > 0:
				measure = string(bench.MeasureOpen)
			case measure == "":
				measure = string(bench.MeasureClosed)
			}
			if cfg.Measure, err = bench.ParseMeasurements(measure); err != nil {
				return fmt.Errorf("--measure: %w", err)
			}
			if slices.Contains(cfg.Measure, bench.MeasureOpen) && cfg.Rate == 0 {
				return fmt.Errorf("the open measurement offers --rate announces a second; give --rate")
			}
			if slices.Contains(cfg.Measure, bench.MeasureFlashCrowd) && (cfg.HotSwarms < 1 || cfg.HotSwarms > cfg.Swarms) {
				return fmt.Errorf("--hot-swarms %d: give 1 to --swarms (%d)", cfg.HotSwarms, cfg.Swarms)
			}
			search.Start = cfg.Rate // zero: from the closed loop, or the default
			cfg.FindMax = search
			if len(cpuPIDs) > 0 && len(targets) == 0 {
				return fmt.Errorf("--cpu-pids is for a --target tracker; the CPU of the masters this benchmark starts is measured without it")
			}
			cfg.CPUPIDs = cpuPIDs
			if privateMembers > 0 && (proto != "http" || len(targets) > 0) {
				return fmt.Errorf("--private-members makes the started cluster private and announces over HTTP with passkeys; use --proto http and no --target")
			}
			for _, t := range targets {
				if !strings.HasPrefix(t, proto+"://") {
					return fmt.Errorf("--target %s is not a %s:// URL, and --proto is %s", t, proto, proto)
				}
			}
			if len(targets) > 0 && cpuProfile != "" {
				return fmt.Errorf("--cpu-profile profiles the cluster this benchmark starts; drop --target")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg.Targets = targets
			if len(targets) == 0 {
				extra := benchTrackerFlags(100_000_000)
				if cpuProfile != "" {
					extra = append(extra, "--enable-pprof")
				}
				c, cleanup, err := f.startTrackerCluster(ctx, extra...)
				if err != nil {
					return err
				}
				defer cleanup()
				cfg.Targets = c.HTTP
				if proto == "udp" {
					cfg.Targets = c.UDP
				}
				if privateMembers > 0 { // a private tracker (internal/bench/private.go)
					if cfg.Targets, err = bench.SetupPrivate(ctx, c.StatusClient(), cfg.Targets, cfg.Swarms, privateMembers); err != nil {
						return err
					}
					if err := c.WaitApplied(ctx); err != nil {
						return err
					}
				}
				for i := range c.UDP {
					cfg.CPUPIDs = append(cfg.CPUPIDs, c.PID(i))
				}
				cfg.Cluster = c.StatusClient()
				if cpuProfile != "" {
					cfg.Measuring = func(ctx context.Context, d time.Duration) {
						leader, err := c.WaitLeader(ctx, -1)
						if err == nil {
							err = c.CPUProfile(ctx, leader, d, cpuProfile)
						}
						if err != nil {
							fmt.Fprintf(stdout, "announce: no CPU profile: %v\n", err)
							return
						}
						fmt.Fprintf(stdout, "announce: CPU profile of master %d (the leader) written to %s\n", leader+1, cpuProfile)
					}
				}
			}
			_, err = bench.Announce(ctx, cfg, stdout)
			if errors.Is(err, bench.ErrNoPeerStarted) {
				err = fmt.Errorf("%w; --write-swarms FILE writes them as a whitelist", err)
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&proto, "proto", "udp", "tracker protocol: http or udp")
	fl.StringArrayVar(&targets, "target", nil, "measure this announce URL instead of a started cluster (repeatable)")
	fl.IntVar(&privateMembers, "private-members", 0, "make the started cluster a private tracker with this many members and announce with their passkeys (HTTP only); 0: open")
	fl.IntVar(&cfg.Clients, "clients", 64, "workers, each with its own connection or socket")
	fl.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to measure, after the warm-up")
	fl.IntVar(&cfg.Swarms, "swarms", 10000, "info-hashes the peers are spread over")
	fl.StringVar(&mix, "mix", bench.DefaultMix.String(), "shares of announce kinds: changes (new peers started), renew (re-announces), stopped")
	fl.IntVar(&cfg.Warmup, "warmup", 0, "peers to start before measuring (default: 3 × --swarms; -1: none)")
	fl.DurationVar(&cfg.Timeout, "timeout", 0, "an announce unanswered after this long counts as a timeout (default 5s, 1s open loop)")
	fl.Uint64Var(&cfg.Seed, "seed", 1, "seed of the announce sequence")
	fl.StringVar(&writeSwarms, "write-swarms", "", "write the --swarms info-hashes (hex, one a line: an opentracker whitelist) to this file and exit")
	fl.StringVar(&cpuProfile, "cpu-profile", "", "write a CPU profile of the leader over the measurement to this file (started cluster only)")
	fl.StringVar(&measure, "measure", "", "measurements to run after the warm-up, in order: closed, open, find-max, flash-crowd (default closed)")
	fl.Float64Var(&cfg.Rate, "rate", 0, "open loop: offer this many announces a second (find-max: the first rate tried)")
	fl.BoolVar(&findMax, "find-max", false, "measure find-max: the highest open-loop rate held with p99 ≤ "+search.MaxP99.String()+" and < "+strconv.FormatFloat(100*search.MaxUnanswered, 'g', -1, 64)+" % unanswered")
	fl.DurationVar(&search.Step, "step", search.Step, "find-max: how long each rate is offered")
	fl.DurationVar(&search.Budget, "find-max-time", search.Budget, "find-max: no step starts that would end later than this after the search began")
	fl.BoolVar(&flashCrowd, "flash-crowd", false, "measure flash-crowd: every announce is a started event of a new peer on --hot-swarms swarms")
	fl.IntVar(&cfg.HotSwarms, "hot-swarms", bench.DefaultHotSwarms, "flash-crowd: how many swarms the crowd falls on")
	fl.DurationVar(&cfg.FlashDuration, "flash-duration", 0, "flash-crowd: how long to measure (default: --duration)")
	fl.IntSliceVar(&cpuPIDs, "cpu-pids", nil, "with --target: processes whose CPU time per answered announce to report (e.g. the tracker's PID)")
	return cmd
}

// newBenchTrackerScaleCmd is `fileshare bench tracker-scale`.
func newBenchTrackerScaleCmd(f *benchFlags, stdout io.Writer) *cobra.Command {
	var peers, swarms int
	cmd := &cobra.Command{
		Use:   "tracker-scale",
		Short: "Leader heap bytes per swarm entry, snapshot time and restart-to-ready with many tracker peers",
		Long: `Starts a loopback cluster whose masters serve the tracker, fills it with
--peers swarm entries over --swarms info-hashes by concurrent UDP started
announces, and reports the leader's live heap growth per entry (read from
/debug/pprof/heap after a collection), the time of a snapshot on the leader
and a follower's time from SIGKILL and restart to ready and caught up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if peers < 1 || swarms < 1 {
				return fmt.Errorf("--peers %d --swarms %d: give at least 1 of each", peers, swarms)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// A long interval keeps every entry alive through a fill of
			// any length.
			extra := append(benchTrackerFlags(peers+1000), "--enable-pprof", "--tracker-interval", "6h")
			c, cleanup, err := f.startTrackerCluster(ctx, extra...)
			if err != nil {
				return err
			}
			defer cleanup()
			_, err = bench.TrackerScale(ctx, c, peers, swarms, stdout)
			return err
		},
	}
	cmd.Flags().IntVar(&peers, "peers", 1_000_000, "swarm entries to fill the tracker with")
	cmd.Flags().IntVar(&swarms, "swarms", 100_000, "info-hashes the entries are spread over")
	return cmd
}

// cmp returns v, or def if v is zero.
func cmp(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
