package peer

// This file owns the peer's registrations in the index. Two goroutines,
// started by New for a peer with a share folder and awaited by Close and
// Leave through Peer.syncWG, do all of it: the sync goroutine (syncLoop)
// owns the share store's scans, the hash cache's additions and syncState;
// the heartbeat goroutine (heartbeatLoop) owns the lease. They share only
// Peer.joined (atomic) and Peer.reach (its own lock: whether the masters
// answer), wake each other through the one-slot channels syncKick and
// hbKick, and either may stop the peer on a permanent refusal (Peer.stop).
// Other goroutines reach the sync goroutine only through rescanReq
// (Rescan, seeding) and noteChanged (the piece server, on a changed file),
// and read what it publishes through Peer.served (atomic).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/transport"
)

// rescanRequest asks the sync goroutine for a scan that begins after the
// request; done receives that scan's error.
type rescanRequest struct {
	add  *cacheEntry // hashes to add to the cache first (a seeded download)
	done chan error
}

// rescan hands a rescan request (with add, if not nil, to put in the hash
// cache first) to the sync goroutine and waits for its scan. Once the peer
// has stopped (Done), it returns Err.
func (p *Peer) rescan(ctx context.Context, add *cacheEntry) error {
	if p.store == nil {
		return fmt.Errorf("%w: this peer has no share folder", ErrConfig)
	}
	req := rescanRequest{add: add, done: make(chan error, 1)}
	select {
	case p.rescanReq <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-p.done:
		return p.Err()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-p.done:
		return p.Err()
	}
}

// noteChanged records that the file at slash path path no longer matches
// the hashes it was registered with, and wakes the sync goroutine to hash
// it again (its cache entry is dropped first, since its size and mtime may
// not have changed). Called by the piece server; safe from any goroutine.
func (p *Peer) noteChanged(path string) {
	p.changedMu.Lock()
	if p.changed == nil {
		p.changed = map[string]bool{}
	}
	p.changed[path] = true
	p.changedMu.Unlock()
	p.kickSync()
}

// forgetChanged drops the hash-cache entries of the paths noteChanged
// recorded, so the next scan rehashes them. Called by the sync goroutine,
// which owns the store.
func (p *Peer) forgetChanged() {
	p.changedMu.Lock()
	paths := p.changed
	p.changed = nil
	p.changedMu.Unlock()
	for path := range paths {
		delete(p.store.cache, path)
	}
}

func (p *Peer) kickSync() {
	select {
	case p.syncKick <- struct{}{}:
	default:
	}
}

// syncState is what the sync goroutine knows of the index's view of this
// peer. It is owned by that goroutine.
type syncState struct {
	// announced is what the index holds from this peer, as far as this
	// peer knows: the entries it registered and did not unregister since
	// it last joined.
	announced map[string]client.FileEntry
	// stale are IDs this peer shared when it last ran (from the hash
	// cache); those no longer present are unregistered once.
	stale map[string]bool
	// conflicts are entries the index refused because it holds the same
	// ID with another size or piece size; not retried until they change.
	conflicts map[string]client.FileEntry
}

// syncLoop owns the share store and the registrations: it scans every
// RescanInterval, when kicked (a heartbeat learnt of an expiry, the piece
// server saw a file change) and on Rescan requests, until ctx ends or the
// index refuses the peer for good (then it stops the peer, see Peer.stop).
// A Rescan request is answered by the first scan that brings the index in
// step, fails for a reason other than an unreachable cluster, or is
// refused; while no master answers, the scan is retried at once for it.
// After the first scan that succeeds it logs, once, that every file is
// registered: the line a person or script waits for.
func (p *Peer) syncLoop(ctx context.Context) {
	st := &syncState{announced: map[string]client.FileEntry{}, stale: p.store.cachedIDs(), conflicts: map[string]client.FileEntry{}}
	tick := time.NewTicker(p.cfg.RescanInterval)
	defer tick.Stop()
	var waiters []chan error
	defer func() {
		for _, w := range waiters {
			w <- ErrClosed
		}
	}()
	ready := false
	for {
		p.forgetChanged()
		err := p.syncOnce(ctx, st)
		if ctx.Err() != nil {
			return
		}
		retryNow := false
		switch {
		case err == nil:
			if !ready {
				ready = true
				p.logReady(st)
			}
		case refused(err):
			err = refusedError(err)
			for _, w := range waiters {
				w <- err
			}
			waiters = nil
			p.stop(err)
			return
		case unreachable(err):
			// Reported by masterCall, at a slow pace; a waiting Rescan
			// wants the next attempt now.
			retryNow = len(waiters) > 0
		default:
			p.logger.Warn("sync with the index failed; will retry", "err", err)
		}
		if !retryNow {
			for _, w := range waiters {
				w <- err
			}
			waiters = nil
		}
		var retry <-chan time.Time
		if retryNow {
			retry = time.After(100 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-retry:
		case <-tick.C:
		case <-p.syncKick:
		case req := <-p.rescanReq:
			for {
				if req.add != nil {
					p.store.addCache(*req.add)
				}
				waiters = append(waiters, req.done)
				select {
				case req = <-p.rescanReq:
					continue
				default:
				}
				break
			}
		}
	}
}

// logReady logs that the peer's files are registered and served, after
// the first scan that brought the index in step.
func (p *Peer) logReady(st *syncState) {
	files := len(st.announced)
	if len(st.conflicts) > 0 {
		p.logger.Info("sharing: every file is registered but those the index refuses", "files", files, "refused", len(st.conflicts), "addr", p.addr)
		return
	}
	p.logger.Info("sharing: every file is registered", "files", files, "addr", p.addr)
}

// Registration batches: at most fsm.MaxFilesPerCommand files and about
// 192 KiB of entries per call (an entry costs its ID, its name and about
// 64 bytes of encoding), and unregistrations of at most 2,000 IDs, so that
// each call's log entry stays under the masters' default cap of 256 KiB
// (--max-entry-bytes), itself well under raft's suggested 512 KiB.
const (
	maxFilesPerCall      = fsm.MaxFilesPerCommand
	maxBytesPerCall      = 192 << 10
	entryOverhead        = 64
	maxUnregisterPerCall = 2000
)

// syncOnce joins if needed, scans, and registers and unregisters the
// difference. On fsm.ErrUnknownPeer (the index expired this peer) it joins
// again and registers everything, once.
func (p *Peer) syncOnce(ctx context.Context, st *syncState) error {
	files, err := p.store.scan(ctx)
	if err != nil {
		return fmt.Errorf("scan share folder %s: %w", p.store.dir, err)
	}
	// Stop serving removed files at once, before the index hears of it.
	p.publish(files, st.announced)
	for attempt := 0; ; attempt++ {
		err = p.reconcile(ctx, st, files)
		if errors.Is(err, fsm.ErrUnknownPeer) && attempt == 0 {
			p.logger.Warn("the index no longer knows this peer (its lease expired); joining again and re-registering its files")
			p.joined.Store(false)
			continue
		}
		p.publish(files, st.announced)
		return err
	}
}

func (p *Peer) reconcile(ctx context.Context, st *syncState, files map[string]*sharedFile) error {
	// A join again with a new address (nat.go) keeps the registrations.
	moved := p.nat.moved.Swap(false)
	if !p.joined.Load() || moved {
		addr := p.Addr()
		if err := p.masterCall(ctx, func(ctx context.Context) error { _, err := p.client.Join(ctx, p.id, addr); return err }); err != nil {
			if moved {
				p.nat.moved.Store(true)
			}
			return fmt.Errorf("join the index: %w", err)
		}
		if !p.joined.Load() {
			clear(st.announced) // the index may have dropped everything: register it all again
		}
		p.joined.Store(true)
		select {
		case p.hbKick <- struct{}{}:
		default:
		}
		p.logger.Info("joined the index", "addr", addr)
	}
	var remove []string
	for id := range st.announced {
		if files[id] == nil {
			remove = append(remove, id)
		}
	}
	for id := range st.stale {
		if files[id] == nil {
			if _, ok := st.announced[id]; !ok {
				remove = append(remove, id)
			}
		}
	}
	slices.Sort(remove)
	for chunk := range slices.Chunk(remove, maxUnregisterPerCall) {
		if err := p.masterCall(ctx, func(ctx context.Context) error { _, err := p.client.Unregister(ctx, p.id, chunk); return err }); err != nil {
			return fmt.Errorf("unregister %d removed files: %w", len(chunk), err)
		}
		for _, id := range chunk {
			delete(st.announced, id)
		}
		p.logger.Info("unregistered removed files", "files", len(chunk))
	}
	st.stale = nil
	var add []client.FileEntry
	for id, f := range files {
		e := f.entry()
		if st.announced[id] == e || st.conflicts[id] == e {
			continue
		}
		add = append(add, e)
	}
	slices.SortFunc(add, func(a, b client.FileEntry) int { return strings.Compare(a.Name, b.Name) })
	for len(add) > 0 {
		n, bytes := 0, 0
		for n < len(add) && n < maxFilesPerCall && (n == 0 || bytes+len(add[n].ID)+len(add[n].Name)+entryOverhead <= maxBytesPerCall) {
			bytes += len(add[n].ID) + len(add[n].Name) + entryOverhead
			n++
		}
		if err := p.register(ctx, st, add[:n]); err != nil {
			return err
		}
		add = add[n:]
	}
	return nil
}

// register registers files in one call; if the index refuses the batch for
// a conflict (a file it holds with the same ID but another size or piece
// size) it bisects to register all the others and sets the culprits aside.
func (p *Peer) register(ctx context.Context, st *syncState, files []client.FileEntry) error {
	err := p.masterCall(ctx, func(ctx context.Context) error { _, err := p.client.Register(ctx, p.id, files); return err })
	switch {
	case err == nil:
		for _, f := range files {
			st.announced[f.ID] = f
		}
		p.logger.Info("registered files", "files", len(files))
		return nil
	case !errors.Is(err, fsm.ErrConflict):
		return fmt.Errorf("register %d files: %w", len(files), err)
	case len(files) == 1:
		p.logger.Warn("the index refuses this file: it holds the same ID with another size or piece size", "name", files[0].Name, "file", files[0].ID, "err", err)
		st.conflicts[files[0].ID] = files[0]
		return nil
	}
	half := len(files) / 2
	if err := p.register(ctx, st, files[:half]); err != nil {
		return err
	}
	return p.register(ctx, st, files[half:])
}

// publish makes the piece server serve exactly the scanned files the index
// has acknowledged.
func (p *Peer) publish(files map[string]*sharedFile, announced map[string]client.FileEntry) {
	m := make(map[string]*sharedFile, len(files))
	for id, f := range files {
		if announced[id] == f.entry() {
			m[id] = f
		}
	}
	p.served.Store(&m)
}

// heartbeatLoop renews the lease every HeartbeatInterval (default: a third
// of the lease the masters report) while the peer is joined. When the index
// answers fsm.ErrUnknownPeer — the peer was expired, e.g. after a long pause
// — it wakes the sync goroutine to join again and re-register everything.
func (p *Peer) heartbeatLoop(ctx context.Context) {
	interval := p.cfg.HeartbeatInterval
	if interval == 0 {
		interval = time.Second // until the first reply tells the lease
	}
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-p.hbKick:
		}
		if p.joined.Load() {
			var lease time.Duration
			err := p.masterCallTimeout(ctx, max(interval, time.Second), func(ctx context.Context) (err error) {
				lease, err = p.client.Heartbeat(ctx, p.id)
				return err
			})
			switch {
			case err == nil:
				if p.cfg.HeartbeatInterval == 0 && lease > 0 {
					interval = max(lease/3, 10*time.Millisecond)
				}
			case errors.Is(err, fsm.ErrUnknownPeer):
				p.logger.Warn("heartbeat: the index no longer knows this peer (its lease expired); joining again")
				p.joined.Store(false)
				p.kickSync()
			case ctx.Err() != nil:
				return
			case refused(err):
				p.stop(refusedError(fmt.Errorf("heartbeat: %w", err)))
				return
			default:
				// An unreachable cluster is reported by masterCall.
				if !unreachable(err) {
					p.logger.Warn("heartbeat failed; will retry", "err", err)
				}
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(interval)
	}
}

// reachability is what the sync and heartbeat goroutines know of whether
// the masters answer. It exists to tell a person, within a few seconds and
// then at a slow pace, that the peer cannot reach its cluster, and when it
// can again; every retry is not worth a line. Guarded by mu: both
// goroutines report to it.
type reachability struct {
	mu       sync.Mutex
	down     time.Time // when the first failing call since the last answer began; zero while masters answer
	lastWarn time.Time // when the outage was last logged; zero if not yet
	lastErr  error
}

const (
	// syncCallTimeout bounds each master call of the sync goroutine (at
	// least Config.MasterTimeout), so an unreachable cluster is noticed
	// and reported instead of waited on forever.
	syncCallTimeout = 5 * time.Second
	// unreachableGrace is how long calls must have failed before the
	// outage is logged: a leader election alone is not worth a warning.
	unreachableGrace = 2 * time.Second
	// unreachableRepeat is how often an outage is logged again.
	unreachableRepeat = 30 * time.Second
)

// masterCall runs f, one call to the cluster, bounded by syncCallTimeout
// (or MasterTimeout if longer), and reports the outcome to p.reach.
func (p *Peer) masterCall(ctx context.Context, f func(context.Context) error) error {
	return p.masterCallTimeout(ctx, max(syncCallTimeout, p.cfg.MasterTimeout), f)
}

// masterCallTimeout is masterCall with the given bound. Any answer from
// the masters, even a refusal, counts as reaching them; an unreachable
// error (see unreachable) counts as an outage unless ctx itself ended.
func (p *Peer) masterCallTimeout(ctx context.Context, timeout time.Duration, f func(context.Context) error) error {
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	err := f(cctx)
	cancel()
	switch {
	case ctx.Err() != nil:
	case err == nil || !unreachable(err):
		p.masterAnswered()
	default:
		p.masterFailed(start, err)
	}
	return err
}

// masterFailed notes a call, begun at start, that reached no master. The
// outage is logged at WARN once it has lasted unreachableGrace, then every
// unreachableRepeat.
func (p *Peer) masterFailed(start time.Time, err error) {
	r := &p.reach
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.down.IsZero() {
		r.down = start
	}
	r.lastErr = err
	if now.Sub(r.down) < unreachableGrace || (!r.lastWarn.IsZero() && now.Sub(r.lastWarn) < unreachableRepeat) {
		return
	}
	r.lastWarn = now
	p.logger.Warn("cannot reach any master; retrying", "masters", strings.Join(p.cfg.Masters, ","), "for", now.Sub(r.down).Round(time.Second), "err", err)
}

// masterAnswered notes that a master answered; if an outage was logged, it
// logs the recovery at INFO.
func (p *Peer) masterAnswered() {
	r := &p.reach
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down.IsZero() {
		return
	}
	if !r.lastWarn.IsZero() {
		p.logger.Info("reached the masters again", "after", time.Since(r.down).Round(time.Second))
	}
	r.down, r.lastWarn, r.lastErr = time.Time{}, time.Time{}, nil
}

// unreachable reports whether err means no master served the call (a
// lost connection, no leader, a timeout, nothing listening at any master's
// address, or an address that is not a FileShare port): retrying later may
// succeed, as masters start or come back, so the peer retries on its own
// clock and logs the outage.
func unreachable(err error) bool {
	return err != nil && (transport.Retryable(err) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, client.ErrNothingListens) || errors.Is(err, transport.ErrNotFileShare))
}

// refused reports whether err is the masters' answer to a request that
// retrying cannot change: a coded error (one the masters sent, or the
// wire's own) that is neither unreachable, nor internal, nor one the sync
// goroutine handles itself (fsm.ErrUnknownPeer: join again;
// fsm.ErrConflict: set the file aside).
func refused(err error) bool {
	if err == nil || unreachable(err) || errors.Is(err, context.Canceled) {
		return false
	}
	for _, handled := range []error{fsm.ErrUnknownPeer, fsm.ErrConflict, transport.ErrInternal} {
		if errors.Is(err, handled) {
			return false
		}
	}
	var c transport.Coded
	return errors.As(err, &c)
}

// refusedError wraps a refusal with ErrRefused and says what to do.
func refusedError(err error) error {
	var hint string
	switch {
	case errors.Is(err, client.ErrQuota):
		hint = "share fewer files (move some out of the share folder) or ask the masters' operator to raise the limit named above, then start the peer again"
	case errors.Is(err, fsm.ErrUnauthorized):
		hint = "the index knows this peer ID under another secret: run the peer with the data dir it first joined with, or wait until its lease expires"
	case errors.Is(err, transport.ErrForbidden):
		return fieldErr(fmt.Errorf("%w: %w", ErrRefused, err), "CA", "the masters require TLS with the peer's own key: give the cluster's CA certificate in {CA} (see README \"Security\")")
	case errors.Is(err, client.ErrNotYourPeerID), errors.Is(err, client.ErrBadKey):
		hint = "the peer's key and ID do not match: check peer.key in the data dir, or start with a fresh data dir (a new peer ID)"
	case errors.Is(err, fsm.ErrInvalid), errors.Is(err, transport.ErrBadRequest):
		hint = "the masters reject the request as invalid: move the file named above out of the share folder, or check that peer and masters run the same version"
	default:
		hint = "check that the peer and the masters run the same version; retrying cannot help"
	}
	return fmt.Errorf("%w: %w; %s", ErrRefused, err, hint)
}
