package jepsenlike

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// stopNodes kills (kill) or pauses the running targets and returns the
// heal that starts or resumes them again; nil if it stopped none.
func (nm *nemesis) stopNodes(kill bool, targets []int, w *Window) healFunc {
	stop, restart := nm.cl.pause, nm.cl.resume
	if kill {
		stop, restart = nm.cl.kill, nm.cl.start
	}
	var hit []int
	for _, i := range targets {
		if st := nm.cl.state(i); !st.running || st.paused {
			nm.note(w, "%s is not running; left alone", nm.cl.nodes[i].id)
			continue
		}
		if err := stop(i); err != nil {
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
			if err := restart(i); err != nil {
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
			if !nm.healByReplacing(ctx, x, w) {
				return
			}
		}
		if !nm.waitReady(ctx, x, 45*time.Second) {
			nm.note(w, "%s was not a ready voter within 45s of the heal", id)
		}
	}
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
				if !nm.healByReplacing(ctx, x, w) {
					continue
				}
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
