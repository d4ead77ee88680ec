package master

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// shutdownStepGrace bounds each shutdown step that can hang on something
// outside this process: draining HTTP requests, and raft's stop, which
// waits for replication to followers that may be paused or cut off.
const shutdownStepGrace = time.Second

// raftStuckGrace is how long shutdown waits for raft after closing the
// connections under it, before it abandons raft (see shutdown), unless
// Shutdown's context ends first.
const raftStuckGrace = 10 * time.Second

// DefaultShutdownTimeout is the shutdown budget a caller should give
// Shutdown's context when it has no other (the CLI's --shutdown-timeout):
// a hand-off, draining HTTP and stopping raft take well under a second; a
// raft held by a paused follower is cut loose after a second and, if it
// still has not stopped when the budget ends, abandoned. It fits inside
// the systemd unit's TimeoutStopSec (20 s).
const DefaultShutdownTimeout = 10 * time.Second

// afterDeadlineGrace is what raft gets to stop, once its connections are
// closed, when Shutdown's context has already ended: closing them
// normally frees it at once.
const afterDeadlineGrace = 200 * time.Millisecond

// errRaftStuck is returned by a shutdown that had to abandon raft.
var errRaftStuck = errors.New("raft did not stop within its grace period; abandoned it (the log store stays open until the process exits)")

// Shutdown stops the master gracefully, in this order: stop serving HTTP,
// hand leadership to another voter if this master leads, stop serving
// RPC, stop the background work, stop Raft, close the transport, close the
// log store. It blocks until every goroutine the master tracks has ended
// (all but helpers blocked on a raft future that raft abandoned when it
// stopped; see batcher.apply and verifier.startLocked).
//
// ctx bounds the graceful part. HTTP requests get until ctx ends or
// shutdownStepGrace passes, then their connections are closed; the
// leadership hand-off is abandoned when ctx ends; raft gets until ctx ends
// or shutdownStepGrace passes to stop, then the connections under it are
// closed so that a hung follower cannot hold it; if raft still has not
// stopped when ctx ends (or raftStuckGrace passes, for a ctx without a
// deadline), it is abandoned (errRaftStuck). So with a ctx that ends,
// Shutdown returns shortly after it: the steps left only close files.
// Whatever ctx does, Shutdown releases everything before it returns.
//
// It returns raft's and the log store's errors, joined with ctx's error if
// ctx ended before the graceful steps finished. Only the first call of
// Shutdown, Close or CloseNow does the work; later calls wait for it and
// return its result.
func (m *Master) Shutdown(ctx context.Context) error {
	m.closeOnce.Do(func() { m.closeErr = m.shutdown(ctx, true) })
	return m.closeErr
}

// Close is Shutdown with no deadline beyond each step's own grace
// (shutdownStepGrace). Safe to call more than once.
func (m *Master) Close() error { return m.Shutdown(context.Background()) }

// CloseNow stops the master without handing off leadership: the closest an
// in-process test gets to a crash (followers notice only by timeout).
func (m *Master) CloseNow() error {
	m.closeOnce.Do(func() { m.closeErr = m.shutdown(context.Background(), false) })
	return m.closeErr
}

func (m *Master) closeNow() { _ = m.CloseNow() }

// waitStep waits for done until ctx ends or grace passes. It reports
// whether done arrived, and whether ctx ended first.
func waitStep[T any](ctx context.Context, done <-chan T, grace time.Duration) (v T, ok, ctxEnded bool) {
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case v = <-done:
		return v, true, false
	case <-ctx.Done():
		return v, false, true
	case <-t.C:
		return v, false, false
	}
}

func (m *Master) shutdown(ctx context.Context, graceful bool) error {
	var errs []error
	cut := false // ctx ended before a graceful step finished
	m.stopTrackers(ctx)
	if m.httpSrv != nil {
		hctx, cancel := context.WithTimeout(ctx, shutdownStepGrace)
		if err := m.httpSrv.Shutdown(hctx); err != nil {
			cut = cut || ctx.Err() != nil
			_ = m.httpSrv.Close()
		}
		cancel()
	}
	if m.dash != nil {
		m.dash.close() // ends the event streams and waits for their poller
	}
	if graceful && m.raft != nil && m.IsLeader() && m.otherVoters() > 0 && ctx.Err() != nil {
		cut = true // no time left to hand off leadership
	} else if graceful && m.raft != nil && m.IsLeader() && m.otherVoters() > 0 {
		f := m.raft.LeadershipTransfer()
		// Owned by shutdown; ends when raft answers the transfer,
		// which it does within its election timeout or when it stops.
		done := make(chan error, 1)
		go func() { done <- f.Error() }()
		select {
		case err := <-done:
			if err != nil {
				m.logger.Warn("leadership transfer before shutdown failed", "err", err)
			} else {
				m.logger.Info("handed off leadership before shutdown")
			}
		case <-ctx.Done():
			cut = true
			m.logger.Warn("shutdown deadline passed during leadership hand-off; stopping without it")
		}
	}
	if m.rpc != nil {
		m.rpc.Close()
	}
	m.cancel()
	if m.raft != nil {
		// raft.Shutdown waits for its replication goroutines, and one
		// blocked on a paused or cut-off follower would hold it for the
		// transport's whole I/O timeout. If it has not finished promptly,
		// close the connections under it.
		f := m.raft.Shutdown()
		// Owned by shutdown, which waits for it below.
		done := make(chan error, 1)
		go func() { done <- f.Error() }()
		err, ok, ctxEnded := waitStep(ctx, done, shutdownStepGrace)
		if !ok {
			cut = cut || ctxEnded
			m.logger.Warn("raft is slow to stop; closing its connections")
			m.mux.Close()
			m.mux.CloseConns()
			_ = m.raftTrans.Close()
			wctx := ctx
			if ctx.Err() != nil {
				// The budget is spent: give raft only a moment.
				var cancel context.CancelFunc
				wctx, cancel = context.WithTimeout(context.Background(), afterDeadlineGrace)
				defer cancel()
			}
			if err, ok, _ = waitStep(wctx, done, raftStuckGrace); !ok {
				// hashicorp/raft can leave a goroutine blocked for good
				// when leadership moves during a hand-off (raft#696):
				// its Shutdown then never returns. Abandon it rather
				// than hang the process; the log store stays open (a
				// goroutine of raft's may still hold it) until the
				// process exits.
				m.logger.Error("raft did not stop; abandoning it", "shutdown_budget_ended", ctx.Err() != nil)
				m.cancel()
				return errors.Join(append(errs, errRaftStuck)...)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
	}
	m.wg.Wait()
	if m.raftTrans != nil {
		_ = m.raftTrans.Close()
	}
	if m.raftLayer != nil {
		// No raft handler may touch the stable store once it is closed.
		m.raftLayer.quiesce(shutdownStepGrace)
	}
	if m.client != nil {
		_ = m.client.Close()
	}
	if m.mux != nil {
		_ = m.mux.Close()
	}
	if m.store != nil {
		if err := m.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft log: %w", err))
		}
	}
	if cut {
		errs = append(errs, fmt.Errorf("shutdown was cut short: %w", context.Cause(ctx)))
	}
	m.logger.Info("master stopped", "id", m.cfg.ID)
	return errors.Join(errs...)
}

func (m *Master) otherVoters() int {
	f := m.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	n := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != raft.ServerID(m.cfg.ID) {
			n++
		}
	}
	return n
}
