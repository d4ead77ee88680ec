package jepsenlike

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"fileshare/internal/cfgerr"
	"fileshare/internal/defaults"
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

// ErrConfig wraps every configuration mistake Run rejects; most are a
// *ConfigError naming the field.
var ErrConfig = errors.New("invalid jepsen configuration")

// ConfigError names the Config field at fault (as "Nodes"), never a
// command-line flag; the CLI maps fields to its flags. The same type as
// master.ConfigError.
type ConfigError = cfgerr.Error

// configErr returns a *ConfigError wrapping ErrConfig. reason names
// fields as {Path}; see cfgerr.Error.
func configErr(field, reason string, args ...any) error {
	return cfgerr.New(ErrConfig, field, fmt.Sprintf(reason, args...))
}

// DefaultConfig returns the value every tunable field of Config takes when
// it is zero, so a caller (the CLI's flags) can show and start from them.
// PeerLease stays zero (its default derives from Time and the faults), as
// do the required fields and the fault kinds (empty is a baseline run).
func DefaultConfig() Config {
	return Config{
		Nodes:        5,
		Time:         60 * time.Second,
		Interval:     10 * time.Second,
		Workloads:    []Workload{WorkloadIndex},
		Torrents:     8,
		Rate:         200,
		Concurrency:  10,
		Files:        20,
		OpTimeout:    time.Second,
		Net:          NetAuto,
		CheckTimeout: 2 * time.Minute,
	}
}

func (c Config) withDefaults() (Config, error) {
	c.Kinds = slices.Clone(c.Kinds)
	c.Workloads = slices.Clone(c.Workloads)
	d := DefaultConfig()
	if len(c.Workloads) == 0 {
		c.Workloads = d.Workloads
	}
	defaults.Fill(&c.Torrents, d.Torrents)
	if c.Env == nil {
		c.Env = os.Environ()
	} else {
		c.Env = slices.Clone(c.Env)
	}
	defaults.Fill(&c.Time, d.Time)
	defaults.Fill(&c.Interval, d.Interval)
	defaults.Fill(&c.OpTimeout, d.OpTimeout)
	if slices.Contains(c.Kinds, KindClock) {
		defaults.Fill(&c.PeerLease, c.Time+2*time.Minute)
	}
	defaults.Fill(&c.PeerLease, c.Time+10*time.Minute)
	defaults.Fill(&c.CheckTimeout, d.CheckTimeout)
	defaults.Fill(&c.Nodes, d.Nodes)
	defaults.Fill(&c.Rate, d.Rate)
	defaults.Fill(&c.Concurrency, d.Concurrency)
	defaults.Fill(&c.Files, d.Files)
	defaults.Fill(&c.Net, d.Net)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.Binary == "":
		return c, configErr("Binary", "the path of the fileshare binary ({Binary}) is required")
	case c.Out == "":
		return c, configErr("Out", "an output directory is required ({Out})")
	case c.Nodes != 3 && c.Nodes != 5:
		return c, configErr("Nodes", "{Nodes} %d: use 3 or 5", c.Nodes)
	case c.Time < 5*time.Second:
		return c, configErr("Time", "{Time} %v is too short to learn anything; use at least 5s", c.Time)
	case c.Interval < time.Second:
		return c, configErr("Interval", "{Interval} %v: faults need at least 1s each to take effect", c.Interval)
	case c.Concurrency < 1 || c.Concurrency > 1000:
		return c, configErr("Concurrency", "{Concurrency} %d: use 1 to 1000 clients", c.Concurrency)
	case c.Files < 1 || c.Files > 10000:
		return c, configErr("Files", "{Files} %d: use 1 to 10000 files", c.Files)
	case c.Torrents < 1 || c.Torrents > 1000:
		return c, configErr("Torrents", "{Torrents} %d: use 1 to 1000 swarms", c.Torrents)
	case slices.ContainsFunc(c.Workloads, func(w Workload) bool { return w != WorkloadIndex && w != WorkloadTracker && w != WorkloadAccounting }):
		return c, configErr("Workloads", "unknown workload in {Workloads} %v; use index, tracker, accounting or index,tracker", c.Workloads)
	case c.has(WorkloadAccounting) && c.has(WorkloadTracker):
		return c, configErr("Workloads", "the accounting workload makes the tracker private, which refuses the tracker workload's announces; run them separately")
	case c.OpTimeout < 100*time.Millisecond:
		return c, configErr("OpTimeout", "{OpTimeout} %v is below 100ms; operations would time out in normal operation", c.OpTimeout)
	case c.PeerLease < c.Time+time.Minute:
		return c, configErr("PeerLease", "{PeerLease} %v must outlast the run (%v) by a minute, or the masters expire the clients' holdings", c.PeerLease, c.Time)
	case c.CheckTimeout < 0:
		return c, configErr("CheckTimeout", "{CheckTimeout} is negative")
	case c.TrackerCmd != "" && !slices.Equal(c.Workloads, []Workload{WorkloadTracker}):
		return c, configErr("Workloads", "a tracker under test ({TrackerCmd}) runs the tracker workload only; set {Workloads} to tracker")
	case c.TrackerCmd != "" && slices.ContainsFunc(c.Kinds, func(k Kind) bool { return k != KindKill && k != KindPause }):
		return c, configErr("Kinds", "a tracker under test ({TrackerCmd}) is one process: only the kill and pause faults apply, not {Kinds} %v", c.Kinds)
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
