package main

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	jepsenlike "fileshare/jepsen-like"
)

func newJepsenCmd(g *globalFlags, stdout, stderr io.Writer) *cobra.Command {
	var (
		cfg     jepsenlike.Config
		nemesis string
		netMode string
		noNetns bool
		wls     string
	)
	cmd := &cobra.Command{
		Use:   "jepsen [--nodes 3|5] [--time D] [--nemesis KINDS] [--out DIR] ...",
		Short: "Fault-injection test: run a cluster under faults and check that nothing acknowledged is lost",
		Long: `Start a cluster of real master processes, drive a concurrent workload of
register, unregister, lookup and search, inject faults on a schedule drawn
from --seed, then heal, read everything once more, and check the history:
linearizability of every file's holder set (porcupine), set-full (nothing
acknowledged lost, nothing removed comes back), equal index digests on every
master, and no panic or data race in any master's log.

--workload tracker makes every master a BitTorrent HTTP tracker and has the
clients announce simulated peers (started, re-announce, completed, stopped)
to a master drawn at random for every announce; after the heal every master's
peer list of every swarm is read and checked: every acknowledged started is
listed, no acknowledged stop comes back, all masters list the same peers.
--workload index,tracker runs both side by side.
--workload accounting makes the tracker private with a few members whose
peers announce growing upload and download counters (and restart, and stop)
with their passkeys, over HTTP and, with UDP faults, UDP; after the heal and
a final announce of each peer, every master's books must credit each member
exactly its peers' counter growth: nothing twice, nothing lost (accounting).

Fault kinds (--nemesis, comma-separated): kill, pause, partition, one-way,
ring, bridge, isolate-leader, kill-leader, rolling-restart, membership,
delay, loss, disk-full, corrupt, clock, power-loss, power-loss-all,
udp-loss, udp-dup, udp-reorder, udp-delay;
"leader" = isolate-leader,kill-leader;
"net" = every partition kind; "all"; "none".

Network faults drop packets with iptables in a private network namespace
when run as root (--net auto or iptables), and through userspace proxies
otherwise (--net proxy): no root needed.

disk-full gives every master's data dir a 256 MiB tmpfs of its own (root
only, mounted in a private mount namespace) and fills one until ENOSPC;
without root it is skipped, and the run says so. corrupt stops a master,
flips bytes in or truncates its raft.db or newest snapshot, and starts it:
it must refuse to start (exit status 4) or recover; one that refuses is
removed, wiped and added back with --join. clock moves one master's wall
clock (jumps and drifts of 30s to 10m) through FILESHARE_UNSAFE_CLOCK_FILE.
power-loss cuts one master's power, power-loss-all every master's: each data
dir is a FUSE filesystem of the harness (root on Linux with /dev/fuse, in a
private mount namespace) that keeps what was written since the last fsync;
the master is SIGKILLed, its unsynced writes vanish (some torn at a 512-byte
boundary) and it starts again: every acknowledged write must survive, or it
refuses to start (exit status 4) and is replaced. FILESHARE_UNSAFE_NO_FSYNC=1
in the environment makes every master skip fsync, to see the fault bite.
udp-loss, udp-dup, udp-reorder and udp-delay act on the tracker workload's
UDP announces (BEP 15, half of its announces when they are asked for),
both ways, through a UDP proxy the harness runs in front of each master's
UDP tracker; clients retry as BEP 15 says, with timeouts scaled down, and
every duplicated started or stopped must have one effect (tracker-once).
Without --workload tracker they are skipped.
After every heal the workload pauses briefly and the masters that serve
must hold the same index (the heal-digests checker).

--tracker-cmd judges any single-process tracker the same way, with the
tracker workload and the kill and pause faults, and reports in the same
words what it kept and lost. For Debian's opentracker (whitelist-only):
  --tracker-cmd 'opentracker -i {host} -p {port} -P {port} -w {whitelist}'

Writes to --out: report.html (start here), results.json, history.jsonl,
schedule.json, linearizability.html, latency.svg, logs/.

Exit status: 0 valid, 1 invalid (a checker found a violation),
2 unknown (a checker could not decide, or the run could not be carried out;
the message says why).`,
		Example: `  fileshare jepsen --nodes 5 --time 60s --nemesis kill,pause,partition --rate 200 --concurrency 10 --seed 42 --out /tmp/jepsen
  fileshare jepsen --nodes 3 --time 5m --nemesis all --interval 8s --out /tmp/soak`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger(stderr)
			if err != nil {
				return &exitCode{code: 2, msg: errorMessage(err)}
			}
			if cfg.Kinds, err = jepsenlike.ParseKinds(nemesis); err != nil {
				return &exitCode{code: 2, msg: "--nemesis: " + err.Error()}
			}
			if cfg.Workloads, err = jepsenlike.ParseWorkloads(wls); err != nil {
				return &exitCode{code: 2, msg: "--workload: " + err.Error()}
			}
			cfg.Net = jepsenlike.NetMode(netMode)
			if !cmd.Flags().Changed("seed") {
				cfg.Seed = rand.Int64N(1 << 31)
			}
			if cfg.Out == "" {
				cfg.Out = fmt.Sprintf("jepsen-%d-%s", cfg.Seed, time.Now().Format("20060102-150405"))
			}
			if cfg.Binary, err = os.Executable(); err != nil {
				return &exitCode{code: 2, msg: fmt.Sprintf("cannot find the fileshare binary to run the masters: %v", err)}
			}
			cfg.Logger = logger

			// The first Ctrl-C ends the run early and cleanly (heal, stop
			// the masters, remove the rules, check what was recorded);
			// a second one kills the harness at once, and the kernel then
			// kills the masters (see jepsenlike.RunInPrivateNetns).
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go func() {
				<-ctx.Done()
				stop()
			}()

			if jepsenlike.NeedsPrivateNamespace(cfg.Kinds, cfg.Net) && !noNetns && !jepsenlike.InPrivateNetns() {
				// Run the kernel mechanism and the per-master filesystems
				// in network and mount namespaces of their own, so no
				// rule or mount ever touches the host.
				args := append([]string{"jepsen", "--seed", fmt.Sprint(cfg.Seed), "--out", cfg.Out}, changedFlags(cmd, "seed", "out")...)
				code, err := jepsenlike.RunInPrivateNetns(ctx, cfg.Binary, args, stdout, stderr)
				switch {
				case errors.Is(err, jepsenlike.ErrNoNetns):
					logger.Warn("no private namespace; iptables rules and the masters' filesystems go into the host's namespaces (a chain of their own, mounts under --out), removed at the end", "err", err)
				case err != nil:
					return &exitCode{code: 2, msg: errorMessage(err)}
				case code != 0:
					return &exitCode{code: code}
				default:
					return nil
				}
			}
			if jepsenlike.InPrivateNetns() {
				if err := jepsenlike.PrepareNetns(); err != nil {
					return &exitCode{code: 2, msg: errorMessage(err)}
				}
			}

			logger.Info("jepsen run", "seed", cfg.Seed, "out", cfg.Out, "replay", fmt.Sprintf("--seed %d", cfg.Seed))
			res, err := jepsenlike.Run(ctx, cfg)
			if err != nil && res == nil {
				return &exitCode{code: 2, msg: errorMessage(err)}
			}
			for _, s := range res.Skipped {
				fmt.Fprintf(stdout, "note: %s\n", s)
			}
			fmt.Fprintf(stdout, "verdict: %s\n%s\nreport: %s\n", res.Verdict, res.Summary, filepath.Join(cfg.Out, jepsenlike.ReportFile))
			if err != nil {
				return &exitCode{code: 2, msg: errorMessage(err)}
			}
			switch res.Verdict {
			case jepsenlike.Valid:
				return nil
			case jepsenlike.Invalid:
				return &exitCode{code: 1}
			}
			return &exitCode{code: 2}
		},
	}
	// A mistyped flag must not read as "invalid" (exit 1) to a script.
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitCode{code: 2, msg: fmt.Sprintf("%v\nRun '%s --help' for usage.", err, c.CommandPath())}
	})
	bindJepsenFlags(cmd.Flags(), &cfg, &nemesis, &wls, &netMode, &noNetns)
	return cmd
}

// bindJepsenFlags binds the jepsen flags to cfg and the options that
// Run does not take as they are, defaults from jepsenlike.DefaultConfig.
func bindJepsenFlags(f *pflag.FlagSet, cfg *jepsenlike.Config, nemesis, wls, netMode *string, noNetns *bool) {
	def := jepsenlike.DefaultConfig()
	f.IntVar(&cfg.Nodes, "nodes", def.Nodes, "number of masters: 3 or 5")
	f.DurationVar(&cfg.Time, "time", def.Time, "how long the workload and the faults run")
	f.DurationVar(&cfg.Interval, "interval", def.Interval, "time between the starts of two faults")
	f.StringVar(nemesis, "nemesis", "kill,pause,partition", "fault kinds to draw from (see above), or none")
	f.Float64Var(&cfg.Rate, "rate", def.Rate, "target operations per second over all clients")
	f.IntVar(&cfg.Concurrency, "concurrency", def.Concurrency, "number of concurrent clients")
	f.IntVar(&cfg.Files, "files", def.Files, "number of files the clients share (index workload)")
	f.StringVar(wls, "workload", joinWorkloads(def.Workloads), "what the clients do: index (register, unregister, lookup, search), tracker (BitTorrent announces to every master's HTTP tracker), index,tracker, or accounting (a private tracker's books)")
	f.IntVar(&cfg.Torrents, "torrents", def.Torrents, "number of swarms the tracker workload's peers announce in")
	f.Int64Var(&cfg.Seed, "seed", 0, "seed of the fault schedule (default: random, printed for replay)")
	f.StringVar(&cfg.Out, "out", "", "output directory (default: ./jepsen-SEED-TIME)")
	f.StringVar(netMode, "net", string(def.Net), "network fault mechanism: auto, iptables (root) or proxy")
	f.BoolVar(noNetns, "no-netns", false, "with iptables or disk-full, use the host's network and mount namespaces instead of private ones")
	f.BoolVar(&cfg.KeepData, "keep-data", false, "keep the masters' data dirs in --out/data")
	f.DurationVar(&cfg.OpTimeout, "op-timeout", def.OpTimeout, "how long a client waits before an operation's outcome is unknown")
	f.DurationVar(&cfg.CheckTimeout, "check-timeout", def.CheckTimeout, "time limit of the linearizability search")
	f.StringVar(&cfg.TrackerCmd, "tracker-cmd", "", "judge another tracker instead of FileShare masters: the command that starts it, with {port}, {host}, {dir} and {whitelist} filled in (with --workload tracker; faults kill and pause)")
}

// changedFlags returns the flags set on the command line (the global ones
// too), except skip, as --name=value arguments.
func changedFlags(cmd *cobra.Command, skip ...string) []string {
	var out []string
	for _, name := range []string{"nodes", "time", "interval", "nemesis", "rate", "concurrency", "files", "workload", "torrents", "seed", "out",
		"net", "no-netns", "keep-data", "op-timeout", "check-timeout", "tracker-cmd", "log-format", "log-level"} {
		if slices.Contains(skip, name) || !cmd.Flags().Changed(name) {
			continue
		}
		out = append(out, "--"+name+"="+cmd.Flags().Lookup(name).Value.String())
	}
	return out
}

// joinWorkloads writes workloads the way --workload reads them.
func joinWorkloads(ws []jepsenlike.Workload) string {
	s := make([]string, len(ws))
	for i, w := range ws {
		s[i] = string(w)
	}
	return strings.Join(s, ",")
}
