package jepsenlike

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/transport"
)

// fileSpec is one of the workload's files. Every client registers it with
// the same metadata, so registrations never conflict.
type fileSpec struct {
	Key  int
	ID   string
	Name string
}

const (
	fileSize  = 1 << 20
	pieceSize = 1 << 18
)

// makeFiles returns K files with stable IDs and names. Names are fixed
// width, so searching for one name matches exactly that file.
func makeFiles(k int) []fileSpec {
	out := make([]fileSpec, k)
	for i := range out {
		sum := sha256.Sum256(fmt.Appendf(nil, "fileshare-jepsen-file-%d", i))
		out[i] = fileSpec{Key: i, ID: hex.EncodeToString(sum[:]), Name: fmt.Sprintf("jepsen-file-%05d", i)}
	}
	return out
}

// recorder collects the history. add assigns each op its index, keeps it,
// and appends it to history.jsonl at once, so a run that dies still
// leaves its history behind. Safe for concurrent use.
type recorder struct {
	t0  time.Time
	mu  sync.Mutex
	ops []Op
	bw  *bufio.Writer
	enc *json.Encoder
	err error
}

func newRecorder(t0 time.Time, w io.Writer) *recorder {
	r := &recorder{t0: t0}
	if w != nil {
		r.bw = bufio.NewWriter(w)
		r.enc = json.NewEncoder(r.bw)
	}
	return r
}

// since is the recorder's clock: nanoseconds since the run began
// (monotonic).
func (r *recorder) since() int64 { return int64(time.Since(r.t0)) }

func (r *recorder) add(op Op) Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	op.Index = len(r.ops)
	r.ops = append(r.ops, op)
	if r.enc != nil && r.err == nil {
		r.err = r.enc.Encode(op)
	}
	return op
}

func (r *recorder) history() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ops)
}

func (r *recorder) flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bw != nil && r.err == nil {
		r.err = r.bw.Flush()
	}
	return r.err
}

// pacer is a token bucket shared by all clients: on average rate ops per
// second, with bursts of up to burst ops after a quiet spell. rate <= 0
// means unlimited. Safe for concurrent use.
type pacer struct {
	mu    sync.Mutex
	every time.Duration
	burst int
	next  time.Time
	// gate is closed while ops may start; hold replaces it with an open
	// (blocking) one, release closes it.
	gate chan struct{}
}

func newPacer(rate float64, burst int) *pacer {
	p := &pacer{burst: max(burst, 1), gate: make(chan struct{})}
	close(p.gate)
	if rate > 0 {
		p.every = time.Duration(float64(time.Second) / rate)
	}
	return p
}

// hold keeps every later wait from returning until release: no new op
// starts (the nemesis compares the masters while nothing is written).
// Ops already past wait run to completion.
func (p *pacer) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
	default: // already held
	}
}

// release undoes hold; a wait blocked by it returns.
func (p *pacer) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// wait blocks until the caller may issue one op (its slot of the rate has
// come and no hold is in force); false if stop closed or ctx ended first.
func (p *pacer) wait(ctx context.Context, stop <-chan struct{}) bool {
	if !p.slot(ctx, stop) {
		return false
	}
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	select {
	case <-gate:
		return true
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	}
}

// slot waits for the caller's turn under the rate.
func (p *pacer) slot(ctx context.Context, stop <-chan struct{}) bool {
	if p.every == 0 {
		select {
		case <-stop:
			return false
		case <-ctx.Done():
			return false
		default:
			return true
		}
	}
	p.mu.Lock()
	now := time.Now()
	slot := p.next
	if floor := now.Add(-time.Duration(p.burst-1) * p.every); slot.Before(floor) {
		slot = floor
	}
	p.next = slot.Add(p.every)
	p.mu.Unlock()
	if d := time.Until(slot); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-stop:
			return false
		case <-ctx.Done():
			return false
		}
	}
	select {
	case <-stop:
		return false
	default:
		return true
	}
}

// workload drives C concurrent clients against the cluster.
type workload struct {
	masters        []string
	files          []fileSpec
	rec            *recorder
	pace           *pacer
	seed           int64
	opTimeout      time.Duration
	attemptTimeout time.Duration
	// ca verifies the masters when they run with TLS; nil: plaintext.
	ca *transport.TLS

	mu      sync.Mutex
	process int // the last process number handed out
}

func (w *workload) newProcess() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.process++
	return w.process
}

// newClient returns the client for a worker's new process. Workers with
// an even number use the whole master list, as peers do, and so exercise
// the client's failover. Odd workers are pinned to one master per
// process, drawn at random, as a Jepsen client is bound to one node, so
// that every master's own answers are exercised, a minority's included: a
// failover client leaves a partitioned master at its first timeout and
// never sees what that master serves meanwhile. (Moving to "the next"
// master instead would herd every pinned worker onto whichever master the
// faults happened to spare.)
//
// With TLS the client presents id's key (nil: a fresh key, for reads), so
// a client speaks as one peer: a new identity needs a new client.
func (w *workload) newClient(rng *rand.Rand, worker int, id *client.Identity) (*client.Client, error) {
	masters := w.masters
	if worker%2 == 1 {
		masters = []string{w.masters[rng.IntN(len(w.masters))]}
	}
	cfg := client.Config{Masters: masters, AttemptTimeout: w.attemptTimeout}
	if w.ca != nil {
		if id == nil {
			fresh, err := client.NewIdentity()
			if err != nil {
				return nil, err
			}
			id = &fresh
		}
		creds, err := id.TLS(w.ca)
		if err != nil {
			return nil, err
		}
		cfg.TLS = creds
	}
	return client.New(cfg)
}

// identity draws a peer identity from rng, so a seed replays the same
// peers.
func identity(rng *rand.Rand) client.Identity {
	var seed [ed25519.SeedSize]byte
	for i := range seed {
		seed[i] = byte(rng.Uint32())
	}
	return client.IdentityFromKey(ed25519.NewKeyFromSeed(seed[:]))
}

// run runs concurrency clients until stop is closed, then waits for their
// ops in flight to finish. Ops use ctx, so cancelling ctx (Ctrl-C) cuts
// them short: they end as info.
func (w *workload) run(ctx context.Context, stop <-chan struct{}, concurrency int) {
	var wg sync.WaitGroup
	for i := range concurrency {
		wg.Add(1)
		go func() { defer wg.Done(); w.client(ctx, stop, i) }()
	}
	wg.Wait()
}

// client is one worker. It acts as one peer at a time: it registers,
// unregisters, looks up and searches files, joining before its first
// write. When an op's
// outcome is unknown it abandons that peer and its connections and goes
// on as a new process with a new peer, as a Jepsen client does.
func (w *workload) client(ctx context.Context, stop <-chan struct{}, worker int) {
	rng := rand.New(rand.NewPCG(uint64(w.seed), uint64(worker)+1))
	var (
		mc      *client.Client
		id      *client.Identity
		process int
		held    map[int]bool // files this peer holds
		joined  bool
	)
	defer func() {
		if mc != nil {
			mc.Close()
		}
	}()
	for {
		if mc == nil {
			process = w.newProcess()
		}
		if id == nil {
			// A new peer, and a client that speaks as it.
			ident := identity(rng)
			if mc != nil {
				mc.Close()
			}
			var err error
			if mc, err = w.newClient(rng, worker, &ident); err != nil {
				return // the address list was validated when the run began
			}
			id = &ident
			held, joined = map[int]bool{}, false
		}
		if !w.pace.wait(ctx, stop) {
			return
		}
		op := w.pick(rng, process, worker, id.PeerID, held)
		var err error
		if op.Type.IsWrite() && !joined {
			// A peer joins before its first write; reads need no identity,
			// so a client keeps reading from a master that cannot write.
			op = Op{Process: process, Worker: worker, Peer: id.PeerID, Type: OpJoin, Key: -1}
		}
		op, err = w.do(ctx, mc, op, id)
		switch {
		case op.Outcome != OK:
		case op.Type == OpJoin:
			joined = true
		case op.Type == OpRegister:
			held[op.Key] = true
		case op.Type == OpUnregister:
			delete(held, op.Key)
		}
		switch {
		case op.Outcome == Info:
			// Unknown outcome: this process is done; start afresh.
			mc.Close()
			mc, id = nil, nil
		case errors.Is(err, fsm.ErrUnknownPeer):
			id = nil // the index forgot this peer: join as a new one
		}
	}
}

// pick draws the next op: 30 % register, 20 % unregister (mostly of a
// file this peer holds), 40 % lookup, 10 % search.
func (w *workload) pick(rng *rand.Rand, process, worker int, peerID string, held map[int]bool) Op {
	op := Op{Process: process, Worker: worker, Peer: peerID}
	key := rng.IntN(len(w.files))
	switch r := rng.IntN(100); {
	case r < 30:
		op.Type = OpRegister
	case r < 50:
		op.Type = OpUnregister
		if len(held) > 0 && rng.IntN(5) > 0 {
			keys := make([]int, 0, len(held))
			for k := range held {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			key = keys[rng.IntN(len(keys))]
		}
	case r < 90:
		op.Type = OpLookup
	default:
		op.Type = OpSearch
	}
	op.Key = key
	op.File = w.files[key].ID
	return op
}

// do executes op with a deadline of opTimeout, records it, and returns it
// with the client's error.
func (w *workload) do(ctx context.Context, mc *client.Client, op Op, id *client.Identity) (Op, error) {
	octx, cancel := context.WithTimeout(ctx, w.opTimeout)
	defer cancel()
	op.Invoke = w.rec.since()
	var err error
	switch op.Type {
	case OpJoin:
		_, err = mc.Join(octx, *id, fmt.Sprintf("127.0.0.1:%d", 20000+op.Process%40000))
	case OpRegister:
		f := w.files[op.Key]
		_, err = mc.Register(octx, *id, []client.FileEntry{{ID: f.ID, Name: f.Name, Size: fileSize, PieceSize: pieceSize}})
	case OpUnregister:
		_, err = mc.Unregister(octx, *id, []string{w.files[op.Key].ID})
	case OpLookup:
		var r client.LookupReply
		r, err = mc.Lookup(octx, w.files[op.Key].ID, client.ReadLinearizable)
		if err == nil {
			op.Holders = holderIDs(r)
		}
	case OpSearch:
		var r client.SearchReply
		r, err = mc.Search(octx, w.files[op.Key].Name, 10, client.ReadLinearizable)
		if err == nil {
			for _, f := range r.Files {
				if f.ID == w.files[op.Key].ID {
					op.Count = f.Holders
				}
			}
		}
	}
	op.Complete = w.rec.since()
	op.Outcome = classify(err)
	if err != nil {
		op.Error = err.Error()
		op.Holders, op.Count = nil, 0
	}
	return w.rec.add(op), err
}

func holderIDs(r client.LookupReply) []string {
	if !r.Found {
		return nil
	}
	ids := make([]string, 0, len(r.Holders))
	for _, h := range r.Holders {
		ids = append(ids, h.PeerID)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// classify maps a client error to an outcome. Only errors that say the
// request itself was refused, so it certainly did not apply, are Fail;
// everything else (the deadline passed, a connection broke, an error
// without a known code) leaves the outcome unknown: Info. Calling an
// unknown outcome a failure would make the checkers blame the cluster for
// a write the harness misjudged.
func classify(err error) Outcome {
	switch {
	case err == nil:
		return OK
	case errors.Is(err, fsm.ErrUnknownPeer), errors.Is(err, fsm.ErrInvalid), errors.Is(err, fsm.ErrUnauthorized),
		errors.Is(err, fsm.ErrConflict), errors.Is(err, transport.ErrBadRequest), errors.Is(err, transport.ErrUnknownMethod),
		errors.Is(err, client.ErrBadReadLevel),
		// Every master refused the connection: the request reached none.
		errors.Is(err, client.ErrNothingListens):
		return Fail
	}
	return Info
}

// finalReads reads every file at the linearizable level after the cluster
// healed, retrying each until it succeeds or the budget runs out. The
// reads are recorded as process 0 with Final set.
func (w *workload) finalReads(ctx context.Context, budget time.Duration) error {
	mc, err := w.newClient(nil, 0, nil)
	if err != nil {
		return err
	}
	defer mc.Close()
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var missing []int
	for _, f := range w.files {
		for {
			op, _ := w.do(ctx, mc, Op{Process: 0, Worker: -1, Type: OpLookup, Key: f.Key, File: f.ID, Final: true}, nil)
			if op.Outcome == OK {
				break
			}
			if !sleepCtx(ctx, 100*time.Millisecond) {
				missing = append(missing, f.Key)
				break
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the final read of %d files did not succeed within %v", len(missing), budget)
	}
	return nil
}
