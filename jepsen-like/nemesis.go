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
	// Notes say what did not go to plan (no leader found, a restart that
	// failed, ...).
	Notes []string `json:"notes,omitempty"`
}

// nemesis carries out a schedule against the cluster and the network,
// one fault at a time, and records the windows.
type nemesis struct {
	cl     *cluster
	net    netInjector
	admin  *client.Client
	t0     time.Time
	logger *slog.Logger

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
// leader and has caught up.
func (nm *nemesis) waitReady(ctx context.Context, i int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if st, err := nm.cl.status(ctx, i); err == nil && st.Ready {
			for _, m := range st.Members {
				if m.ID == st.ID {
					return true
				}
			}
		}
		sleepCtx(ctx, 200*time.Millisecond)
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
		if !nm.waitReady(ctx, x, 30*time.Second) {
			nm.note(w, "%s had not rejoined within 30s", id)
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
	rejoined := map[int]bool{}
	for i, n := range nm.cl.nodes {
		st := nm.cl.state(i)
		var err error
		switch {
		case st.removed:
			err, rejoined[i] = nm.cl.rejoin(i), true
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
