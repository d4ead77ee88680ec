package jepsenlike

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"fileshare/client"
)

// Window is a fault as it actually happened: the planned Fault, when it
// started and healed (wall clock, and offsets from the run's start on the
// history's clock), whom it hit, and anything that did not go to plan.
type Window struct {
	Fault
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
	StartOffset Duration  `json:"start_offset"`
	EndOffset   Duration  `json:"end_offset"`
	// Targets are the masters the fault acted on.
	Targets []string `json:"targets,omitempty"`
	// Cuts are the link directions that dropped packets, as "m1→m2".
	Cuts []string `json:"cuts,omitempty"`
	// Notes say what the nemesis did beyond the plan (the bytes a corrupt
	// fault damaged, how a damaged master reacted) and what did not go to
	// plan (no leader found, a restart that failed, ...).
	Notes []string `json:"notes,omitempty"`
	// UDP counts what the UDP proxies did while a UDP fault was in
	// force.
	UDP *UDPCounts `json:"udp,omitempty"`
	// HealDigests compares the index digests of the masters that serve
	// once the fault has healed and the workload has been held back for a
	// moment (nil: not compared, e.g. the run ended first).
	HealDigests *DigestResult `json:"heal_digests,omitempty"`
}

// nemesis carries out a schedule against the cluster and the network,
// one fault at a time, and records the windows.
type nemesis struct {
	cl     *cluster
	net    netInjector
	admin  *client.Client
	t0     time.Time
	logger *slog.Logger
	// pace is the workload's pacer, held back after each heal while the
	// masters' digests are compared; nil: no comparison.
	pace *pacer
	// opTimeout bounds the workload's operations: after holding pace
	// back that long, none is in flight.
	opTimeout time.Duration
	// disks are the masters' own filesystems for disk-full faults; nil
	// when they could not be had, and diskSkip says why.
	disks    *disks
	diskSkip string
	// clockFiles are the masters' clock offset files; nil unless clock
	// faults were asked for.
	clockFiles []string
	// power are the masters' power-loss filesystems; nil when they
	// could not be had, and powerSkip says why.
	power     []*powerFS
	powerSkip string
	// udp are the UDP proxies in front of the masters' UDP trackers; nil
	// without the tracker workload.
	udp []*udpProxy

	mu      sync.Mutex
	windows []Window
}

func (nm *nemesis) record(w Window) {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	nm.windows = append(nm.windows, w)
}

func (nm *nemesis) realised() []Window {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	return slices.Clone(nm.windows)
}

// run starts each fault at its planned time (or as soon as the previous
// one has healed, if that took longer), holds it for its duration and
// heals it. It returns when the schedule is done or stop closes; a fault
// in force when stop closes is healed first.
func (nm *nemesis) run(ctx context.Context, stop <-chan struct{}, faults []Fault) {
	for _, f := range faults {
		if !waitUntil(ctx, stop, nm.t0.Add(time.Duration(f.At))) {
			return
		}
		w := Window{Fault: f, Start: time.Now()}
		w.StartOffset = Duration(w.Start.Sub(nm.t0))
		nm.logger.Info("fault starts", "seq", f.Seq, "kind", f.Kind, "variant", f.Variant)
		heal := nm.apply(ctx, f, &w)
		stopped := false
		if heal != nil {
			stopped = !waitUntil(ctx, stop, time.Now().Add(time.Duration(f.For)))
			hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			heal(hctx, &w)
			cancel()
		}
		if !stopped && nm.pace != nil {
			nm.compareAfterHeal(ctx, stop, &w)
		}
		w.End = time.Now()
		w.EndOffset = Duration(w.End.Sub(nm.t0))
		nm.logger.Info("fault healed", "seq", f.Seq, "kind", f.Kind, "targets", w.Targets, "notes", w.Notes)
		nm.record(w)
		if stopped {
			return
		}
	}
}

// waitUntil sleeps until t; false if ctx ended or stop closed first.
func waitUntil(ctx context.Context, stop <-chan struct{}, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	}
}

type healFunc func(ctx context.Context, w *Window)

func (nm *nemesis) note(w *Window, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	w.Notes = append(w.Notes, msg)
	nm.logger.Warn("nemesis: "+msg, "seq", w.Seq)
}

// apply starts fault f and returns how to heal it, or nil if nothing is
// left to heal (the fault could not start, or it completes on its own
// like a rolling restart).
func (nm *nemesis) apply(ctx context.Context, f Fault, w *Window) healFunc {
	cl := nm.cl
	n := len(cl.nodes)
	switch f.Kind {
	case KindKill, KindPause:
		targets := f.Order[:min(max(f.Count, 1), n)]
		return nm.stopNodes(f.Kind == KindKill, targets, w)
	case KindKillLeader:
		return nm.stopNodes(true, []int{nm.leaderOr(ctx, f.Order[0], w)}, w)
	case KindPartition:
		a, b := halves(f.Order)
		return nm.cut(ctx, cutBetween(a, b), w)
	case KindOneWay:
		w.Targets = []string{cl.nodes[f.Order[0]].id}
		return nm.cut(ctx, oneWay(f.Order[0], n, f.Variant), w)
	case KindRing:
		return nm.cut(ctx, ringCuts(f.Order), w)
	case KindBridge:
		w.Targets = []string{cl.nodes[f.Order[(n-1)/2]].id}
		return nm.cut(ctx, bridgeCuts(f.Order), w)
	case KindIsolateLeader:
		l := nm.leaderOr(ctx, f.Order[0], w)
		w.Targets = []string{cl.nodes[l].id}
		return nm.cut(ctx, isolate(l, n), w)
	case KindDelay:
		return nm.setNet(ctx, NetFaults{Delay: time.Duration(f.Delay), Jitter: time.Duration(f.Jitter)}, w)
	case KindLoss:
		return nm.setNet(ctx, NetFaults{Loss: f.Loss}, w)
	case KindRollingRestart:
		nm.rollingRestart(ctx, f.Order, w)
		return nil
	case KindMembership:
		return nm.removeMember(ctx, f.Order[0], w)
	case KindDiskFull:
		return nm.fillDisk(ctx, f.Order[0], w)
	case KindCorrupt:
		return nm.corrupt(ctx, f, w)
	case KindClock:
		return nm.moveClock(ctx, f, w)
	case KindUDPLoss:
		return nm.setUDP(UDPFaults{Loss: f.Fraction}, w)
	case KindUDPDup:
		return nm.setUDP(UDPFaults{Dup: f.Fraction}, w)
	case KindUDPReorder:
		return nm.setUDP(UDPFaults{Reorder: f.Fraction}, w)
	case KindUDPDelay:
		return nm.setUDP(UDPFaults{Delay: f.Delay, Jitter: f.Jitter}, w)
	case KindPowerLoss:
		return nm.powerLoss(ctx, f, f.Order[:1], w)
	case KindPowerLossAll:
		return nm.powerLoss(ctx, f, f.Order, w)
	}
	nm.note(w, "unknown fault kind %q", f.Kind)
	return nil
}

// leaderOr finds the current leader, or falls back to the drawn node.
func (nm *nemesis) leaderOr(ctx context.Context, fallback int, w *Window) int {
	if l := nm.cl.findLeader(ctx, 3*time.Second); l >= 0 {
		return l
	}
	nm.note(w, "no leader found within 3s; acting on %s instead", nm.cl.nodes[fallback].id)
	return fallback
}

func (nm *nemesis) stopNodes(kill bool, targets []int, w *Window) healFunc {
	var hit []int
	for _, i := range targets {
		if st := nm.cl.state(i); !st.running || st.paused {
			nm.note(w, "%s is not running; left alone", nm.cl.nodes[i].id)
			continue
		}
		var err error
		if kill {
			err = nm.cl.kill(i)
		} else {
			err = nm.cl.pause(i)
		}
		if err != nil {
			nm.note(w, "%v", err)
			continue
		}
		hit = append(hit, i)
		w.Targets = append(w.Targets, nm.cl.nodes[i].id)
	}
	if len(hit) == 0 {
		return nil
	}
	return func(_ context.Context, w *Window) {
		for _, i := range hit {
			var err error
			if kill {
				err = nm.cl.start(i)
			} else {
				err = nm.cl.resume(i)
			}
			if err != nil {
				nm.note(w, "heal: %v", err)
			}
		}
	}
}

func (nm *nemesis) cut(ctx context.Context, links []Link, w *Window) healFunc {
	for _, l := range links {
		w.Cuts = append(w.Cuts, nm.cl.nodes[l.From].id+"→"+nm.cl.nodes[l.To].id)
	}
	return nm.setNet(ctx, NetFaults{Cut: links}, w)
}

func (nm *nemesis) setNet(ctx context.Context, f NetFaults, w *Window) healFunc {
	if err := nm.net.Set(ctx, f); err != nil {
		nm.note(w, "%v", err)
		_ = nm.net.Set(ctx, NetFaults{})
		return nil
	}
	return func(ctx context.Context, w *Window) {
		if err := nm.net.Set(ctx, NetFaults{}); err != nil {
			nm.note(w, "heal the network: %v", err)
		}
	}
}

// rollingRestart restarts each master in turn with SIGTERM (a leader
// hands off leadership first) and waits until it is ready again.
func (nm *nemesis) rollingRestart(ctx context.Context, order []int, w *Window) {
	for _, i := range order {
		id := nm.cl.nodes[i].id
		if st := nm.cl.state(i); !st.running || st.removed {
			nm.note(w, "%s is not running; skipped", id)
			continue
		}
		w.Targets = append(w.Targets, id)
		if err := nm.cl.terminate(i, 10*time.Second); err != nil {
			nm.note(w, "%v", err)
		}
		if err := nm.cl.start(i); err != nil {
			nm.note(w, "restart: %v", err)
			continue
		}
		if !nm.waitReady(ctx, i, 20*time.Second) {
			nm.note(w, "%s was not ready within 20s of its restart", id)
		}
	}
}

// waitReady polls master i's status until it is a voter that knows a
// leader and has caught up. A master that rejoined is a non-voter until
// the leader promotes it (after the masters' server stabilization time):
// until then it does not count towards a quorum, so the next fault must
// not start before.
func (nm *nemesis) waitReady(ctx context.Context, i int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if nm.readyVoter(ctx, i) {
			return true
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	return false
}

// readyVoter reports whether master i is ready and the leader's
// configuration lists it as a voter. The leader's word counts, not the
// master's own: a master that rejoined installs a snapshot taken before
// its removal, which lists it as a voter while the leader still holds it
// as a non-voter, and a fault started then takes a quorum away (two
// voters of three, one of them the next fault's target).
func (nm *nemesis) readyVoter(ctx context.Context, i int) bool {
	self, err := nm.cl.status(ctx, i)
	if err != nil || self.LeaderID == "" {
		return false
	}
	leader := self
	if self.LeaderID != self.ID {
		l := slices.IndexFunc(nm.cl.nodes, func(n *node) bool { return n.id == self.LeaderID })
		if l < 0 {
			return false
		}
		if leader, err = nm.cl.status(ctx, l); err != nil {
			return false
		}
	}
	return readyVoterIn(self, leader)
}

// readyVoterIn reports whether the master whose status is self is ready
// and a voter in the configuration of leader, a status of the master self
// names as its leader.
func readyVoterIn(self, leader client.Status) bool {
	if !self.Ready || self.LeaderID == "" || leader.ID != self.LeaderID || leader.LeaderID != leader.ID {
		return false
	}
	for _, m := range leader.Members {
		if m.ID == self.ID && m.Suffrage == client.Voter {
			return true
		}
	}
	return false
}

// removeMember removes master x from the Raft configuration, stops it,
// and returns a heal that wipes its data dir and adds it back with --join.
func (nm *nemesis) removeMember(ctx context.Context, x int, w *Window) healFunc {
	id := nm.cl.nodes[x].id
	if st := nm.cl.state(x); !st.running || st.paused {
		nm.note(w, "%s is not running; not removed", id)
		return nil
	}
	w.Targets = []string{id}
	nm.cl.markRemoving(x, true)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := nm.admin.RemoveMember(rctx, id)
	cancel()
	if err != nil {
		// The reply may be lost while the removal happened anyway.
		if member, known := nm.isMember(ctx, id); !known || member {
			nm.note(w, "remove %s from the cluster: %v", id, err)
			nm.cl.markRemoving(x, false)
			return nil
		}
		nm.note(w, "remove %s reported %v, but the leader no longer lists it", id, err)
	}
	if err := nm.cl.terminate(x, 5*time.Second); err != nil {
		nm.note(w, "%v", err)
	}
	nm.cl.markRemoved(x)
	return func(ctx context.Context, w *Window) {
		if err := nm.cl.rejoin(x); err != nil {
			nm.note(w, "rejoin: %v", err)
			return
		}
		if !nm.waitReady(ctx, x, 45*time.Second) {
			nm.note(w, "%s had not rejoined as a voter within 45s", id)
		}
	}
}

// members returns the IDs in the leader's Raft configuration; known is
// false if no leader answered.
func (nm *nemesis) members(ctx context.Context) (ids []string, known bool) {
	l := nm.cl.findLeader(ctx, 5*time.Second)
	if l < 0 {
		return nil, false
	}
	st, err := nm.cl.status(ctx, l)
	if err != nil {
		return nil, false
	}
	for _, m := range st.Members {
		ids = append(ids, m.ID)
	}
	return ids, true
}

// isMember asks the leader whether master id is in the Raft
// configuration; known is false if no leader answered.
func (nm *nemesis) isMember(ctx context.Context, id string) (member, known bool) {
	ids, known := nm.members(ctx)
	return slices.Contains(ids, id), known
}

// healAll undoes every fault, whatever state the nemesis left: it heals
// the network, resumes paused masters, restarts stopped ones and adds
// removed ones back, including any the leader no longer lists although
// the nemesis did not see its removal succeed. It returns what it could
// not do.
func (nm *nemesis) healAll(ctx context.Context) []string {
	var problems []string
	if err := nm.net.Set(ctx, NetFaults{}); err != nil {
		problems = append(problems, fmt.Sprintf("heal the network: %v", err))
	}
	for i, n := range nm.cl.nodes {
		if nm.disks != nil {
			if err := nm.disks.free(i); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", n.id, err))
			}
			nm.cl.markDiskFull(i, false)
		}
		if nm.clockFiles != nil {
			if err := writeClockOffset(nm.clockFiles[i], 0); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", n.id, err))
			}
		}
	}
	rejoined := map[int]bool{}
	for i, n := range nm.cl.nodes {
		st := nm.cl.state(i)
		var err error
		switch {
		case st.removed:
			err, rejoined[i] = nm.cl.rejoin(i), true
		case st.refused && !st.running:
			err, rejoined[i] = nm.replace(ctx, i), true
		case !st.running:
			err = nm.cl.start(i)
		case st.paused:
			err = nm.cl.resume(i)
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", n.id, err))
		}
	}
	ids, known := nm.members(ctx)
	for i, n := range nm.cl.nodes {
		if rejoined[i] || !known {
			continue
		}
		if !slices.Contains(ids, n.id) {
			nm.logger.Warn("the leader no longer lists this master; wiping it and adding it back", "node", n.id)
			if err := nm.cl.terminate(i, 5*time.Second); err != nil {
				problems = append(problems, err.Error())
			}
			nm.cl.markRemoved(i)
			if err := nm.cl.rejoin(i); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", n.id, err))
			}
		}
	}
	return problems
}

// fillDisk fills master x's filesystem until ENOSPC and returns a heal
// that deletes the filler and, if the master stopped meanwhile (a
// self-stop if its log said the disk was full, else a crash), starts it
// again; either way it waits for the master to catch up.
func (nm *nemesis) fillDisk(ctx context.Context, x int, w *Window) healFunc {
	id := nm.cl.nodes[x].id
	if nm.disks == nil {
		nm.note(w, "skipped: %s", nm.diskSkip)
		return nil
	}
	if st := nm.cl.state(x); !st.running || st.paused {
		nm.note(w, "%s is not running; left alone", id)
		return nil
	}
	w.Targets = []string{id}
	nm.cl.markDiskFull(x, true)
	n, err := nm.disks.fill(x)
	if err != nil {
		nm.note(w, "fill the filesystem of %s: %v", id, err)
	} else {
		nm.note(w, "filled the filesystem of %s (a %d MiB filler, then ENOSPC)", id, n>>20)
	}
	return func(ctx context.Context, w *Window) {
		if err := nm.disks.free(x); err != nil {
			nm.note(w, "heal: %v", err)
		}
		if st := nm.cl.state(x); !st.running && !st.removed && !st.refused {
			nm.note(w, "%s had stopped while its disk was full; started it again", id)
			if err := nm.cl.start(x); err != nil {
				nm.note(w, "heal: %v", err)
			}
		}
		nm.cl.markDiskFull(x, false)
		if !nm.waitReady(ctx, x, 30*time.Second) {
			nm.note(w, "%s had not caught up within 30s of the heal", id)
		}
	}
}

// corrupt stops master x (SIGTERM), damages its data dir as f.Variant
// says and starts it again, then watches for up to 20 s whether it
// refuses to start (exit status 4), becomes ready, or neither. The heal
// replaces a master that refused or is not running (removed from the
// configuration, wiped, rejoined with --join) and waits for one that
// started to be ready.
func (nm *nemesis) corrupt(ctx context.Context, f Fault, w *Window) healFunc {
	x := f.Order[0]
	id := nm.cl.nodes[x].id
	if st := nm.cl.state(x); !st.running || st.paused {
		nm.note(w, "%s is not running; left alone", id)
		return nil
	}
	w.Targets = []string{id}
	if !strings.HasPrefix(f.Variant, "raft.db/") {
		// A short run may not have snapshotted yet: ask for one, so
		// there is a snapshot to damage.
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := nm.admin.Snapshot(sctx, nm.cl.nodes[x].addrs.Advertise); err != nil {
			nm.note(w, "snapshot %s before damaging it: %v", id, err)
		}
		cancel()
	}
	if err := nm.cl.terminate(x, 10*time.Second); err != nil {
		nm.note(w, "%v", err)
	}
	// Mark first: a master that refuses at once must find it set.
	nm.cl.markDamaged(x, true)
	_, what, err := damage(nm.cl.dataDir(x), f.Variant, f.Salt)
	if nm.power != nil {
		nm.power[x].sync() // the damage is on disk; no power loss undoes it
	}
	if err != nil {
		nm.note(w, "damage %s: %v; started it undamaged", id, err)
		nm.cl.markDamaged(x, false)
	} else {
		nm.note(w, "%s: %s", id, what)
	}
	if err := nm.cl.start(x); err != nil {
		nm.note(w, "start %s after the damage: %v", id, err)
	}
	nm.note(w, "%s %s", id, nm.awaitStart(ctx, x, 20*time.Second))
	return func(ctx context.Context, w *Window) {
		if st := nm.cl.state(x); st.refused || (!st.running && !st.removed) {
			if err := nm.replace(ctx, x); err != nil {
				nm.note(w, "heal: %v", err)
				return
			}
			nm.note(w, "replaced %s: removed from the configuration, wiped, and joined to the cluster again", id)
		}
		if !nm.waitReady(ctx, x, 45*time.Second) {
			nm.note(w, "%s was not a ready voter within 45s of the heal", id)
		}
	}
}

// awaitStart watches master x after a start for up to d and says how it
// went: refused to start, exited, ready, or still not ready.
func (nm *nemesis) awaitStart(ctx context.Context, x int, d time.Duration) string {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		st := nm.cl.state(x)
		switch {
		case st.refused:
			return reasonDamaged + " (exit status 4)"
		case !st.running:
			return "exited after the damage (see the logs checker)"
		}
		if s, err := nm.cl.status(ctx, x); err == nil && s.Ready {
			return "started on its damaged data dir and is ready"
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	return fmt.Sprintf("neither refused to start nor became ready within %v", d)
}

// replace takes stopped master x out of the Raft configuration (through
// the admin client, retrying for up to 30 s while no leader answers),
// wipes its data dir and starts it with --join.
func (nm *nemesis) replace(ctx context.Context, x int) error {
	id := nm.cl.nodes[x].id
	if nm.cl.state(x).running {
		if err := nm.cl.terminate(x, 5*time.Second); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		member, known := nm.isMember(ctx, id)
		if known && !member {
			break
		}
		err := errors.New("no leader answered")
		if known {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = nm.admin.RemoveMember(rctx, id)
			cancel()
			if err == nil {
				break
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("replace %s: could not remove it from the configuration within 30s (last error: %v)", id, err)
		}
		sleepCtx(ctx, 500*time.Millisecond)
	}
	nm.cl.markRemoved(x)
	if err := nm.cl.rejoin(x); err != nil {
		return fmt.Errorf("replace %s: %w", id, err)
	}
	return nil
}

// clockStep is how often a drifting clock moves towards its offset.
const clockStep = 500 * time.Millisecond

// moveClock sets master x = f.Order[0]'s clock offset: at once to
// f.Offset (jump), or in steps every clockStep that reach f.Offset at the
// end of the window (drift). Once the offset is set (for a drift, half
// way), it hands leadership to x: a master reads its wall clock when it
// starts and when it becomes leader, and the leader runs the peer leases
// and expiry, so that is where a wrong clock could drop live peers. The
// heal sets the offset back to 0s.
func (nm *nemesis) moveClock(ctx context.Context, f Fault, w *Window) healFunc {
	x := f.Order[0]
	id := nm.cl.nodes[x].id
	if nm.clockFiles == nil {
		nm.note(w, "skipped: the masters run without a clock offset file")
		return nil
	}
	w.Targets = []string{id}
	path, off := nm.clockFiles[x], time.Duration(f.Offset)
	done, finished := make(chan struct{}), make(chan struct{})
	if f.Variant == "jump" {
		close(finished)
		if err := writeClockOffset(path, off); err != nil {
			nm.note(w, "%v", err)
			return nil
		}
		nm.note(w, "%s's clock jumped by %v", id, off)
		nm.makeLeader(ctx, x, w)
	} else {
		steps := max(int(time.Duration(f.For)/clockStep), 1)
		nm.note(w, "%s's clock drifts to %v in %d steps", id, off, steps)
		go func() {
			defer close(finished)
			t := time.NewTicker(clockStep)
			defer t.Stop()
			for k := 1; k <= steps; k++ {
				if err := writeClockOffset(path, off*time.Duration(k)/time.Duration(steps)); err != nil {
					nm.logger.Warn("nemesis: drift the clock", "node", id, "err", err)
				}
				if k == (steps+1)/2 {
					nm.makeLeader(ctx, x, w)
				}
				select {
				case <-t.C:
				case <-done:
					return
				}
			}
		}()
	}
	return func(_ context.Context, w *Window) {
		close(done)
		<-finished
		if err := writeClockOffset(path, 0); err != nil {
			nm.note(w, "heal: %v", err)
		}
	}
}

// makeLeader hands leadership to master x (unless it leads already) and
// notes how that went. It is called from the drift goroutine too, while
// the fault is in force, so it records its note under nm.mu.
func (nm *nemesis) makeLeader(ctx context.Context, x int, w *Window) {
	id := nm.cl.nodes[x].id
	transfer := func(to string) (string, error) {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		rep, err := nm.admin.TransferLeader(tctx, to)
		return rep.LeaderID, err
	}
	msg, via := "", ""
	if l := nm.cl.findLeader(ctx, 3*time.Second); l == x {
		// It became leader before its clock moved: hand leadership away
		// and back, so it takes over again with the skewed clock.
		other := nm.cl.nodes[(x+1)%len(nm.cl.nodes)].id
		if _, err := transfer(other); err != nil {
			msg = fmt.Sprintf("%s leads with the clock it had before; handing leadership to %s first failed: %v", id, other, err)
		}
		via = " (via " + other + ")"
	}
	if msg == "" {
		leader, err := transfer(id)
		switch {
		case err != nil:
			msg = fmt.Sprintf("hand leadership to %s%s: %v", id, via, err)
		case leader != id:
			msg = fmt.Sprintf("asked to hand leadership to %s%s, %s leads", id, via, leader)
		default:
			msg = "handed leadership to " + id + via + ", which reads its skewed clock as it takes over"
		}
	}
	nm.mu.Lock()
	w.Notes = append(w.Notes, msg)
	nm.mu.Unlock()
	nm.logger.Warn("nemesis: "+msg, "seq", w.Seq)
}

// compareAfterHeal holds the workload back (no new operation starts),
// waits until none is in flight, and compares the digests of every master
// that serves (running, not removed, answering and ready) until they
// agree or 15 s pass; the result goes into w.HealDigests. The workload
// resumes afterwards.
func (nm *nemesis) compareAfterHeal(ctx context.Context, stop <-chan struct{}, w *Window) {
	nm.pace.hold()
	defer nm.pace.release()
	select {
	case <-time.After(nm.opTimeout + 250*time.Millisecond):
	case <-stop:
		return
	case <-ctx.Done():
		return
	}
	r := servingDigests(ctx, nm.cl, 15*time.Second)
	w.HealDigests = &r
	if r.Verdict != Valid {
		nm.logger.Warn("nemesis: masters disagree after a heal", "seq", w.Seq, "why", r.Explanation)
	}
}

// servingDigests polls the masters that serve until all of them report
// the same digest or d passes, and judges the last answers: Invalid if
// they still differ, Valid otherwise (also when fewer than two serve).
func servingDigests(ctx context.Context, cl *cluster, d time.Duration) DigestResult {
	deadline := time.Now().Add(d)
	for {
		sts, errs := cl.statuses(ctx)
		var ids []string
		digests, applied := map[string]string{}, map[string]uint64{}
		for i, id := range cl.ids() {
			if st := cl.state(i); !st.running || st.paused || st.removed || errs[i] != nil || !sts[i].Ready {
				continue
			}
			ids = append(ids, id)
			digests[id], applied[id] = sts[i].Digest, sts[i].AppliedIndex
		}
		res := DigestResult{Verdict: Valid, Explanation: "no master was ready to compare"}
		if len(ids) > 0 { // checkDigests reads ids[0]
			res = checkDigests(ids, digests, applied, nil)
		}
		if res.Verdict == Valid || time.Now().After(deadline) || !sleepCtx(ctx, 250*time.Millisecond) {
			return res
		}
	}
}

// powerLoss cuts the power of targets at once: each is SIGKILLed (a
// paused one too), then its filesystem discards every write it had not
// fsynced (tearing each file's last one for Variant "torn"). The heal
// starts them again and watches each: it must become a ready voter, or
// refuse to start (exit status 4), and then it is replaced. A master
// that starts is never allowed to serve a wrong index: the digest and
// set checkers judge what it serves.
func (nm *nemesis) powerLoss(ctx context.Context, f Fault, targets []int, w *Window) healFunc {
	if nm.power == nil {
		nm.note(w, "skipped: %s", nm.powerSkip)
		return nil
	}
	var hit []int
	for _, x := range targets {
		if st := nm.cl.state(x); !st.running || st.removed {
			nm.note(w, "%s is not running; left alone", nm.cl.nodes[x].id)
			continue
		}
		// Mark first: a master may refuse to start on what the power
		// loss left, and that is allowed.
		nm.cl.markDamaged(x, true)
		hit = append(hit, x)
		w.Targets = append(w.Targets, nm.cl.nodes[x].id)
	}
	// All at once, as when a rack loses power.
	var wg sync.WaitGroup
	errs := make([]error, len(hit))
	for k, x := range hit {
		wg.Go(func() { errs[k] = nm.cl.kill(x) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			nm.note(w, "%v", err)
		}
	}
	rng := rand.New(rand.NewPCG(f.Salt, uint64(f.Seq)))
	for _, x := range hit {
		what, err := nm.power[x].powerLoss(f.Variant == "torn", rng)
		if err != nil {
			nm.note(w, "power loss of %s: %v", nm.cl.nodes[x].id, err)
		}
		if what != "" {
			nm.note(w, "%s lost power: %s", nm.cl.nodes[x].id, what)
		}
	}
	if len(hit) == 0 {
		return nil
	}
	return func(ctx context.Context, w *Window) {
		for _, x := range hit {
			if err := nm.cl.start(x); err != nil {
				nm.note(w, "restart %s: %v", nm.cl.nodes[x].id, err)
			}
		}
		for _, x := range hit {
			id := nm.cl.nodes[x].id
			if !nm.awaitPower(ctx, x, 30*time.Second) {
				if nm.cl.state(x).refused {
					nm.note(w, "%s refused to start on what the power loss left (exit status 4)", id)
				} else {
					nm.note(w, "%s was not running or not ready 30s after the power came back", id)
				}
				if err := nm.replace(ctx, x); err != nil {
					nm.note(w, "heal: %v", err)
					continue
				}
				nm.note(w, "replaced %s: removed from the configuration, wiped, and joined to the cluster again", id)
				if !nm.waitReady(ctx, x, 45*time.Second) {
					nm.note(w, "%s was not a ready voter within 45s of its replacement", id)
					continue
				}
			}
			nm.cl.markDamaged(x, false)
		}
	}
}

// awaitPower waits up to d for master x, started after a power loss, to
// be a ready voter (true), or to stop: refused to start or exited
// (false, at once).
func (nm *nemesis) awaitPower(ctx context.Context, x int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if st := nm.cl.state(x); st.refused || !st.running {
			return false
		}
		if nm.readyVoter(ctx, x) {
			return true
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	return false
}

// setUDP puts f in force on every master's UDP proxy; the heal forwards
// everything again and records what the proxies did meanwhile.
func (nm *nemesis) setUDP(f UDPFaults, w *Window) healFunc {
	if nm.udp == nil {
		nm.note(w, "skipped: UDP faults act on the tracker workload's UDP announces; run with the tracker workload")
		return nil
	}
	for _, p := range nm.udp {
		p.takeCounts()
		p.set(f)
	}
	return func(_ context.Context, w *Window) {
		var c UDPCounts
		for _, p := range nm.udp {
			p.set(UDPFaults{})
			k := p.takeCounts()
			c.Forwarded += k.Forwarded
			c.Dropped += k.Dropped
			c.Duplicated += k.Duplicated
			c.Reordered += k.Reordered
			c.Delayed += k.Delayed
			c.DupStarted += k.DupStarted
			c.DupStopped += k.DupStopped
		}
		w.UDP = &c
		nm.note(w, "the UDP proxies forwarded %d datagrams, dropped %d, duplicated %d (%d started and %d stopped announces), reordered %d, delayed %d",
			c.Forwarded, c.Dropped, c.Duplicated, c.DupStarted, c.DupStopped, c.Reordered, c.Delayed)
	}
}
