package peer

// This file owns the peer's registrations in the index. Two goroutines,
// started by New for a peer with a share folder and awaited by Close and
// Leave through Peer.syncWG, do all of it: the sync goroutine (syncLoop)
// owns the share store's scans, the hash cache's additions and syncState;
// the heartbeat goroutine (heartbeatLoop) owns the lease. They share only
// Peer.joined (atomic), and wake each other through the one-slot channels
// syncKick and hbKick. Other goroutines reach the sync goroutine only
// through rescanReq (Rescan, seeding) and kickSync (the piece server, on a
// changed file), and read what it publishes through Peer.served (atomic).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"fileshare/client"
	"fileshare/fsm"
)

// rescanRequest asks the sync goroutine for a scan that begins after the
// request; done receives that scan's error.
type rescanRequest struct {
	add  *cacheEntry // hashes to add to the cache first (a seeded download)
	done chan error
}

// rescan hands a rescan request (with add, if not nil, to put in the hash
// cache first) to the sync goroutine and waits for its scan.
func (p *Peer) rescan(ctx context.Context, add *cacheEntry) error {
	if p.store == nil {
		return fmt.Errorf("%w: this peer has no share folder", ErrConfig)
	}
	req := rescanRequest{add: add, done: make(chan error, 1)}
	select {
	case p.rescanReq <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-p.ctx.Done():
		return ErrClosed
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
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
// server saw a file change) and on Rescan requests, until ctx ends.
func (p *Peer) syncLoop(ctx context.Context) {
	st := &syncState{announced: map[string]client.FileEntry{}, stale: p.store.cachedIDs(), conflicts: map[string]client.FileEntry{}}
	tick := time.NewTicker(p.cfg.RescanInterval)
	defer tick.Stop()
	var waiters []chan error
	for {
		err := p.syncOnce(ctx, st)
		if err != nil && ctx.Err() == nil {
			p.logger.Warn("sync with the index failed; will retry", "err", err)
		}
		for _, w := range waiters {
			w <- err
		}
		waiters = nil
		select {
		case <-ctx.Done():
			return
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
	if !p.joined.Load() {
		if _, err := p.client.Join(ctx, p.id, p.addr); err != nil {
			return fmt.Errorf("join the index: %w", err)
		}
		clear(st.announced) // the index may have dropped everything: register it all again
		p.joined.Store(true)
		select {
		case p.hbKick <- struct{}{}:
		default:
		}
		p.logger.Info("joined the index", "addr", p.addr)
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
		if _, err := p.client.Unregister(ctx, p.id, chunk); err != nil {
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
	_, err := p.client.Register(ctx, p.id, files)
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
			hctx, cancel := context.WithTimeout(ctx, max(interval, time.Second))
			lease, err := p.client.Heartbeat(hctx, p.id)
			cancel()
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
			default:
				p.logger.Warn("heartbeat failed; will retry", "err", err)
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
