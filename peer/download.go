package peer

// This file owns the Download API (its options, progress and result) and
// the download's lifecycle: Peer.Download checks its arguments and the
// peer's state, sets up a download, runs it, and seeds. The rest of a
// download lives in files named by who owns their state:
//
//	coordinator.go  the goroutine running Download: holders, workers, progress
//	pieces.go       the piece table, behind its own lock
//	fetch.go        one worker per holder: its connection and its requests
//	verify.go       each worker's verifier goroutines: hash, then store
//	partial.go      the partial file, its checkpoints, the final move
//	ratelimit.go    the rate limit all workers share
//	seed.go         sharing the finished file
//
// The download struct's own fields are set by the coordinator before any
// worker starts and are read-only afterwards, so any goroutine may read
// them; the parts with other owners are named at each field.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"fileshare/client"
	"fileshare/fsm"
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
	// MaxHolders caps the holders downloaded from at once, each over one
	// connection, opened as the download needs it; the others stand by
	// for one that fails or is dropped. Zero means 8.
	MaxHolders int
	// ReadLevel is the consistency of the download's holder lookups, the
	// first and every refresh. Zero means client.ReadLinearizable; with
	// client.ReadStale the download needs only one reachable master, not
	// a majority (the holders it learns may be out of date: one that has
	// gone just fails and is retried, as any holder that stops answering).
	ReadLevel client.ReadLevel
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
	// Paths counts the holders reached so far by each path (PathDirect,
	// PathReversal, PathPunch, PathRelay).
	Paths map[string]int
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
	// FetchedBytes is the bytes of the Fetched pieces.
	FetchedBytes int64 `json:"fetched_bytes"`
	Resumed      int   `json:"resumed"`
	// Duplicates counts pieces received twice (end-game requests sent to
	// two holders); the second copy is discarded.
	Duplicates int `json:"duplicates"`
	// FromHolders counts verified pieces per holder peer ID.
	FromHolders map[string]int `json:"from_holders"`
	// Dropped lists holders dropped for sending data that failed
	// verification.
	Dropped []string `json:"dropped,omitempty"`
	// Paths names, per holder peer ID, the path its last connection took:
	// PathDirect, PathReversal, PathPunch or PathRelay.
	Paths map[string]string `json:"paths,omitempty"`
	// Seeded is true if this peer now holds and serves the file.
	Seeded   bool          `json:"seeded"`
	Duration time.Duration `json:"-"` // in JSON: duration_ms (see MarshalJSON)
}

// MarshalJSON encodes the result with its duration in milliseconds, as
// duration_ms: the one unit every JSON output of the CLI uses.
func (r DownloadResult) MarshalJSON() ([]byte, error) {
	type fields DownloadResult // without this method
	return json.Marshal(struct {
		fields
		DurationMillis int64 `json:"duration_ms"`
	}{fields(r), r.Duration.Milliseconds()})
}

// Download fetches the file fileID into dest, from every holder at once,
// verifying each piece against the file's Merkle root, and returns when the
// file is complete and renamed to dest (or seeded, with opts.Seed).
//
// It looks up the holders (at opts.ReadLevel), fetches the piece-hash
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
// run. Download blocks, on the caller's goroutine, which Close waits for;
// several may run at once, to different dests.
func (p *Peer) Download(ctx context.Context, fileID, dest string, opts DownloadOptions) (DownloadResult, error) {
	if err := fsm.FileID(fileID).Validate(); err != nil {
		return DownloadResult{}, fmt.Errorf("download %q: %w", fileID, err)
	}
	if opts.Seed && p.store == nil {
		return DownloadResult{}, fmt.Errorf("%w: seeding needs a peer with a share folder", ErrConfig)
	}
	level, err := client.ParseReadLevel(string(opts.ReadLevel))
	if err != nil {
		return DownloadResult{}, fmt.Errorf("download %s: %w", fileID, err)
	}
	opts.ReadLevel = level
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = 250 * time.Millisecond
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = 30 * time.Second
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = time.Second
	}
	if opts.MaxHolders <= 0 {
		opts.MaxHolders = 8
	}
	if !p.enter() {
		return DownloadResult{}, ErrClosed
	}
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
	if err != nil {
		p.counters.downloadsFail.Add(1)
	} else {
		p.counters.downloadsOK.Add(1)
		p.counters.bytesDownloaded.Add(uint64(res.FetchedBytes))
	}
	return res, err
}

// download is the state of one Download call.
type download struct {
	p         *Peer
	opts      DownloadOptions
	id, name  string
	root      [32]byte
	dest      string
	size      int64
	pieceSize int64
	n         int
	window    int          // piece requests each worker may have outstanding
	hashes    [][32]byte   // set by fetchHashes, before any worker starts
	limiter   *rateLimiter // nil without a rate limit
	start     time.Time
	// dialStream opens a piece stream to a holder (Peer.dialPieces; a
	// fake in unit tests).
	dialStream func(addr, peerID string, timeout time.Duration) (net.Conn, error)
	paths      pathLog // the path each holder's connection took

	file   *partialFile // see partial.go for who may call what
	pieces *pieceTable  // set after re-verification, before any worker starts; guards itself
	c      coordState   // the coordinator's alone
}

func (d *download) pieceLen(i int) int64 { return pieceLen(d.size, d.pieceSize, i) }

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
	look, err := p.client.Lookup(lctx, fileID, opts.ReadLevel)
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
		size: meta.Size, pieceSize: meta.PieceSize, n: n,
		c: coordState{holders: map[string]*holder{}}, start: start,
	}
	d.dialStream = func(addr, id string, timeout time.Duration) (net.Conn, error) {
		conn, path, err := p.dialHolder(addr, id, timeout)
		if err == nil {
			d.paths.set(id, path)
		}
		return conn, err
	}
	root, _ := hex.DecodeString(fileID)
	copy(d.root[:], root)
	d.window = opts.MaxInFlight
	if d.window <= 0 {
		d.window = int(min(max((4<<20)/d.pieceSize, 2), 32))
	}
	if opts.RateLimit > 0 {
		d.limiter = newRateLimiter(opts.RateLimit)
		// A slow limit must not pass for a stall: allow three pieces' time.
		d.opts.StallTimeout = max(d.opts.StallTimeout, time.Duration(3*float64(d.pieceSize)/float64(opts.RateLimit)*float64(time.Second)))
	}
	d.mergeHolders(look.Holders)
	file, verified, err := openPartial(dest, d.root, d.size, d.pieceSize, p.logger)
	if err != nil {
		return DownloadResult{}, err
	}
	d.file = file
	defer d.file.close()
	if err := d.fetchHashes(ctx); err != nil {
		// Pieces an earlier run verified stay for the next one.
		if verified == nil || verified.count() == 0 {
			d.file.discardIfEmpty(nil)
		}
		return d.result(), err
	}
	if err := d.file.reverify(verified, d.hashes); err != nil {
		return d.result(), err
	}
	d.pieces = newPieceTable(verified)
	d.emit(true)
	if err := d.run(ctx); err != nil {
		if cerr := d.file.checkpoint(d.pieces); cerr != nil {
			p.logger.Warn("cannot save resume state", "path", d.file.statePath, "err", cerr)
		}
		d.emit(true)
		d.file.discardIfEmpty(d.pieces)
		return d.result(), err
	}
	if err := d.file.finish(); err != nil {
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

// result describes the download so far. Called by the coordinator.
func (d *download) result() DownloadResult {
	r := DownloadResult{
		ID: d.id, Name: d.name, Path: d.dest, Size: d.size, PieceSize: d.pieceSize,
		Pieces: d.n, FromHolders: map[string]int{}, Dropped: slices.Clone(d.c.dropped),
		Duration: time.Since(d.start),
	}
	if d.pieces != nil {
		st := d.pieces.stats()
		r.Fetched, r.FetchedBytes, r.Resumed, r.Duplicates = st.Fetched, st.FetchBytes, st.Resumed, st.Dups
		r.FromHolders = d.pieces.fromHolders()
	}
	sort.Strings(r.Dropped)
	r.Paths = d.paths.all()
	return r
}
