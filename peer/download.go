package peer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/transport"
)

// DownloadOptions tunes one download. The zero value is a good default.
type DownloadOptions struct {
	// Seed, once the download is complete, makes this peer a holder: the
	// file is registered in the index and served from the share folder. A
	// destination inside the share folder is shared where it is; one
	// outside is hard-linked into the share folder (copied if a link is
	// impossible), so the share folder stays the only place the peer serves
	// from. Needs a peer with a share folder.
	Seed bool
	// Progress, if set, is called on the downloading goroutine about every
	// ProgressInterval and once more when the download ends. It must
	// return quickly.
	Progress func(Progress)
	// ProgressInterval is the time between Progress calls. Zero means
	// 250 ms.
	ProgressInterval time.Duration
	// RateLimit caps the download rate in bytes per second, summed over
	// all holders. Zero means no limit.
	RateLimit int64
	// StallTimeout ends the download with ErrNoHolders when no piece has
	// been verified for this long. Zero means 30 s.
	StallTimeout time.Duration
	// MaxInFlight is how many piece requests each holder may have
	// outstanding (pipelined on one connection). Zero means about 4 MiB
	// worth, between 2 and 32 requests.
	MaxInFlight int
	// CheckpointInterval is how often the resume state is saved (after an
	// fsync of the data). Zero means 1 s.
	CheckpointInterval time.Duration
}

// Progress is a snapshot of a download.
type Progress struct {
	ID   string
	Name string
	// Size is the file's length; Done the bytes verified so far, resumed
	// pieces included.
	Size, Done int64
	// Pieces is the file's piece count; PiecesDone how many are verified;
	// Resumed how many of those came from an earlier, interrupted run.
	Pieces, PiecesDone, Resumed int
	// Rate is the network rate over the last few seconds, in bytes per
	// second.
	Rate float64
	// Holders is how many holders are connected and sending right now.
	Holders int
	// Elapsed is the time since this run began.
	Elapsed time.Duration
}

// Remaining estimates the time left at the current rate; 0 when done, -1
// when the rate is still unknown.
func (p Progress) Remaining() time.Duration {
	if p.Done >= p.Size {
		return 0
	}
	if p.Rate <= 0 {
		return -1
	}
	return time.Duration(float64(p.Size-p.Done) / p.Rate * float64(time.Second))
}

// DownloadResult describes a finished download.
type DownloadResult struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Path is where the file now is.
	Path      string `json:"path"`
	Size      int64  `json:"size"`
	PieceSize int64  `json:"piece_size"`
	// Pieces is the piece count; Fetched how many came over the network in
	// this run; Resumed how many were verified from an earlier run's
	// partial file; Fetched + Resumed = Pieces.
	Pieces  int `json:"pieces"`
	Fetched int `json:"fetched"`
	Resumed int `json:"resumed"`
	// Duplicates counts pieces received twice (end-game requests sent to
	// two holders); the second copy is discarded.
	Duplicates int `json:"duplicates"`
	// FromHolders counts verified pieces per holder peer ID.
	FromHolders map[string]int `json:"from_holders"`
	// Dropped lists holders dropped for sending data that failed
	// verification.
	Dropped []string `json:"dropped,omitempty"`
	// Seeded is true if this peer now holds and serves the file.
	Seeded   bool          `json:"seeded"`
	Duration time.Duration `json:"duration_ns"`
}

// errBadData marks a holder that sent data failing verification or
// breaking the protocol: it is dropped for this file.
var errBadData = errors.New("holder sent bad data")

// errWrite marks a local write failure (disk full…): fatal for the download.
var errWrite = errors.New("cannot write the partial file")

// Download fetches the file fileID into dest, from every holder at once,
// verifying each piece against the file's Merkle root, and returns when the
// file is complete and renamed to dest (or seeded, with opts.Seed).
//
// It looks up the holders (a linearizable read), fetches the piece-hash
// list from one and checks it against the ID, then pipelines piece requests
// to every holder, each holder pulling the next missing piece when it has
// room (so the least busy holder gets it). Pieces land in place in
// dest+PartialSuffix; dest+ResumeSuffix records the verified ones, so a run
// that was killed continues where it stopped (marked pieces are re-verified
// on resume). A holder that fails or times out has its pieces re-issued to
// the others and is retried with backoff; one that sends a bad piece is
// dropped for this file. Near the end, idle holders duplicate outstanding
// requests (end game) so one slow holder cannot hold up the finish.
//
// Errors: ErrFileNotFound, ErrNoHonestHolder (every holder lied; the error
// names the file and the liars), ErrNoHolders (none reachable for
// StallTimeout), ErrDestinationExists, ErrClosed, ctx's error. After an
// error or cancellation the partial file and resume state stay for the next
// run. Download blocks; several may run at once, to different dests.
func (p *Peer) Download(ctx context.Context, fileID, dest string, opts DownloadOptions) (DownloadResult, error) {
	if err := fsm.FileID(fileID).Validate(); err != nil {
		return DownloadResult{}, fmt.Errorf("download %q: %w", fileID, err)
	}
	if opts.Seed && p.store == nil {
		return DownloadResult{}, fmt.Errorf("%w: seeding needs a peer with a share folder", ErrConfig)
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = 250 * time.Millisecond
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = 30 * time.Second
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = time.Second
	}
	p.wg.Add(1)
	defer p.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(p.ctx, cancel)
	defer stop()
	if p.ctx.Err() != nil {
		return DownloadResult{}, ErrClosed
	}
	res, err := p.download(ctx, fileID, dest, opts)
	if err != nil && p.ctx.Err() != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return res, err
}

func (p *Peer) download(ctx context.Context, fileID, dest string, opts DownloadOptions) (DownloadResult, error) {
	start := time.Now()
	dest, err := filepath.Abs(dest)
	if err != nil {
		return DownloadResult{}, err
	}
	if _, err := os.Lstat(dest); err == nil {
		return DownloadResult{}, fmt.Errorf("%w: %s; remove it or choose another destination", ErrDestinationExists, dest)
	}
	lctx, cancel := context.WithTimeout(ctx, opts.StallTimeout)
	look, err := p.client.Lookup(lctx, fileID, client.ReadLinearizable)
	cancel()
	if err != nil {
		return DownloadResult{}, fmt.Errorf("look up file %s: %w; check that the masters are reachable", fileID, err)
	}
	if !look.Found {
		return DownloadResult{}, fmt.Errorf("%w: %s; search for it again, its holders may have gone", ErrFileNotFound, fileID)
	}
	meta := fsm.FileMeta{ID: fsm.FileID(fileID), Name: "x", Size: look.File.Size, PieceSize: look.File.PieceSize}
	if err := meta.Validate(); err != nil {
		return DownloadResult{}, fmt.Errorf("the index describes file %s impossibly: %w", fileID, err)
	}
	n := PieceCount(meta.Size, meta.PieceSize)
	if n > MaxPieces {
		return DownloadResult{}, fmt.Errorf("%w: file %s has %d pieces, limit %d", ErrFileTooLarge, fileID, n, MaxPieces)
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return DownloadResult{}, fmt.Errorf("create the destination's folder: %w", err)
	}
	d := &download{
		p: p, opts: opts, id: fileID, name: look.File.Name, dest: dest,
		partial: dest + PartialSuffix, statePath: dest + ResumeSuffix,
		size: meta.Size, pieceSize: meta.PieceSize, n: n,
		requesters: make([]int, n), arrived: make([]bool, n), from: map[string]int{},
		changed: make(chan struct{}), complete: make(chan struct{}),
		holders: map[string]*holder{}, start: start,
	}
	root, _ := hex.DecodeString(fileID)
	copy(d.root[:], root)
	d.window = opts.MaxInFlight
	if d.window <= 0 {
		d.window = int(min(max((4<<20)/d.pieceSize, 2), 32))
	}
	if opts.RateLimit > 0 {
		d.limiter = &rateLimiter{rate: float64(opts.RateLimit)}
		// A slow limit must not pass for a stall: allow three pieces' time.
		d.opts.StallTimeout = max(d.opts.StallTimeout, time.Duration(3*float64(d.pieceSize)/float64(opts.RateLimit)*float64(time.Second)))
	}
	d.mergeHolders(look.Holders)
	if err := d.openPartial(); err != nil {
		return DownloadResult{}, err
	}
	defer func() {
		if d.f != nil {
			d.f.Close()
		}
	}()
	if err := d.fetchHashes(ctx); err != nil {
		d.discardIfEmpty()
		return d.result(), err
	}
	if err := d.reverify(); err != nil {
		return d.result(), err
	}
	d.emit(true)
	if err := d.run(ctx); err != nil {
		if cerr := d.checkpoint(); cerr != nil {
			p.logger.Warn("cannot save resume state", "path", d.statePath, "err", cerr)
		}
		d.emit(true)
		d.discardIfEmpty()
		return d.result(), err
	}
	if err := d.finish(); err != nil {
		return d.result(), err
	}
	d.emit(true)
	res := d.result()
	if opts.Seed {
		if err := p.seed(ctx, dest, d.size, d.pieceSize, rawHashes(d.hashes)); err != nil {
			return res, fmt.Errorf("downloaded %s, but cannot seed it: %w", dest, err)
		}
		res.Seeded = true
	}
	res.Duration = time.Since(start)
	p.logger.Info("download complete", "file", fileID, "name", d.name, "path", dest, "fetched", res.Fetched, "resumed", res.Resumed, "duration", res.Duration)
	return res, nil
}

// holder is one holder as the download coordinator sees it. Only the
// coordinator goroutine touches it.
type holder struct {
	id, addr string
	active   bool      // a worker is connected to it
	liar     bool      // dropped for bad data
	gone     bool      // absent from the last lookup
	fails    int       // consecutive failures
	retryAt  time.Time // not before this after a failure
}

// download is the state of one Download call. The coordinator (the
// caller's goroutine) owns the holders and the file lifecycle; worker
// goroutines, one per connected holder, share the piece bookkeeping under
// mu.
type download struct {
	p         *Peer
	opts      DownloadOptions
	id, name  string
	root      [32]byte
	dest      string
	partial   string
	statePath string
	size      int64
	pieceSize int64
	n         int
	window    int
	hashes    [][32]byte
	f         *os.File
	limiter   *rateLimiter
	start     time.Time

	holders map[string]*holder
	dropped []string
	active  int
	resumed int

	lastSaved  int   // pieces recorded by the last checkpoint
	lastKick   int64 // doneBytes when writeback was last started
	lastEmit   time.Time
	samples    []rateSample
	lastActive int

	// writeMu serialises the writes to the partial file. Writers to one
	// file queue on its inode lock anyway, and the kernel spins for it:
	// two verifier goroutines writing at once cost half as much CPU again
	// as one, for less throughput. Parked goroutines cost nothing.
	writeMu sync.Mutex

	mu         sync.Mutex
	state      *resumeState // verified and written pieces
	doneCount  int
	doneBytes  int64
	fetched    int
	fetchBytes int64
	dups       int
	requesters []int  // requests outstanding per piece, received ones included until stored
	arrived    []bool // a requested copy was received and is being verified
	cursor     int    // every piece below is verified or requested
	from       map[string]int
	changed    chan struct{} // closed and replaced on every change
	complete   chan struct{} // closed when every piece is verified
}

type rateSample struct {
	at    time.Time
	bytes int64
}

func (d *download) pieceLen(i int) int64 { return pieceLen(d.size, d.pieceSize, i) }

// mergeHolders updates the holder set from a lookup, skipping this peer.
func (d *download) mergeHolders(hs []client.HolderEntry) {
	seen := map[string]bool{}
	for _, h := range hs {
		if h.PeerID == d.p.id.PeerID || h.Addr == "" {
			continue
		}
		seen[h.PeerID] = true
		if old, ok := d.holders[h.PeerID]; ok {
			old.gone = false
			if old.addr != h.Addr {
				old.addr, old.fails, old.retryAt = h.Addr, 0, time.Time{}
			}
			continue
		}
		d.holders[h.PeerID] = &holder{id: h.PeerID, addr: h.Addr}
	}
	for id, h := range d.holders {
		if !seen[id] {
			h.gone = true
		}
	}
}

// candidates returns the holders that may be asked, in random order.
func (d *download) candidates() []*holder {
	var out []*holder
	for _, h := range d.holders {
		if !h.liar && !h.gone {
			out = append(out, h)
		}
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func (d *download) drop(h *holder, err error) {
	if h.liar {
		return
	}
	h.liar = true
	d.dropped = append(d.dropped, h.id)
	d.p.logger.Warn("dropping holder that sent bad data for this file", "holder", h.id, "addr", h.addr, "file", d.id, "err", err)
}

// noHolderError explains why no holder is left.
func (d *download) noHolderError(why string) error {
	if len(d.dropped) > 0 {
		return fmt.Errorf("download %s (%s): %w: dropped %s for sending pieces that fail verification, and no other holder is left; the file cannot be trusted from this swarm", d.name, d.id, ErrNoHonestHolder, strings.Join(d.dropped, ", "))
	}
	return fmt.Errorf("download %s (%s): %w: %s; try again later, or check that its holders are running", d.name, d.id, ErrNoHolders, why)
}

// openPartial opens (or creates) the partial file and loads the resume
// state if it belongs to this file; anything else there is discarded.
func (d *download) openPartial() error {
	f, err := os.OpenFile(d.partial, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", d.partial, err)
	}
	// One download per destination: the lock ends with the process.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("%w: another download to %s is running (%s is locked)", ErrDestinationExists, d.dest, d.partial)
	}
	d.f = f
	st := newResumeState(d.root, d.size, d.pieceSize)
	if b, err := os.ReadFile(d.statePath); err == nil {
		old, err := decodeResumeState(b)
		switch {
		case err != nil:
			d.p.logger.Warn("discarding unreadable resume state", "path", d.statePath, "err", err)
		case old.ID != d.root || old.Size != d.size || old.PieceSize != d.pieceSize:
			d.p.logger.Warn("discarding resume state of another file", "path", d.statePath)
		default:
			st = old
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read resume state %s: %w", d.statePath, err)
	}
	if st.count() == 0 {
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("truncate %s: %w", d.partial, err)
		}
	}
	if err := f.Truncate(d.size); err != nil {
		return fmt.Errorf("size %s: %w", d.partial, err)
	}
	d.state = st
	return nil
}

// discardIfEmpty removes the partial file and resume state of a failed
// download that verified nothing: there is nothing to resume.
func (d *download) discardIfEmpty() {
	d.mu.Lock()
	empty := d.doneCount == 0
	d.mu.Unlock()
	if !empty || d.f == nil {
		return
	}
	d.f.Close()
	d.f = nil
	os.Remove(d.partial)
	os.Remove(d.statePath)
}

// reverify re-hashes the pieces the resume state marks and unmarks any that
// no longer match, so only verified bytes are ever trusted.
func (d *download) reverify() error {
	marked := d.state.count()
	if marked == 0 {
		return nil
	}
	buf := make([]byte, d.pieceSize)
	for i := range d.n {
		if !d.state.has(i) {
			continue
		}
		l := d.pieceLen(i)
		if _, err := d.f.ReadAt(buf[:l], int64(i)*d.pieceSize); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("re-verify %s: %w", d.partial, err)
		}
		if sha256.Sum256(buf[:l]) != d.hashes[i] {
			d.state.clear(i)
			continue
		}
		d.doneCount++
		d.doneBytes += l
	}
	d.resumed = d.doneCount
	d.lastSaved = d.doneCount
	d.lastKick = d.doneBytes
	if d.resumed < marked {
		d.p.logger.Warn("some resumed pieces failed re-verification and will be fetched again", "marked", marked, "valid", d.resumed)
	}
	if d.resumed > 0 {
		d.p.logger.Info("resuming download", "file", d.id, "pieces", d.resumed, "of", d.n)
	}
	if d.doneCount == d.n {
		close(d.complete)
	}
	return nil
}

// fetchHashes gets the piece-hash list from a holder and checks it against
// the file ID. A holder whose list does not match is dropped.
func (d *download) fetchHashes(ctx context.Context) error {
	if d.size == 0 {
		d.hashes = [][32]byte{sha256.Sum256(nil)}
		if FileIDOf(d.hashes) != d.id {
			return fmt.Errorf("download %s: the index says the file is empty, but its ID is not that of an empty file", d.id)
		}
		return nil
	}
	deadline := time.Now().Add(d.opts.StallTimeout)
	backoff := 100 * time.Millisecond
	for {
		cands := d.candidates()
		for _, h := range cands {
			hs, err := d.requestHashes(h.addr)
			if err == nil {
				d.hashes = hs
				return nil
			}
			if errors.Is(err, errBadData) {
				d.drop(h, err)
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
		if look, err := d.p.client.Lookup(ctx, d.id, client.ReadLinearizable); err == nil {
			d.mergeHolders(look.Holders)
		}
	}
}

func (d *download) dial(addr string) (io.ReadWriteCloser, *bufio.Reader, func(time.Time), error) {
	conn, err := d.p.mux.DialStream(addr, transport.StreamPiece, min(d.p.cfg.IOTimeout, 5*time.Second))
	if err != nil {
		return nil, nil, nil, err
	}
	return conn, bufio.NewReaderSize(conn, 64<<10), func(t time.Time) { _ = conn.SetDeadline(t) }, nil
}

// requestHashes asks one holder for the piece-hash list and checks it. A
// list of the wrong length or whose Merkle root is not the file ID is
// errBadData.
func (d *download) requestHashes(addr string) ([][32]byte, error) {
	conn, br, deadline, err := d.dial(addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	deadline(time.Now().Add(d.p.cfg.IOTimeout))
	if _, err := conn.Write(pieceRequest{Op: opHashes, File: d.root}.appendTo(nil)); err != nil {
		return nil, err
	}
	h, err := readHeader(br)
	if err != nil {
		return nil, err
	}
	if h.Status != statusOK {
		return nil, readRemoteError(br, h)
	}
	if int64(h.Len) != 32*int64(d.n) {
		return nil, fmt.Errorf("%w: piece-hash list of %d bytes, want %d for %d pieces", errBadData, h.Len, 32*d.n, d.n)
	}
	raw := make([]byte, h.Len)
	if _, err := io.ReadFull(br, raw); err != nil {
		return nil, err
	}
	hs := leaves(raw)
	if FileIDOf(hs) != d.id {
		return nil, fmt.Errorf("%w: the piece-hash list's Merkle root is not the file ID", errBadData)
	}
	return hs, nil
}

func readHeader(br *bufio.Reader) (respHeader, error) {
	var b [respHeaderLen]byte
	if _, err := io.ReadFull(br, b[:]); err != nil {
		return respHeader{}, err
	}
	h, err := decodeRespHeader(b[:])
	if err != nil {
		return h, fmt.Errorf("%w: %w", errBadData, err)
	}
	return h, nil
}

func readRemoteError(br *bufio.Reader, h respHeader) error {
	msg := make([]byte, h.Len)
	if _, err := io.ReadFull(br, msg); err != nil {
		return err
	}
	return &remoteError{Status: h.Status, Msg: string(msg)}
}

type workerExit struct {
	h   *holder
	got int
	err error
}

// run fetches every missing piece. It returns nil once all are verified
// and written.
func (d *download) run(ctx context.Context) error {
	if d.doneCount == d.n {
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
	lastCount := d.doneCount
	lastCheckpoint := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()

	// Every goroutine started here ends before run returns.
	defer func() {
		wcancel()
		for d.active > 0 {
			ex := <-exits
			d.active--
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
			r, err := d.p.client.Lookup(lctx, d.id, client.ReadLinearizable)
			cancel()
			lookups <- lookupResult{r, err}
		}()
	}
	for {
		now := time.Now()
		for _, h := range d.candidates() {
			if !h.active && !now.Before(h.retryAt) {
				h.active = true
				d.active++
				go func(id, addr string) {
					got, err := d.worker(wctx, id, addr)
					exits <- workerExit{h, got, err}
				}(h.id, h.addr)
			}
		}
		if d.active == 0 && len(d.candidates()) == 0 {
			if fresh && !looking {
				return d.noHolderError("the index lists no other holder")
			}
			startLookup()
		}
		if now.Sub(lastLookup) > 3*time.Second {
			startLookup()
		}
		select {
		case <-d.complete:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case ex := <-exits:
			d.active--
			h := ex.h
			h.active = false
			switch {
			case ex.err == nil || ctx.Err() != nil:
			case errors.Is(ex.err, errWrite):
				return fmt.Errorf("download %s: %w", d.name, ex.err)
			case errors.Is(ex.err, errBadData):
				d.drop(h, ex.err)
			default:
				if ex.got > 0 {
					h.fails = 0
				}
				h.fails++
				h.retryAt = time.Now().Add(min(100*time.Millisecond<<min(h.fails-1, 5), 2*time.Second))
				d.p.logger.Debug("holder connection ended; its pieces go to the others", "holder", h.id, "err", ex.err, "retry_in", time.Until(h.retryAt))
			}
			if d.active == 0 {
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
		d.mu.Lock()
		count := d.doneCount
		d.mu.Unlock()
		if count != lastCount {
			lastCount, lastProgress = count, time.Now()
		}
		if time.Since(lastProgress) > d.opts.StallTimeout {
			return d.noHolderError(fmt.Sprintf("no piece arrived for %v", d.opts.StallTimeout))
		}
		if time.Since(lastCheckpoint) >= d.opts.CheckpointInterval {
			lastCheckpoint = time.Now()
			if err := d.checkpoint(); err != nil {
				d.p.logger.Warn("cannot save resume state", "path", d.statePath, "err", err)
			}
		}
		d.startWriteback()
		d.lastActive = d.active
		d.emit(false)
	}
}

type flight struct {
	i   int
	dup bool
}

// maxDups is how many end-game duplicate requests one holder may have
// outstanding.
const maxDups = 2

// worker pipelines piece requests to one holder over one connection until
// every piece is verified, ctx ends, or the holder fails. It only reads:
// each piece, once received, goes to the worker's verifier, which hashes
// and writes it while the worker reads the next. It returns how many
// pieces were verified; its unanswered requests, and received pieces that
// were not stored, go back to the others. A piece that fails verification
// makes it return an errBadData error, whatever its own read saw.
func (d *download) worker(ctx context.Context, id, addr string) (got int, err error) {
	conn, br, deadline, err := d.dial(addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	// Closing (not a deadline, which the loop would reset) unblocks any
	// read or write at once when the download ends.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	v := d.startVerifier(id, conn)
	var inflight []flight
	defer func() {
		d.release(inflight)
		got, err = v.wait(err)
	}()
	dups := 0
	var reqs []byte
	for {
		reqs = reqs[:0]
		var changed <-chan struct{}
		for len(inflight) < d.window {
			// Under a rate limit, ask for more only when the limit
			// allows, and meanwhile read what is on its way: the
			// holder must never wait on us with a response half sent.
			if d.limiter != nil && len(inflight) > 0 && !d.limiter.ready() {
				break
			}
			i, dup, ch, ok := d.next(inflight, dups)
			if !ok {
				changed = ch
				break
			}
			inflight = append(inflight, flight{i, dup})
			if dup {
				dups++
			}
			if d.limiter != nil {
				if err := d.limiter.wait(ctx, d.pieceLen(i)); err != nil {
					return 0, err
				}
			}
			reqs = pieceRequest{Op: opPiece, File: d.root, Index: uint32(i)}.appendTo(reqs)
		}
		if len(reqs) > 0 {
			deadline(time.Now().Add(d.p.cfg.IOTimeout))
			if _, err := conn.Write(reqs); err != nil {
				return 0, err
			}
		}
		if len(inflight) == 0 {
			select {
			case <-d.complete:
				return 0, nil
			case <-changed:
				continue
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-v.failed:
				return 0, nil // wait reports why
			}
		}
		fl := inflight[0]
		buf, err := v.buffer(ctx)
		if err != nil {
			return 0, err
		}
		deadline(time.Now().Add(d.p.cfg.IOTimeout))
		hdr, err := readHeader(br)
		if err != nil {
			return 0, err
		}
		if hdr.Status != statusOK {
			return 0, readRemoteError(br, hdr)
		}
		l := d.pieceLen(fl.i)
		if int64(hdr.Len) != l {
			return 0, fmt.Errorf("%w: piece %d is %d bytes, want %d", errBadData, fl.i, hdr.Len, l)
		}
		if _, err := io.ReadFull(br, buf[:l]); err != nil {
			return 0, err
		}
		inflight = inflight[1:]
		if fl.dup {
			dups--
		}
		d.arrive(fl.i)
		v.put(fl.i, buf[:l])
	}
}

// verifier checks and stores the pieces one worker receives, on
// goroutines of its own, so that SHA-256 and the copy into the partial
// file overlap the worker's next network read instead of stalling it. On
// loopback a piece costs about as much CPU to hash, and again to write,
// as to receive, so one holder keeps two or more cores busy. Pieces are
// hashed in parallel but accepted or refused in the order they arrived,
// so, as when the worker verified each piece before reading the next,
// nothing a holder sent after a bad piece is stored. The worker owns the
// verifier: startVerifier starts it; the worker alone calls buffer and
// put, and calls wait once, before it returns.
type verifier struct {
	d      *download
	from   string    // the holder's peer ID
	conn   io.Closer // closed on the first failure, to end the worker's read
	queue  chan received
	free   chan []byte // piece buffers handed back
	made   int         // buffers allocated so far (worker-owned)
	seq    int         // sequence number of the next put (worker-owned)
	wg     sync.WaitGroup
	failed chan struct{} // closed on the first failure

	mu   sync.Mutex
	turn sync.Cond // signalled when next advances; L is &mu
	next int       // sequence number of the piece to decide next
	got  int       // pieces verified and stored
	err  error     // the first failure
}

// received is a piece read off the wire and not yet verified.
type received struct {
	seq, i int
	b      []byte
}

// verifyBuffers is how many piece buffers each worker cycles through:
// about 4 MiB worth (at most 16), and always one more than it has
// verifier goroutines, so that each verifies one piece while the worker
// reads the next.
func verifyBuffers(pieceSize int64) int {
	return int(max(min((4<<20)/pieceSize, 16), int64(verifyGoroutines()+1)))
}

// verifyGoroutines is how many goroutines verify each worker's pieces:
// one per core, at most 4, at least 2 so that one holder alone can use
// two cores besides its reading goroutine.
func verifyGoroutines() int { return min(max(runtime.GOMAXPROCS(0), 2), 4) }

func (d *download) startVerifier(from string, conn io.Closer) *verifier {
	n := verifyBuffers(d.pieceSize)
	v := &verifier{
		d: d, from: from, conn: conn,
		// Never more pieces in flight than buffers, so put never blocks.
		queue: make(chan received, n), free: make(chan []byte, n),
		failed: make(chan struct{}),
	}
	v.turn.L = &v.mu
	for range verifyGoroutines() {
		v.wg.Add(1)
		go v.run()
	}
	return v
}

// buffer returns a piece buffer, waiting for a verifier goroutine to hand
// one back if all are in use.
func (v *verifier) buffer(ctx context.Context) ([]byte, error) {
	select {
	case b := <-v.free:
		return b, nil
	default:
	}
	if v.made < cap(v.free) {
		v.made++
		return make([]byte, v.d.pieceSize), nil
	}
	select {
	case b := <-v.free:
		return b, nil
	case <-v.failed:
		return nil, errors.New("verification failed") // wait reports why
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// put queues piece i, read into b (a buffer from buffer), for
// verification. It never blocks: the queue holds as many pieces as there
// are buffers.
func (v *verifier) put(i int, b []byte) {
	v.queue <- received{v.seq, i, b}
	v.seq++
}

// wait ends the verifier once every queued piece is processed, and
// returns how many pieces it stored and the worker's error: the
// verifier's own failure if it had one (it caused whatever ended the
// worker), else err.
func (v *verifier) wait(err error) (int, error) {
	close(v.queue)
	v.wg.Wait()
	if v.err != nil {
		return v.got, v.err
	}
	return v.got, err
}

// run hashes queued pieces, then, in arrival order, stores each good one
// until the first failure (a bad piece or a write error), after which it
// releases the rest unverified. The queue hands pieces out in order, so
// the piece whose turn it is is always held by a goroutine that can go
// on.
func (v *verifier) run() {
	defer v.wg.Done()
	for r := range v.queue {
		var good bool
		select {
		case <-v.failed: // refused anyway: do not hash
		default:
			good = sha256.Sum256(r.b) == v.d.hashes[r.i]
		}
		v.mu.Lock()
		for v.next != r.seq {
			v.turn.Wait()
		}
		refused := v.err != nil
		v.mu.Unlock()
		var err error
		switch {
		case refused:
		case !good:
			err = fmt.Errorf("%w: piece %d does not match its SHA-256", errBadData, r.i)
		default:
			err = v.d.store(r.i, r.b, v.from)
		}
		v.mu.Lock()
		switch {
		case err != nil:
			v.err = err
			close(v.failed)
			v.conn.Close()
		case !refused:
			v.got++
		}
		v.next++
		v.turn.Broadcast()
		v.mu.Unlock()
		if refused || err != nil {
			v.d.release([]flight{{i: r.i}}) // not stored: back to the others
		}
		v.free <- r.b[:cap(r.b)]
	}
}

// next picks the next piece for a worker: the lowest-numbered piece nobody
// has requested, or, once there is none (the end game), a piece another
// holder is still sending that this worker has not requested, if it has
// fewer than maxDups such duplicates outstanding. A piece that has arrived
// and is being verified is not duplicated. ok is false when there is
// nothing to do; changed is then closed at the next change.
func (d *download) next(mine []flight, dups int) (i int, dup bool, changed <-chan struct{}, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.cursor < d.n && (d.state.has(d.cursor) || d.requesters[d.cursor] > 0) {
		d.cursor++
	}
	if d.cursor < d.n {
		i = d.cursor
		d.requesters[i]++
		d.cursor++
		return i, false, nil, true
	}
	if dups < maxDups {
		for i := range d.n {
			if d.state.has(i) || d.requesters[i] != 1 || d.arrived[i] || slices.ContainsFunc(mine, func(f flight) bool { return f.i == i }) {
				continue
			}
			d.requesters[i]++
			return i, true, nil, true
		}
	}
	return 0, false, d.changed, false
}

// release returns unanswered requests: pieces nobody else is fetching go
// back to the front of the queue.
func (d *download) release(fs []flight) {
	if len(fs) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range fs {
		d.requesters[f.i]--
		d.arrived[f.i] = false
		if !d.state.has(f.i) && d.requesters[f.i] == 0 {
			d.cursor = min(d.cursor, f.i)
		}
	}
	d.notify()
}

// arrive notes that piece i has been received and is being verified.
func (d *download) arrive(i int) {
	d.mu.Lock()
	d.arrived[i] = true
	d.mu.Unlock()
}

// notify wakes waiting workers. Called with mu held.
func (d *download) notify() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// store writes a verified piece in place and marks it done. A duplicate of
// a piece already done is discarded.
func (d *download) store(i int, b []byte, from string) error {
	d.mu.Lock()
	already := d.state.has(i)
	if already {
		d.requesters[i]--
		d.dups++
		d.notify()
		d.mu.Unlock()
		return nil
	}
	d.mu.Unlock()
	d.writeMu.Lock()
	_, err := d.f.WriteAt(b, int64(i)*d.pieceSize)
	d.writeMu.Unlock()
	if err != nil {
		return fmt.Errorf("%w %s: %w", errWrite, d.partial, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.requesters[i]--
	if d.state.has(i) {
		d.dups++
	} else {
		d.state.set(i)
		d.doneCount++
		d.doneBytes += int64(len(b))
		d.fetched++
		d.fetchBytes += int64(len(b))
		d.from[from]++
		if d.doneCount == d.n {
			close(d.complete)
		}
	}
	d.notify()
	return nil
}

// writebackEvery is how many verified bytes may gather in the page cache
// before the coordinator (on its next wake-up, at least every 50 ms) asks
// the kernel to start writing them to disk. Otherwise the kernel keeps a
// fast download's data in memory, up to vm.dirty_background_ratio of it,
// and fsync writes it while the download waits: measured on a 1 GiB
// download, the final fsync took 250–300 ms without checkpoints and
// 30–110 ms with one a second, against under 10 ms with this. The same
// idea as RocksDB's bytes_per_sync and PostgreSQL's backend_flush_after.
const writebackEvery = 8 << 20

// startWriteback starts the disk writes of the pieces stored since the
// last call, once there are writebackEvery bytes of them. Called by the
// coordinator.
func (d *download) startWriteback() {
	d.mu.Lock()
	done := d.doneBytes
	d.mu.Unlock()
	if done-d.lastKick < writebackEvery {
		return
	}
	d.lastKick = done
	startWriteback(d.f)
}

// checkpoint makes the verified pieces durable and records them: it copies
// the bitmap, fsyncs the partial file (so every piece in the copy is on
// disk), then atomically replaces the resume state. A crash at any point
// leaves a state that marks only pieces that are on disk.
func (d *download) checkpoint() error {
	d.mu.Lock()
	snap := *d.state
	snap.Bitmap = slices.Clone(d.state.Bitmap)
	count := d.doneCount
	d.mu.Unlock()
	if count == d.lastSaved {
		return nil
	}
	if err := d.f.Sync(); err != nil {
		return err
	}
	if err := writeFileAtomic(d.statePath, snap.encode(), 0o644); err != nil {
		return err
	}
	d.lastSaved = count
	return nil
}

// finish makes the complete file durable and moves it to dest without ever
// overwriting a file that appeared there meanwhile.
func (d *download) finish() error {
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", d.partial, err)
	}
	if err := d.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", d.partial, err)
	}
	d.f = nil
	// link+remove instead of rename: link fails if dest exists.
	if err := os.Link(d.partial, d.dest); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s appeared during the download; the complete file is in %s", ErrDestinationExists, d.dest, d.partial)
		}
		if _, serr := os.Lstat(d.dest); serr == nil {
			return fmt.Errorf("%w: %s appeared during the download; the complete file is in %s", ErrDestinationExists, d.dest, d.partial)
		}
		if err := os.Rename(d.partial, d.dest); err != nil {
			return fmt.Errorf("move %s to %s: %w", d.partial, d.dest, err)
		}
	} else if err := os.Remove(d.partial); err != nil {
		return fmt.Errorf("remove %s: %w", d.partial, err)
	}
	if err := os.Remove(d.statePath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.p.logger.Warn("cannot remove resume state", "path", d.statePath, "err", err)
	}
	return syncDir(filepath.Dir(d.dest))
}

// emit calls the progress callback if ProgressInterval has passed, or now
// if force.
func (d *download) emit(force bool) {
	if d.opts.Progress == nil {
		return
	}
	now := time.Now()
	if !force && now.Sub(d.lastEmit) < d.opts.ProgressInterval {
		return
	}
	d.lastEmit = now
	d.mu.Lock()
	pr := Progress{ID: d.id, Name: d.name, Size: d.size, Done: d.doneBytes, Pieces: d.n, PiecesDone: d.doneCount, Resumed: d.resumed, Holders: d.lastActive, Elapsed: now.Sub(d.start)}
	fetched := d.fetchBytes
	d.mu.Unlock()
	d.samples = append(d.samples, rateSample{now, fetched})
	for len(d.samples) > 2 && now.Sub(d.samples[1].at) >= 3*time.Second {
		d.samples = d.samples[1:]
	}
	if first := d.samples[0]; now.Sub(first.at) > 100*time.Millisecond {
		pr.Rate = float64(fetched-first.bytes) / now.Sub(first.at).Seconds()
	}
	d.opts.Progress(pr)
}

func (d *download) result() DownloadResult {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := DownloadResult{
		ID: d.id, Name: d.name, Path: d.dest, Size: d.size, PieceSize: d.pieceSize,
		Pieces: d.n, Fetched: d.fetched, Resumed: d.resumed, Duplicates: d.dups,
		FromHolders: make(map[string]int, len(d.from)), Dropped: slices.Clone(d.dropped),
		Duration: time.Since(d.start),
	}
	for k, v := range d.from {
		r.FromHolders[k] = v
	}
	sort.Strings(r.Dropped)
	return r
}

// rateLimiter paces requests to a rate in bytes per second, shared by all
// of a download's workers.
type rateLimiter struct {
	mu   sync.Mutex
	rate float64
	next time.Time
}

// ready reports whether a request may be sent now without waiting.
func (l *rateLimiter) ready() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.next.After(time.Now())
}

// wait blocks until n more bytes may be requested, or ctx ends.
func (l *rateLimiter) wait(ctx context.Context, n int64) error {
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	at := l.next
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	l.mu.Unlock()
	wait := time.Until(at)
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// seed makes a finished download part of the share folder and registers
// it. The file's hashes are handed to the cache, so it is not hashed again.
func (p *Peer) seed(ctx context.Context, dest string, size, pieceSize int64, hashes []byte) error {
	rel, err := filepath.Rel(p.store.dir, dest)
	if err != nil || !filepath.IsLocal(rel) {
		rel, err = p.linkIntoShare(dest, FileIDOf(leaves(hashes))[:8])
		if err != nil {
			return err
		}
	}
	st, err := p.store.root.Stat(rel)
	if err != nil {
		return err
	}
	e := cacheEntry{Path: filepath.ToSlash(rel), Size: size, ModTime: st.ModTime().UnixNano(), PieceSize: pieceSize, Hashes: hashes}
	if st.Size() != size {
		return fmt.Errorf("%s changed after the download", dest)
	}
	if err := p.rescan(ctx, &e); err != nil {
		return err
	}
	if p.servedFile(FileIDOf(leaves(hashes))) == nil {
		return fmt.Errorf("the index did not accept %s; see the log", dest)
	}
	return nil
}

// linkIntoShare hard-links dest into the share folder's top level (copying
// if the link fails, e.g. across file systems) under its base name, or
// under name-TAG if that is taken, and returns the new relative path.
func (p *Peer) linkIntoShare(dest, tag string) (string, error) {
	base := filepath.Base(dest)
	ext := filepath.Ext(base)
	for _, name := range []string{base, strings.TrimSuffix(base, ext) + "-" + tag + ext} {
		target := filepath.Join(p.store.dir, name)
		if _, err := os.Lstat(target); err == nil {
			continue
		}
		if err := os.Link(dest, target); err == nil {
			return name, nil
		}
		if err := copyFile(dest, target); err != nil {
			return "", fmt.Errorf("copy into the share folder: %w", err)
		}
		return name, nil
	}
	return "", fmt.Errorf("the share folder already has files named like %s", base)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	return out.Close()
}
