package bench

import (
	"context"
	"sync"
	"time"

	"fileshare/client"
)

// leaderWatch counts the leader changes the cluster goes through while a
// benchmark runs: a benchmark whose numbers include elections says so.
// It polls every master's status; a change is a new (term, leader) pair
// in the highest term any master reports, so an election that a poll
// misses between two polls still shows up as a term that moved.
type leaderWatch struct {
	stop    context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	changes int
}

// leaderPoll is how often leaderWatch asks for status.
const leaderPoll = 250 * time.Millisecond

// watchLeaders starts watching through c until stop is called.
func watchLeaders(ctx context.Context, c *client.Client) *leaderWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &leaderWatch{stop: cancel, done: make(chan struct{})}
	// Owned by w; ends when stop cancels ctx.
	go func() {
		defer close(w.done)
		var term uint64
		var leader string
		t := time.NewTicker(leaderPoll)
		defer t.Stop()
		for {
			pctx, cancel := context.WithTimeout(ctx, leaderPoll)
			sts, errs := c.ClusterStatus(pctx)
			cancel()
			for i, st := range sts {
				if errs[i] != nil || st.Term < term || st.Term == term && (st.LeaderID == "" || st.LeaderID == leader) {
					continue
				}
				if term != 0 {
					w.mu.Lock()
					w.changes++
					w.mu.Unlock()
				}
				term, leader = st.Term, st.LeaderID
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// count returns the changes seen so far.
func (w *leaderWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changes
}

// finish stops the watch and returns the changes it saw.
func (w *leaderWatch) finish() int {
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changes
}
