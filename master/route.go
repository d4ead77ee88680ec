package master

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/client"
	"fileshare/transport"
)

// route runs a request at the leader. If this master leads (and, for
// reads, has passed its term's barrier), local runs it here. Otherwise the
// request is forwarded to the leader this master knows, with *forwarded
// set so the receiver never forwards again. While there is no leader, or
// the leader moves, or its outcome is unknown, route retries with jittered
// backoff until ctx ends: a leader change is never an error to the caller
// while its deadline allows a retry. Writes are safe to retry because they
// carry request IDs the index deduplicates.
func route[Req, Resp any](m *Master, ctx context.Context, method string, req *Req, forwarded *bool, local func(context.Context) (*Resp, error)) (*Resp, error) {
	wasForwarded := *forwarded
	backoff := 5 * time.Millisecond
	var lastErr error
	for {
		switch {
		case m.IsLeader():
			if !m.leaderReady() {
				lastErr = fmt.Errorf("%w: this master was just elected and is catching up", transport.ErrBusy)
				break
			}
			resp, err := local(ctx)
			if err == nil {
				if h, ok := any(resp).(interface{ SetLeader(string) }); ok {
					h.SetLeader(m.advertise)
				}
				return resp, nil
			}
			if !transport.Retryable(err) {
				return resp, err
			}
			lastErr = err
		case wasForwarded:
			// The sender believed we lead; we do not. Tell it who does.
			return nil, m.notLeader()
		default:
			_, addr := m.Leader()
			if addr == "" || addr == m.advertise {
				lastErr = transport.ErrNoLeader
				break
			}
			*forwarded = true
			resp := new(Resp)
			// Bound each attempt: a leader that is paused or cut off
			// would otherwise hold the request until the caller's
			// deadline, long after a new leader took over.
			actx, cancel := context.WithTimeout(ctx, forwardAttemptTimeout)
			err := m.client.Call(actx, addr, method, req, resp)
			cancel()
			*forwarded = false
			if err == nil {
				return resp, nil
			}
			if !transport.Retryable(err) {
				return nil, err
			}
			lastErr = forwardError(err)
		}
		select {
		case <-ctx.Done():
			return nil, deadlineError(method, lastErr, ctx.Err())
		case <-time.After(jitter(backoff)):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// forwardAttemptTimeout bounds one forwarded attempt. A healthy leader
// answers in milliseconds; an election takes about a second.
const forwardAttemptTimeout = 2 * time.Second

// deadlineError reports that a request ran out of time while the cluster
// was unavailable, keeping the last cause so errors.Is still sees it. It
// names the request in words ("the registration gave up …"), not by its
// RPC method: the text reaches people running the CLI.
func deadlineError(method string, last, ctxErr error) error {
	if last == nil {
		last = transport.ErrNoLeader
	}
	return fmt.Errorf("%s gave up when its deadline passed: %w (%w)", client.Describe(method), last, ctxErr)
}

// callError is a failed call to a master, said in words: "DOING ADDR:
// CAUSE" ("forwarding to the leader at 10.0.0.2:7000: …"), where the
// transport's error already starts with the address. It unwraps to the
// call's error, so errors.Is sees the cause.
type callError struct {
	doing string // what this master was doing, ending before the address
	err   error
}

func (e *callError) Error() string { return e.doing + " " + e.err.Error() }

func (e *callError) Unwrap() error { return e.err }

// forwardError is a failed attempt to forward a request to the leader.
func forwardError(err error) error {
	return &callError{doing: "forwarding to the leader at", err: err}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

func (m *Master) notLeader() error {
	id, addr := m.Leader()
	if addr == m.advertise {
		id, addr = "", ""
	}
	return &transport.NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

// raftError maps an error from raft's futures to a wire error that says
// whether the write certainly did not happen or its outcome is unknown.
func (m *Master) raftError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		// The entry never entered the log here: certainly not applied.
		return m.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: %v", transport.ErrUnknownOutcome, err)
	case errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %v", transport.ErrBusy, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %v", transport.ErrShuttingDown, err)
	}
	return err
}
