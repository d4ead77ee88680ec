package jepsenlike

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
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
