package jepsenlike

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"fileshare/client"
)

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

// healByReplacing replaces master x (replace) as a heal's last resort
// and notes in w what became of it; it reports whether x was replaced.
func (nm *nemesis) healByReplacing(ctx context.Context, x int, w *Window) bool {
	if err := nm.replace(ctx, x); err != nil {
		nm.note(w, "heal: %v", err)
		return false
	}
	nm.note(w, "replaced %s: removed from the configuration, wiped, and joined to the cluster again", nm.cl.nodes[x].id)
	return true
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
