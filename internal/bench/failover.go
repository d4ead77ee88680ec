package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"fileshare/client"
	"fileshare/internal/poll"
)

// FailoverResult holds one failover benchmark.
type FailoverResult struct {
	Gaps   []time.Duration // per trial: SIGKILL of the leader → next acknowledged registration
	Errors int             // registrations that returned an error to their caller
	Ops    int
}

// Failover keeps a steady registration load on the cluster and, trials
// times, SIGKILLs the leader and measures the time from the kill to the
// first acknowledged registration that was issued after the kill. The
// killed master is restarted and the cluster allowed to settle between
// trials. Callers see an error only if a registration fails outright
// within its 10 s deadline.
func Failover(ctx context.Context, c *Cluster, trials, clients int, w io.Writer) (FailoverResult, error) {
	tag := runTag()
	ids := identities(clients)
	mcs, err := newClients(c.Addrs(), c.CA(), ids, max(1, clients/8))
	if err != nil {
		return FailoverResult{}, err
	}
	defer closeAll(mcs)
	if err := joinAll(ctx, mcs, ids); err != nil {
		return FailoverResult{}, err
	}

	// acks records, per acknowledged registration, when it was issued and
	// when it was acknowledged.
	type ack struct{ invoked, done time.Time }
	var mu sync.Mutex
	var acks []ack
	var errs, ops atomic.Int64
	var firstErr atomic.Value
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mc := mcs[i%len(mcs)]
			for seq := 0; loadCtx.Err() == nil; seq++ {
				octx, cancel := context.WithTimeout(loadCtx, 10*time.Second)
				t0 := time.Now()
				_, err := mc.Register(octx, ids[i], []client.FileEntry{fileEntry(fmt.Sprintf("fo-%s-%d-%d", tag, i, seq))})
				cancel()
				if loadCtx.Err() != nil {
					return
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ops.Add(1)
				mu.Lock()
				acks = append(acks, ack{t0, time.Now()})
				mu.Unlock()
			}
		}()
	}
	defer func() { stopLoad(); wg.Wait() }()

	var res FailoverResult
	for trial := range trials {
		leader, err := c.WaitLeader(ctx, -1)
		if err != nil {
			return res, err
		}
		time.Sleep(300 * time.Millisecond) // let the load settle on this leader
		killAt := time.Now()
		if err := c.Kill(leader); err != nil {
			return res, err
		}
		// The gap is measured from the acknowledgements' own times, so
		// how often this looks does not change it.
		var gap time.Duration
		if err := poll.Wait(ctx, func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, a := range acks {
				if !a.invoked.Before(killAt) && (gap == 0 || a.done.Sub(killAt) < gap) {
					gap = a.done.Sub(killAt)
				}
			}
			acks = acks[:0]
			return gap != 0
		}); err != nil {
			return res, err
		}
		res.Gaps = append(res.Gaps, gap)
		fmt.Fprintf(w, "failover trial %d: killed leader m%d; next acknowledged registration %s later\n", trial+1, leader+1, ms(gap))
		if err := c.Start(leader); err != nil {
			return res, err
		}
		if _, err := c.WaitLeader(ctx, -1); err != nil {
			return res, err
		}
	}
	stopLoad()
	wg.Wait()
	res.Errors = int(errs.Load())
	res.Ops = int(ops.Load())
	maxGap := time.Duration(0)
	for _, g := range res.Gaps {
		maxGap = max(maxGap, g)
	}
	fmt.Fprintf(w, "failover: median=%s max=%s over %d trials, caller errors=%d of %d registrations, clients=%d\n",
		ms(median(res.Gaps)), ms(maxGap), len(res.Gaps), res.Errors, res.Ops+res.Errors, clients)
	if e, ok := firstErr.Load().(error); ok {
		fmt.Fprintf(w, "failover: first caller error: %v\n", e)
	}
	return res, nil
}

// ScaleResult holds the scale benchmark's figures.
type ScaleResult struct {
	Files          int
	LeaderRSS      uint64
	LeaderHeap     uint64
	Snapshot       time.Duration
	RestartToReady time.Duration
}

// Scale registers files (1,000 per peer, 5,000 per request) and then
// measures the leader's memory, the time to snapshot the index, and the
// time from restarting a follower's process to its /v1/readyz being ready.
func Scale(ctx context.Context, c *Cluster, files int, w io.Writer) (ScaleResult, error) {
	res := ScaleResult{Files: files}
	mcs, err := newClients(c.Addrs(), nil, nil, 4)
	if c.CA() != nil {
		mcs, err = newClients(c.Addrs(), c.CA(), nil, 4) // fresh keys: these only read
	}
	if err != nil {
		return res, err
	}
	defer closeAll(mcs)
	tag := runTag()
	const perPeer, perRequest = 1000, registerBatch
	npeers := (files + perPeer - 1) / perPeer
	ids := identities(npeers)
	// The peers heartbeat like real ones, or the leader would expire the
	// first of them before the population finishes.
	hbCtx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	var joined atomic.Int64
	hbDone := make(chan struct{})
	defer func() { stopHB(); <-hbDone }()
	go func() {
		defer close(hbDone)
		for hbCtx.Err() == nil {
			// 16 at a time: with TLS each heartbeat is a handshake of its
			// own, and a round must finish well within the lease.
			var hb sync.WaitGroup
			sem := make(chan struct{}, 16)
			for p := range int(joined.Load()) {
				sem <- struct{}{}
				hb.Go(func() {
					defer func() { <-sem }()
					_ = asPeer(c.Addrs(), c.CA(), mcs[3], ids[p], func(mc *client.Client) error {
						_, err := mc.Heartbeat(hbCtx, ids[p])
						return err
					})
				})
			}
			hb.Wait()
			select {
			case <-hbCtx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}()
	start := time.Now()
	work := make(chan int)
	errc := make(chan error, 8)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				if err := asPeer(c.Addrs(), c.CA(), mcs[g%len(mcs)], ids[p], func(mc *client.Client) error {
					var batch []client.FileEntry
					for j := p * perPeer; j < min((p+1)*perPeer, files); j++ {
						batch = append(batch, fileEntry(fmt.Sprintf("scale-%s-%d.bin", tag, j)))
					}
					return populatePeer(ctx, mc, ids[p], p, &joined, batch, perRequest)
				}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	func() {
		defer close(work)
		for p := range npeers {
			select {
			case work <- p:
			case err := <-errc:
				errc <- err
				return
			}
		}
	}()
	wg.Wait()
	select {
	case err := <-errc:
		return res, fmt.Errorf("populate: %w", err)
	default:
	}
	fmt.Fprintf(w, "scale: registered %d files from %d peers in %s\n", files, npeers, time.Since(start).Round(time.Millisecond))

	leader, err := c.WaitLeader(ctx, -1)
	if err != nil {
		return res, err
	}
	st, err := c.Status(ctx, leader)
	if err != nil {
		return res, err
	}
	if st.Files < files {
		return res, fmt.Errorf("leader holds %d files, want %d", st.Files, files)
	}
	res.LeaderHeap = st.HeapBytes
	res.LeaderRSS, _ = rss(c.PID(leader))

	snap, err := c.client.Snapshot(ctx, c.Addrs()[leader]) // the admin client
	if err != nil {
		return res, fmt.Errorf("snapshot: %w", err)
	}
	res.Snapshot = time.Duration(snap.DurationMillis) * time.Millisecond

	if res.RestartToReady, err = c.restartFollowerToReady(ctx, leader, func(st client.Status) bool { return st.Files >= files }); err != nil {
		return res, err
	}
	fmt.Fprintf(w, "scale: files=%d leader_rss=%.0fMiB leader_heap=%.0fMiB snapshot=%s restart_to_ready=%s\n",
		files, float64(res.LeaderRSS)/(1<<20), float64(res.LeaderHeap)/(1<<20), ms(res.Snapshot), ms(res.RestartToReady))
	return res, nil
}

// populatePeer joins id (the p-th peer) through mc, marks it joined so the
// heartbeats cover it, and registers files in requests of perRequest.
func populatePeer(ctx context.Context, mc *client.Client, id client.Identity, p int, joined *atomic.Int64, files []client.FileEntry, perRequest int) error {
	if _, err := mc.Join(ctx, id, "127.0.0.1:1"); err != nil {
		return err
	}
	for { // peers are joined in order; heartbeat a prefix
		n := joined.Load()
		if int(n) > p || joined.CompareAndSwap(n, int64(p+1)) {
			break
		}
	}
	for len(files) > 0 {
		n := min(len(files), perRequest)
		if _, err := mc.Register(ctx, id, files[:n]); err != nil {
			return err
		}
		files = files[n:]
	}
	return nil
}

// restartFollowerToReady snapshots a follower of leader, SIGKILLs it,
// starts it again, and returns how long it took from the start until it
// reports ready and caught is true of its status.
func (c *Cluster) restartFollowerToReady(ctx context.Context, leader int, caught func(client.Status) bool) (time.Duration, error) {
	follower := (leader + 1) % len(c.Addrs())
	if _, err := c.client.Snapshot(ctx, c.Addrs()[follower]); err != nil {
		return 0, fmt.Errorf("snapshot on follower: %w", err)
	}
	if err := c.Kill(follower); err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := c.Start(follower); err != nil {
		return 0, err
	}
	// A fixed 10 ms poll rather than poll.Wait's backoff to 50 ms: the
	// loop's period is the measurement's resolution.
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := c.Status(sctx, follower)
		cancel()
		if err == nil && st.Ready && caught(st) {
			return time.Since(t0), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("restarted master never became ready: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
