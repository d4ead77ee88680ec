package jepsenlike

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"
)

// Config describes one run. A zero field means its default; Run copies the
// Config and never edits the caller's.
type Config struct {
	// Binary is the fileshare executable the masters run as
	// "Binary master ...". Required.
	Binary string
	// Env is the masters' environment. Nil means this process's
	// environment. Setting FILESHARE_UNSAFE_FAULT in it starts deliberately
	// broken masters (see master.Fault), to prove the checkers catch them.
	Env []string

	// Nodes is the number of masters: 3 or 5. Zero means 5.
	Nodes int
	// Time is how long the workload and the faults run. Zero means 60 s.
	Time time.Duration
	// Interval is the time between fault starts. Zero means 10 s.
	Interval time.Duration
	// Kinds are the faults to draw from (see ParseKinds). Empty means no
	// faults at all: a baseline run.
	Kinds []Kind
	// Seed draws the schedule (and the clients' choices). The same seed
	// and settings replay the same schedule.
	Seed int64

	// Workloads are what the clients do (see ParseWorkloads): the index
	// workload (register, unregister, lookup, search), the tracker
	// workload (BitTorrent announces over HTTP), or both side by side,
	// each with Concurrency clients sharing one Rate. Empty means index.
	Workloads []Workload
	// Torrents is the number of swarms the tracker workload's peers
	// announce in. Zero means 8.
	Torrents int

	// Rate is the target number of operations per second, over all
	// clients. Zero means 200; negative means as fast as they can.
	Rate float64
	// Concurrency is the number of clients. Zero means 10.
	Concurrency int
	// Files is the number of files the clients share (K). Few files means
	// more contention per file; zero means 20.
	Files int
	// OpTimeout is how long a client waits for one operation before it
	// calls the outcome unknown (info). Zero means 1 s: long enough for a
	// leader election, short enough that a client stuck on a partitioned
	// master soon starts over and keeps probing what each master serves.
	OpTimeout time.Duration
	// PeerLease is the masters' --peer-lease. It must outlast the run, or
	// the masters would expire the clients' peers and their holdings,
	// which the model does not expect. Zero means Time + 10 minutes, or
	// Time + 2 minutes with clock faults, whose jumps (up to 10 minutes)
	// then exceed the lease: a master that lets a jump of its wall clock
	// expire live peers loses acknowledged registrations, and set-full
	// says so.
	PeerLease time.Duration

	// Out is the output directory; it is created if needed. Required.
	Out string
	// Net chooses the network fault mechanism. Empty means NetAuto.
	Net NetMode
	// KeepData keeps the masters' data dirs under Out/data after the run.
	KeepData bool
	// CheckTimeout bounds the linearizability search. Zero means 2 min.
	CheckTimeout time.Duration

	// TrackerCmd, if set, runs the tracker workload against one tracker
	// process started from this command template instead of FileShare
	// masters: {port} (its HTTP and UDP port), {host}, {dir} (its
	// working directory) and {whitelist} (a file listing the workload's
	// info-hashes in hex) are filled in; it is split on spaces, not run
	// by a shell. Only the tracker workload and the kill and pause
	// faults apply.
	TrackerCmd string

	// Logger receives progress messages. Nil discards them.
	Logger *slog.Logger
}

// ErrConfig wraps every configuration mistake Run rejects.
var ErrConfig = errors.New("invalid jepsen configuration")

func (c Config) withDefaults() (Config, error) {
	c.Kinds = slices.Clone(c.Kinds)
	c.Workloads = slices.Clone(c.Workloads)
	if len(c.Workloads) == 0 {
		c.Workloads = []Workload{WorkloadIndex}
	}
	if c.Torrents == 0 {
		c.Torrents = 8
	}
	if c.Env == nil {
		c.Env = os.Environ()
	} else {
		c.Env = slices.Clone(c.Env)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Time, 60*time.Second)
	def(&c.Interval, 10*time.Second)
	def(&c.OpTimeout, time.Second)
	if slices.Contains(c.Kinds, KindClock) {
		def(&c.PeerLease, c.Time+2*time.Minute)
	}
	def(&c.PeerLease, c.Time+10*time.Minute)
	def(&c.CheckTimeout, 2*time.Minute)
	if c.Nodes == 0 {
		c.Nodes = 5
	}
	if c.Rate == 0 {
		c.Rate = 200
	}
	if c.Concurrency == 0 {
		c.Concurrency = 10
	}
	if c.Files == 0 {
		c.Files = 20
	}
	if c.Net == "" {
		c.Net = NetAuto
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.Binary == "":
		return c, fmt.Errorf("%w: the path of the fileshare binary is required", ErrConfig)
	case c.Out == "":
		return c, fmt.Errorf("%w: an output directory is required (--out DIR)", ErrConfig)
	case c.Nodes != 3 && c.Nodes != 5:
		return c, fmt.Errorf("%w: --nodes %d: use 3 or 5", ErrConfig, c.Nodes)
	case c.Time < 5*time.Second:
		return c, fmt.Errorf("%w: --time %v is too short to learn anything; use at least 5s", ErrConfig, c.Time)
	case c.Interval < time.Second:
		return c, fmt.Errorf("%w: --interval %v: faults need at least 1s each to take effect", ErrConfig, c.Interval)
	case c.Concurrency < 1 || c.Concurrency > 1000:
		return c, fmt.Errorf("%w: --concurrency %d: use 1 to 1000 clients", ErrConfig, c.Concurrency)
	case c.Files < 1 || c.Files > 10000:
		return c, fmt.Errorf("%w: --files %d: use 1 to 10000 files", ErrConfig, c.Files)
	case c.Torrents < 1 || c.Torrents > 1000:
		return c, fmt.Errorf("%w: --torrents %d: use 1 to 1000 swarms", ErrConfig, c.Torrents)
	case slices.ContainsFunc(c.Workloads, func(w Workload) bool { return w != WorkloadIndex && w != WorkloadTracker && w != WorkloadAccounting }):
		return c, fmt.Errorf("%w: unknown workload in %v; use index, tracker, accounting or index,tracker", ErrConfig, c.Workloads)
	case c.has(WorkloadAccounting) && c.has(WorkloadTracker):
		return c, fmt.Errorf("%w: the accounting workload makes the tracker private, which refuses the tracker workload's announces; run them separately", ErrConfig)
	case c.OpTimeout < 100*time.Millisecond:
		return c, fmt.Errorf("%w: op timeout %v is below 100ms; operations would time out in normal operation", ErrConfig, c.OpTimeout)
	case c.PeerLease < c.Time+time.Minute:
		return c, fmt.Errorf("%w: the peer lease %v must outlast the run (%v) by a minute, or the masters expire the clients' holdings", ErrConfig, c.PeerLease, c.Time)
	case c.CheckTimeout < 0:
		return c, fmt.Errorf("%w: negative check timeout", ErrConfig)
	case c.TrackerCmd != "" && !slices.Equal(c.Workloads, []Workload{WorkloadTracker}):
		return c, fmt.Errorf("%w: a tracker under test (--tracker-cmd) runs the tracker workload only; use --workload tracker", ErrConfig)
	case c.TrackerCmd != "" && slices.ContainsFunc(c.Kinds, func(k Kind) bool { return k != KindKill && k != KindPause }):
		return c, fmt.Errorf("%w: a tracker under test (--tracker-cmd) is one process: only the kill and pause faults apply, not %v", ErrConfig, c.Kinds)
	}
	return c, nil
}

// NeedsPrivateNamespace reports whether a run with these faults should
// run in a private network and mount namespace (RunInPrivateNetns): when
// its network faults use iptables, or its disk-full or power-loss faults
// mount a filesystem per master (as root), so neither rules nor mounts
// reach the host.
func NeedsPrivateNamespace(kinds []Kind, net NetMode) bool {
	if slices.ContainsFunc(kinds, Kind.NeedsNetwork) {
		if mode, _, err := ResolveNet(net); err == nil && mode == NetIptables {
			return true
		}
	}
	if slices.ContainsFunc(kinds, isPowerLoss) && powerSupported() == "" {
		return true
	}
	return slices.Contains(kinds, KindDiskFull) && diskSupported() == ""
}

// needsNetwork reports whether any configured fault acts on links.
func (c Config) needsNetwork() bool {
	return slices.ContainsFunc(c.Kinds, Kind.NeedsNetwork)
}

// Workload names what a run's clients do.
type Workload string

// The workloads.
const (
	// WorkloadIndex registers, unregisters, looks up and searches files
	// through the SwarmMaster API (workload.go).
	WorkloadIndex Workload = "index"
	// WorkloadTracker announces BitTorrent peers (started, re-announce,
	// completed, stopped) to every master's HTTP tracker
	// (tracker_workload.go).
	WorkloadTracker Workload = "tracker"
	// WorkloadAccounting announces growing counters to a private tracker
	// with members' passkeys and checks every master's books
	// (accounting_workload.go). It puts the tracker in private mode, so it
	// does not combine with the tracker workload.
	WorkloadAccounting Workload = "accounting"
)

// ParseWorkloads parses a comma-separated workload list: "index",
// "tracker", "index,tracker" (or "all"). Duplicates are dropped.
func ParseWorkloads(s string) ([]Workload, error) {
	var out []Workload
	for _, part := range strings.Split(s, ",") {
		w := Workload(strings.TrimSpace(part))
		switch w {
		case "all":
			return []Workload{WorkloadIndex, WorkloadTracker}, nil
		case WorkloadIndex, WorkloadTracker, WorkloadAccounting:
			if !slices.Contains(out, w) {
				out = append(out, w)
			}
		default:
			return nil, fmt.Errorf("unknown workload %q; use index, tracker, accounting or index,tracker", w)
		}
	}
	return out, nil
}

func (c Config) has(w Workload) bool { return slices.Contains(c.Workloads, w) }

// udpFaults reports whether the run puts UDP faults on the tracker
// workload's UDP announces: then the masters serve a UDP tracker, the
// harness runs a UDP proxy in front of each, and half the workload's
// announces go over UDP.
func (c Config) udpFaults() bool {
	return c.tracks() && slices.ContainsFunc(c.Kinds, isUDP)
}

// tracks reports whether the run announces to the masters' trackers.
func (c Config) tracks() bool { return c.has(WorkloadTracker) || c.has(WorkloadAccounting) }
