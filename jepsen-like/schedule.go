package jepsenlike

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Kind names a fault the nemesis can inject.
type Kind string

// The fault kinds. Each lasts a drawn duration and then heals.
const (
	// KindKill SIGKILLs a random minority of masters; healing restarts
	// them from their data dirs.
	KindKill Kind = "kill"
	// KindPause SIGSTOPs a random minority; healing SIGCONTs them.
	KindPause Kind = "pause"
	// KindPartition cuts the cluster into two random halves (both
	// directions of every link between them).
	KindPartition Kind = "partition"
	// KindOneWay cuts one direction only: everything one random master
	// sends (variant "out") or receives (variant "in").
	KindOneWay Kind = "one-way"
	// KindRing is Jepsen's majorities ring: every master still hears from
	// a majority, but no two masters hear from the same majority.
	KindRing Kind = "ring"
	// KindBridge splits the cluster in two halves joined by one master
	// that hears from both.
	KindBridge Kind = "bridge"
	// KindIsolateLeader cuts the current leader off from every other
	// master (clients can still reach it).
	KindIsolateLeader Kind = "isolate-leader"
	// KindKillLeader SIGKILLs the current leader; healing restarts it.
	KindKillLeader Kind = "kill-leader"
	// KindRollingRestart restarts every master in turn (SIGTERM, then
	// start again from its data dir), waiting for each to be ready.
	KindRollingRestart Kind = "rolling-restart"
	// KindMembership removes a random master from the cluster
	// (Cluster.Remove) and stops it; healing wipes its data dir and adds
	// it back with --join.
	KindMembership Kind = "membership"
	// KindDelay delays every packet between masters.
	KindDelay Kind = "delay"
	// KindLoss drops a fraction of the packets between masters.
	KindLoss Kind = "loss"
	// KindDiskFull fills one master's filesystem (each master's data dir
	// has a small tmpfs of its own, root only) with a filler file written
	// until ENOSPC; healing deletes the filler. Without root it is
	// skipped, with a note.
	KindDiskFull Kind = "disk-full"
	// KindCorrupt stops one master (SIGTERM), flips bytes in or truncates
	// its raft.db or a file of its newest snapshot (Variant names which
	// and how), and starts it again. The master must either refuse to
	// start (exit status 4, "refused to start: damaged data dir") or
	// start and recover; healing replaces a master that refused: it is
	// removed from the configuration, wiped and added back with --join.
	KindCorrupt Kind = "corrupt"
	// KindClock moves one master's wall clock through the masters'
	// FILESHARE_UNSAFE_CLOCK_FILE hook: a jump to Offset at once, or a
	// drift that reaches Offset in steps over the fault window (Variant
	// "jump" or "drift"), and hands that master leadership (a master reads
	// its wall clock when it becomes leader, and the leader runs the peer
	// leases); healing sets it back to 0s.
	KindClock Kind = "clock"
	// KindPowerLoss cuts one master's power: SIGKILL, then every write
	// it had not fsynced vanishes (Variant "torn": the last unsynced
	// write of each file keeps a prefix cut at a 512-byte boundary).
	// Each master's data dir is a FUSE filesystem of the harness that
	// keeps what was written since the last fsync (root on Linux;
	// skipped with a note elsewhere). Healing starts the master again;
	// one that refuses to start (exit status 4) is replaced.
	KindPowerLoss Kind = "power-loss"
	// KindPowerLossAll cuts every master's power at once (a rack losing
	// power), as KindPowerLoss does to one.
	KindPowerLossAll Kind = "power-loss-all"
	// KindUDPLoss, KindUDPDup, KindUDPReorder and KindUDPDelay act on
	// the tracker workload's UDP announces (BEP 15), in both directions,
	// through a UDP proxy the harness runs in front of each master's UDP
	// tracker: they drop a Fraction of the datagrams, send a Fraction
	// twice, hold a Fraction back until the next has passed, or delay
	// every one by Delay plus up to Jitter. The workload's clients retry
	// as BEP 15 says, with the timeouts scaled down. Without the tracker
	// workload they are skipped, with a note.
	KindUDPLoss    Kind = "udp-loss"
	KindUDPDup     Kind = "udp-dup"
	KindUDPReorder Kind = "udp-reorder"
	KindUDPDelay   Kind = "udp-delay"
)

// Kinds returns every fault kind the nemesis knows, in the order the CLI
// documents them.
func Kinds() []Kind {
	return []Kind{KindKill, KindPause, KindPartition, KindOneWay, KindRing, KindBridge,
		KindIsolateLeader, KindKillLeader, KindRollingRestart, KindMembership, KindDelay, KindLoss,
		KindDiskFull, KindCorrupt, KindClock, KindPowerLoss, KindPowerLossAll,
		KindUDPLoss, KindUDPDup, KindUDPReorder, KindUDPDelay}
}

// isUDP reports whether k acts on the tracker's UDP datagrams.
func isUDP(k Kind) bool {
	return k == KindUDPLoss || k == KindUDPDup || k == KindUDPReorder || k == KindUDPDelay
}

// isPowerLoss reports whether k cuts masters' power.
func isPowerLoss(k Kind) bool { return k == KindPowerLoss || k == KindPowerLossAll }

// kindAlias expands the convenience names of the command line.
func kindAlias(name string) []Kind {
	switch name {
	case "all":
		return Kinds()
	case "leader":
		return []Kind{KindIsolateLeader, KindKillLeader}
	case "net":
		return []Kind{KindPartition, KindOneWay, KindRing, KindBridge}
	}
	return nil
}

// ParseKinds parses a comma-separated list of fault kinds. "all" means
// every kind; "leader" means isolate-leader and kill-leader; "net" means
// every partition kind; "none" or "" means no faults. Duplicates are
// removed; the order of first mention is kept.
func ParseKinds(s string) ([]Kind, error) {
	var out []Kind
	addKind := func(k Kind) {
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.ToLower(strings.TrimSpace(part))
		switch {
		case part == "" || part == "none":
		case kindAlias(part) != nil:
			for _, k := range kindAlias(part) {
				addKind(k)
			}
		case slices.Contains(Kinds(), Kind(part)):
			addKind(Kind(part))
		default:
			var names []string
			for _, k := range Kinds() {
				names = append(names, string(k))
			}
			return nil, fmt.Errorf("unknown fault kind %q; use a comma-separated list of %s, or all, leader, net, none", part, strings.Join(names, ", "))
		}
	}
	return out, nil
}

// NeedsNetwork reports whether a kind acts on links between masters (and
// so needs a network fault mechanism).
func (k Kind) NeedsNetwork() bool {
	switch k {
	case KindPartition, KindOneWay, KindRing, KindBridge, KindIsolateLeader, KindDelay, KindLoss:
		return true
	}
	return false
}

// Fault is one planned fault: what, to whom, when and for how long. The
// nodes are indexes into the cluster (0-based), drawn from the seed; a
// fault aimed at the leader finds it when it starts.
type Fault struct {
	Seq  int  `json:"seq"`
	Kind Kind `json:"kind"`
	// Variant refines the kind: "in" or "out" for one-way; "jump" or
	// "drift" for clock; "clean" or "torn" for the power losses; for corrupt, the file and the damage as
	// "FILE/HOW" with FILE raft.db, state.bin or meta.json (the last two
	// of the newest snapshot) and HOW flip or truncate.
	Variant string `json:"variant,omitempty"`
	// Order is a random permutation of the node indexes. Each kind reads
	// what it needs from it: kill and pause take the first Count nodes;
	// partition splits it in halves; ring and bridge lay nodes out in
	// this order; one-way and membership take Order[0].
	Order []int `json:"order"`
	Count int   `json:"count,omitempty"`
	// At is when the fault starts, from the beginning of the run; For is
	// how long it lasts before it heals.
	At  Duration `json:"at"`
	For Duration `json:"for"`
	// Delay and Jitter apply to KindDelay and KindUDPDelay; Loss (0..1)
	// to KindLoss; Fraction (0..1) to udp-loss, udp-dup and udp-reorder.
	Delay    Duration `json:"delay,omitempty"`
	Jitter   Duration `json:"jitter,omitempty"`
	Loss     float64  `json:"loss,omitempty"`
	Fraction float64  `json:"fraction,omitempty"`
	// Offset is the clock fault's final offset of the target's wall
	// clock (±30 s … ±10 min).
	Offset Duration `json:"offset,omitempty"`
	// Salt seeds the corrupt fault's choice of bytes and the power
	// losses' tears, so a seed replays the same damage.
	Salt uint64 `json:"salt,omitempty"`
}

// Duration is a time.Duration that reads and writes as a string in JSON
// ("1.5s").
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Plan is everything that determines a schedule. Two equal Plans give the
// same schedule.
type Plan struct {
	Seed     int64         `json:"seed"`
	Nodes    int           `json:"nodes"`
	Time     time.Duration `json:"-"`
	Interval time.Duration `json:"-"`
	Kinds    []Kind        `json:"kinds"`
}

// PlanSchedule draws the faults of a run from the plan's seed: one fault
// every Interval, starting half an interval in (so the run begins with a
// fault-free baseline), each lasting 40–75 % of the interval, so that the
// cluster gets time to recover before the next. No fault is planned to
// end later than one second before the run's end. The kind of each fault
// is drawn uniformly from Kinds. The result depends on nothing but the
// plan: the same seed replays the same schedule.
func PlanSchedule(p Plan) []Fault {
	if len(p.Kinds) == 0 || p.Interval <= 0 || p.Nodes < 1 {
		return nil
	}
	rng := rand.New(rand.NewPCG(uint64(p.Seed), 0x6a65707365_6e2d6c)) // "jepsen-l"
	minority := (p.Nodes - 1) / 2
	var out []Fault
	for at := p.Interval / 2; ; at += p.Interval {
		f := Fault{Seq: len(out) + 1, Kind: p.Kinds[rng.IntN(len(p.Kinds))], Order: rng.Perm(p.Nodes)}
		lo, hi := p.Interval*2/5, p.Interval*3/4
		dur := lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
		dur = dur.Round(time.Millisecond)
		if at+dur > p.Time-time.Second {
			break
		}
		f.At, f.For = Duration(at), Duration(dur)
		switch f.Kind {
		case KindKill, KindPause:
			f.Count = 1 + rng.IntN(max(minority, 1))
		case KindOneWay:
			f.Variant = []string{"in", "out"}[rng.IntN(2)]
		case KindDelay:
			f.Delay = Duration(time.Duration(50+rng.IntN(151)) * time.Millisecond)
			f.Jitter = f.Delay / 4
		case KindLoss:
			f.Loss = float64(10+rng.IntN(21)) / 100
		case KindCorrupt:
			f.Variant = corruptFiles[rng.IntN(len(corruptFiles))] + "/" + []string{"flip", "truncate"}[rng.IntN(2)]
			f.Salt = rng.Uint64()
		case KindUDPLoss:
			f.Fraction = float64(10+rng.IntN(31)) / 100
		case KindUDPDup, KindUDPReorder:
			f.Fraction = float64(20+rng.IntN(41)) / 100
		case KindUDPDelay:
			f.Delay = Duration(time.Duration(50+rng.IntN(251)) * time.Millisecond)
			f.Jitter = f.Delay
		case KindPowerLoss, KindPowerLossAll:
			f.Variant = []string{"clean", "torn"}[rng.IntN(2)]
			f.Salt = rng.Uint64()
		case KindClock:
			f.Variant = []string{"jump", "drift"}[rng.IntN(2)]
			off := 30*time.Second + time.Duration(rng.IntN(571))*time.Second // 30 s … 10 min
			if rng.IntN(2) == 0 {
				off = -off
			}
			f.Offset = Duration(off)
		}
		out = append(out, f)
	}
	return out
}

// Link is one direction of the connection between two masters, by index:
// packets from From to To.
type Link struct {
	From int `json:"from"`
	To   int `json:"to"`
}

// cutBetween returns both directions of every link between a and b.
func cutBetween(a, b []int) []Link {
	var out []Link
	for _, x := range a {
		for _, y := range b {
			out = append(out, Link{x, y}, Link{y, x})
		}
	}
	return out
}

// halves splits order into a smaller first half and a larger second one.
func halves(order []int) (a, b []int) {
	k := len(order) / 2
	return order[:k], order[k:]
}

// ringCuts returns the one-way cuts of a majorities ring laid out in
// order: node order[i] hears only from the nodes at ring offsets
// -⌊m/2⌋..⌈m/2⌉ around it, where m+1 is a majority. For 5 nodes each
// hears from its two neighbours (symmetric); for 3 nodes each hears from
// itself and its successor only. Every node hears a majority, and no two
// hear the same one.
func ringCuts(order []int) []Link {
	n := len(order)
	m := n / 2 // others a node must hear from to see a majority
	lo, hi := -(m / 2), (m+1)/2
	var out []Link
	for i := range n {
		hears := map[int]bool{}
		for d := lo; d <= hi; d++ {
			hears[order[((i+d)%n+n)%n]] = true
		}
		for _, j := range order {
			if !hears[j] {
				out = append(out, Link{From: j, To: order[i]})
			}
		}
	}
	return out
}

// bridgeCuts splits order into two sides joined by order[k], k = (n-1)/2:
// the sides cannot talk to each other, the bridge talks to both.
func bridgeCuts(order []int) []Link {
	k := (len(order) - 1) / 2
	return cutBetween(order[:k], order[k+1:])
}

// isolate cuts node x off from every other node in both directions.
func isolate(x int, n int) []Link {
	var others []int
	for i := range n {
		if i != x {
			others = append(others, i)
		}
	}
	return cutBetween([]int{x}, others)
}

// oneWay cuts everything x sends (out) or receives (in).
func oneWay(x, n int, variant string) []Link {
	var out []Link
	for i := range n {
		if i == x {
			continue
		}
		if variant == "in" {
			out = append(out, Link{From: i, To: x})
		} else {
			out = append(out, Link{From: x, To: i})
		}
	}
	return out
}
