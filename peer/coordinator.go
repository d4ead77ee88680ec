package peer

// This file owns the coordinator: the goroutine that runs Peer.Download.
// It alone touches coordState (the holder set, the dropped liars and stale
// holders, the worker count, the progress samples) and holder values; it
// starts every worker and lookup goroutine of a download and waits for
// all of them before run returns. Workers report back only through run's exits
// channel; the piece table, which they share, guards itself.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"time"

	"fileshare/client"
)

// holder is one holder as the download coordinator sees it. Only the
// coordinator goroutine touches it.
type holder struct {
	id, addr string
	active   bool      // a worker is connected to it
	liar     bool      // dropped for bad data
	stale    bool      // its copy changed since it registered the file
	gone     bool      // absent from the last lookup
	fails    int       // consecutive failures
	retryAt  time.Time // not before this after a failure
}

// coordState is the download state only the coordinator touches.
type coordState struct {
	holders    map[string]*holder
	dropped    []string // IDs of holders dropped for bad data
	changed    []string // IDs of holders whose copy changed (stale)
	active     int      // workers running
	lastActive int      // active at the last wake-up, for Progress
	lastEmit   time.Time
	samples    []rateSample
}

type rateSample struct {
	at    time.Time
	bytes int64
}

// mergeHolders updates the holder set from a lookup, skipping this peer.
func (d *download) mergeHolders(hs []client.HolderEntry) {
	seen := map[string]bool{}
	for _, h := range hs {
		if h.PeerID == d.p.id.PeerID || h.Addr == "" {
			continue
		}
		seen[h.PeerID] = true
		if old, ok := d.c.holders[h.PeerID]; ok {
			old.gone = false
			if old.addr != h.Addr {
				old.addr, old.fails, old.retryAt = h.Addr, 0, time.Time{}
			}
			continue
		}
		d.c.holders[h.PeerID] = &holder{id: h.PeerID, addr: h.Addr}
	}
	for id, h := range d.c.holders {
		if !seen[id] {
			h.gone = true
		}
	}
}

// candidates returns the holders that may be asked, in random order.
func (d *download) candidates() []*holder {
	var out []*holder
	for _, h := range d.c.holders {
		if !h.liar && !h.stale && !h.gone {
			out = append(out, h)
		}
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// drop marks h a liar for this file: it is never asked again.
func (d *download) drop(h *holder, err error) {
	if h.liar {
		return
	}
	h.liar = true
	d.c.dropped = append(d.c.dropped, h.id)
	d.p.logger.Warn("dropping holder that sent bad data for this file", "holder", h.id, "addr", h.addr, "file", d.id, "err", err)
}

// markStale sets h aside for this file: its copy changed since it
// registered the file (it answered statusChanged). It is not a liar: it
// said so instead of sending bad data.
func (d *download) markStale(h *holder, err error) {
	if h.stale {
		return
	}
	h.stale = true
	d.c.changed = append(d.c.changed, h.id)
	d.p.logger.Info("holder's copy of the file changed since it registered it; not asking it again for this file", "holder", h.id, "addr", h.addr, "file", d.id, "err", err)
}

// noHolderError explains why no holder is left: ErrNoHonestHolder if some
// were dropped as liars, else ErrHoldersChanged if some said their copy
// changed, else ErrNoHolders.
func (d *download) noHolderError(why string) error {
	if len(d.c.dropped) > 0 {
		return fmt.Errorf("download %s (%s): %w: dropped %s for sending pieces that fail verification, and no other holder is left; the file cannot be trusted from this swarm", d.name, d.id, ErrNoHonestHolder, strings.Join(d.c.dropped, ", "))
	}
	if len(d.c.changed) > 0 {
		return fmt.Errorf("download %s (%s): %w (%s), and no other holder is left; search again: the file may be shared under a new ID", d.name, d.id, ErrHoldersChanged, strings.Join(d.c.changed, ", "))
	}
	return fmt.Errorf("download %s (%s): %w: %s; try again later, or check that its holders are running", d.name, d.id, ErrNoHolders, why)
}

// fetchHashes gets the piece-hash list from a holder and checks it against
// the file ID. A holder whose list does not match is dropped. It retries,
// looking the holders up again, until StallTimeout.
func (d *download) fetchHashes(ctx context.Context) error {
	if d.size == 0 {
		d.hashes = [][32]byte{sha256.Sum256(nil)}
		if FileIDOf(d.size, d.pieceSize, d.hashes) != d.id {
			return fmt.Errorf("download %s: the index says the file is empty, but its ID is not that of an empty file", d.id)
		}
		return nil
	}
	deadline := time.Now().Add(d.opts.StallTimeout)
	backoff := 100 * time.Millisecond
	for {
		cands := d.candidates()
		for _, h := range cands {
			hs, err := d.requestHashes(h.id, h.addr)
			if err == nil {
				d.hashes = hs
				return nil
			}
			if errors.Is(err, errBadData) {
				d.drop(h, err)
				continue
			}
			if errors.Is(err, errHolderChanged) {
				d.markStale(h, err)
				continue
			}
			d.p.logger.Debug("cannot fetch piece hashes from holder", "holder", h.id, "err", err)
		}
		if len(d.candidates()) == 0 {
			return d.noHolderError("the index lists no other holder")
		}
		if time.Now().After(deadline) {
			return d.noHolderError(fmt.Sprintf("no holder answered for %v", d.opts.StallTimeout))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
		if look, err := d.p.client.Lookup(ctx, d.id, d.opts.ReadLevel); err == nil {
			d.mergeHolders(look.Holders)
		}
	}
}

type workerExit struct {
	h   *holder
	got int
	err error
}

// run fetches every missing piece. It returns nil once all are verified
// and written; ErrNoHolders, ErrNoHonestHolder or ErrHoldersChanged (see
// noHolderError) when no holder is left or
// none sent a piece for StallTimeout; an errWrite error; or ctx's error.
// Every goroutine it starts (one worker per connected holder, at most one
// lookup) has ended when it returns.
func (d *download) run(ctx context.Context) error {
	if d.pieces.stats().Done == d.n {
		return nil
	}
	wctx, wcancel := context.WithCancel(ctx)
	exits := make(chan workerExit)
	type lookupResult struct {
		reply client.LookupReply
		err   error
	}
	lookups := make(chan lookupResult, 1)
	looking := false
	lastLookup := time.Now()
	var lookupStarted, idleSince time.Time
	// fresh is true when the holder set comes from a lookup begun after
	// the last worker stopped: only then may "nobody left" end the download.
	fresh := true
	lastProgress := time.Now()
	lastCount := d.pieces.stats().Done
	lastCheckpoint := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()

	// Every goroutine started here ends before run returns: each worker
	// sends one workerExit (exits is unbuffered, and drained here), the
	// lookup one lookupResult (lookups has room for it).
	defer func() {
		wcancel()
		for d.c.active > 0 {
			ex := <-exits
			d.c.active--
			ex.h.active = false
		}
		if looking {
			<-lookups
		}
	}()
	startLookup := func() {
		if looking {
			return
		}
		looking = true
		lookupStarted = time.Now()
		go func() {
			lctx, cancel := context.WithTimeout(wctx, 10*time.Second)
			r, err := d.p.client.Lookup(lctx, d.id, d.opts.ReadLevel)
			cancel()
			lookups <- lookupResult{r, err}
		}()
	}
	for {
		now := time.Now()
		for _, h := range d.candidates() {
			if d.c.active >= d.opts.MaxHolders {
				break
			}
			if !h.active && !now.Before(h.retryAt) {
				h.active = true
				d.c.active++
				go func(id, addr string) {
					got, err := d.worker(wctx, id, addr)
					exits <- workerExit{h, got, err}
				}(h.id, h.addr)
			}
		}
		if d.c.active == 0 && len(d.candidates()) == 0 {
			if fresh && !looking {
				return d.noHolderError("the index lists no other holder")
			}
			startLookup()
		}
		if now.Sub(lastLookup) > 3*time.Second {
			startLookup()
		}
		select {
		case <-d.pieces.completed():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case ex := <-exits:
			d.c.active--
			h := ex.h
			h.active = false
			switch {
			case ex.err == nil || ctx.Err() != nil:
			case errors.Is(ex.err, ErrDiskFull):
				st := d.pieces.stats()
				return fmt.Errorf("download %s: %w; free at least %s on the disk holding %s (or raise the quota), then run the same download again: it continues from the %d of %d pieces verified so far", d.name, ex.err, humanBytes(d.size-st.DoneBytes), filepath.Dir(d.file.path), st.Done, d.n)
			case errors.Is(ex.err, errWrite):
				return fmt.Errorf("download %s: %w; check the disk holding %s, then run the same download again: it continues from the pieces verified so far", d.name, ex.err, filepath.Dir(d.file.path))
			case errors.Is(ex.err, errBadData):
				d.drop(h, ex.err)
			case errors.Is(ex.err, errHolderChanged):
				d.markStale(h, ex.err)
			default:
				if ex.got > 0 {
					h.fails = 0
				}
				h.fails++
				h.retryAt = time.Now().Add(min(100*time.Millisecond<<min(h.fails-1, 5), 2*time.Second))
				d.p.logger.Debug("holder connection ended; its pieces go to the others", "holder", h.id, "err", ex.err, "retry_in", time.Until(h.retryAt))
			}
			if d.c.active == 0 {
				fresh, idleSince = false, time.Now()
			}
		case r := <-lookups:
			looking = false
			lastLookup = time.Now()
			if r.err == nil {
				if !r.reply.Found {
					r.reply.Holders = nil
				}
				d.mergeHolders(r.reply.Holders)
				fresh = fresh || lookupStarted.After(idleSince)
			} else if ctx.Err() == nil {
				d.p.logger.Debug("holder lookup failed; will retry", "err", r.err)
			}
		case <-tick.C:
		}
		st := d.pieces.stats()
		if st.Done != lastCount {
			lastCount, lastProgress = st.Done, time.Now()
		}
		if time.Since(lastProgress) > d.opts.StallTimeout {
			return d.noHolderError(fmt.Sprintf("no piece arrived for %v", d.opts.StallTimeout))
		}
		if time.Since(lastCheckpoint) >= d.opts.CheckpointInterval {
			lastCheckpoint = time.Now()
			if err := d.file.checkpoint(d.pieces); err != nil {
				d.p.logger.Warn("cannot save resume state", "path", d.file.statePath, "err", err)
			}
		}
		d.file.kickWriteback(st.DoneBytes)
		d.c.lastActive = d.c.active
		d.emit(false)
	}
}

// humanBytes formats n bytes for a message, in the binary units the CLI's
// --size flags take.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// emit calls the progress callback if ProgressInterval has passed, or now
// if force.
func (d *download) emit(force bool) {
	if d.opts.Progress == nil {
		return
	}
	now := time.Now()
	if !force && now.Sub(d.c.lastEmit) < d.opts.ProgressInterval {
		return
	}
	d.c.lastEmit = now
	st := d.pieces.stats()
	pr := Progress{ID: d.id, Name: d.name, Size: d.size, Done: st.DoneBytes, Pieces: d.n, PiecesDone: st.Done, Resumed: st.Resumed, Holders: d.c.lastActive, Elapsed: now.Sub(d.start), Paths: d.paths.counts()}
	fetched := st.FetchBytes
	d.c.samples = append(d.c.samples, rateSample{now, fetched})
	for len(d.c.samples) > 2 && now.Sub(d.c.samples[1].at) >= 3*time.Second {
		d.c.samples = d.c.samples[1:]
	}
	if first := d.c.samples[0]; now.Sub(first.at) > 100*time.Millisecond {
		pr.Rate = float64(fetched-first.bytes) / now.Sub(first.at).Seconds()
	}
	d.opts.Progress(pr)
}
