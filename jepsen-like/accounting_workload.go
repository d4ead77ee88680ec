package jepsenlike

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"fileshare/btclient"
	"fileshare/client"
	"fileshare/fsm"
	"fileshare/tracker"
	"fileshare/transport"
)

// The accounting workload exercises the private tracker's books: the
// cluster runs in private mode with a few members, and every worker runs
// a few BitTorrent peers, each belonging to a member, that announce
// growing cumulative upload and download counters with the member's
// passkey (both HTTP URL forms, and UDP with BEP 41 URL data when UDP
// faults are on) to a master drawn at random for every announce. Peers
// complete, stop, and restart (counters back to zero: after a stop, or
// on the same record right after a committed completion, as a client
// restarted without a clean stop).
//
// What is checked (check_accounting.go): after the final heal and a final
// announce of every peer still in its swarm, each member's credited
// totals on every master equal exactly the counter growth its peers
// reported in acknowledged announces — per session of a peer, the last
// acknowledged counters minus the first — never more (nothing credited
// twice) and never less (nothing lost), and nothing was clamped.
//
// A client's discipline that makes "exactly" well defined (a real client
// keeps it too, by announcing minutes apart):
//   - a session's counters grow only after one of its announces was
//     acknowledged, so the baseline the tracker takes is the first
//     acknowledged counters whichever copy of the first announce landed;
//   - after an announce whose outcome is unknown, the peer's counters do
//     not grow (nor restart) for staleAfter: that request may still be
//     processed late by a master that was paused or cut off, and a late
//     report of lower counters is indistinguishable from a client
//     restart; after a UDP announce the peer is quiet for udpQuiet, as in
//     the tracker workload;
//   - a restart on the same record follows a committed completion, whose
//     credit is in the books when it is acknowledged; a peer whose stop
//     was retried after an unknown outcome starts its next session as a
//     fresh client (a stop of the old session processed late would read
//     as a stop of the new one).

// acctMember is one member of the private tracker.
type acctMember struct {
	Name    string
	Passkey string
}

// acctPeer is one simulated client of one member in one swarm.
type acctPeer struct {
	id       string
	port     uint16
	key      int // the torrent
	member   int
	up, down uint64
	active   bool // its last membership event was acknowledged and was not a stop
	stopping bool // a stop is being retried
	seeder   bool
	growOK   bool // an announce of this session was acknowledged
	// resetOK: the last op was an acknowledged completion (committed, so
	// credited): a restart on the same record loses nothing.
	resetOK    bool
	quietUntil time.Time
	staleUntil time.Time
}

type accountingWorkload struct {
	btClients
	members    []acctMember
	staleAfter time.Duration

	mu       sync.Mutex
	nextPeer int
	peers    []*acctPeer   // every peer ever, for the final announces
	books    []MemberBooks // the final reads (final)
}

// accountingMembers is how many members the workload's peers belong to.
const accountingMembers = 4

func newAccountingWorkload(masters []trackerMaster, torrents int, rec *recorder, pace *pacer, seed int64, opTimeout, staleAfter time.Duration, newProcess func() int) *accountingWorkload {
	return &accountingWorkload{
		btClients:  newBTClients(masters, torrents, rec, pace, seed, opTimeout, newProcess),
		staleAfter: staleAfter,
	}
}

// setup puts the cluster in private mode, allows the torrents and adds
// the members, retrying each step until ctx ends.
func (w *accountingWorkload) setup(ctx context.Context, admin *client.Client) error {
	retry := func(what string, fn func(context.Context) error) error {
		for {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := fn(actx)
			cancel()
			if err == nil {
				return nil
			}
			if !sleepCtx(ctx, 200*time.Millisecond) {
				return fmt.Errorf("accounting setup: %s: %w", what, err)
			}
		}
	}
	var hashes []string
	for _, t := range w.torrents {
		hashes = append(hashes, fmt.Sprintf("%x", t.Hash[:]))
	}
	if err := retry("allow the torrents", func(ctx context.Context) error {
		_, err := admin.TrackerPolicy(ctx, client.TrackerPolicyRequest{Allow: hashes})
		return err
	}); err != nil {
		return err
	}
	if err := retry("set private mode", func(ctx context.Context) error { return admin.TrackerSetMode(ctx, client.TrackerModePrivate) }); err != nil {
		return err
	}
	for i := range accountingMembers {
		name := fmt.Sprintf("member%d", i+1)
		var m client.TrackerMember
		if err := retry("add "+name, func(ctx context.Context) error {
			var err error
			if m, err = admin.TrackerUserAdd(ctx, name); errors.Is(err, fsm.ErrMemberExists) {
				// An earlier attempt applied, its reply lost: a new
				// passkey, known this time.
				m, err = admin.TrackerUserRotate(ctx, name)
			}
			return err
		}); err != nil {
			return err
		}
		w.members = append(w.members, acctMember{Name: name, Passkey: m.Passkey})
	}
	return nil
}

func (w *accountingWorkload) freshPeer(rng *rand.Rand) *acctPeer {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.nextPeer++
	n := w.nextPeer
	p := &acctPeer{
		id:     fmt.Sprintf("-FSJA01-%012d", n),
		port:   uint16(10000 + n%50000),
		key:    rng.IntN(len(w.torrents)),
		member: rng.IntN(len(w.members)),
	}
	w.peers = append(w.peers, p)
	return p
}

func (w *accountingWorkload) run(ctx context.Context, stop <-chan struct{}, concurrency int) {
	runWorkers(concurrency, func(i int) { w.client(ctx, stop, i) })
}

// maxGrowth bounds one announce's counter growth and growthGap is the
// least time between two announces of one peer: at most 128 MiB/s, far
// below the tracker's rate clamp (1 GiB/s by default), which measures
// from when the master heard the last report. Back-to-back announces a
// fraction of a millisecond apart would be clamped, as a real client's
// would, and the checker would count the clamped bytes as lost.
const (
	maxGrowth = 256 << 10
	growthGap = 2 * time.Millisecond
)

func (w *accountingWorkload) client(ctx context.Context, stop <-chan struct{}, worker int) {
	rng := rand.New(rand.NewPCG(uint64(w.seed), uint64(worker)+2<<32))
	process := w.newProcess()
	peers := workerPeers(rng, w.freshPeer)
	for {
		slot, ok := nextTurn(ctx, stop, w.pace, rng, peers, func(p *acctPeer) time.Time { return p.quietUntil })
		if !ok {
			return
		}
		p := peers[slot]
		canChange := p.growOK && time.Now().After(p.staleUntil)
		op := Op{Process: process, Worker: worker, Peer: p.id, Key: p.key, Member: w.members[p.member].Name}
		r := rng.IntN(100)
		switch {
		case !p.active:
			op.Type = OpStarted
		case p.stopping:
			op.Type = OpStopped
		case !canChange:
			op.Type = OpReannounce
		case p.resetOK && r < 30:
			// A client restart without a clean stop: the same record,
			// counters from zero.
			p.up, p.down, p.growOK = 0, 0, false
			op.Type = OpStarted
		case r < 75:
			p.up += uint64(rng.IntN(maxGrowth))
			p.down += uint64(rng.IntN(maxGrowth))
			op.Type = OpReannounce
			if !p.seeder && r < 12 {
				op.Type = OpCompleted
			}
		default:
			p.up += uint64(rng.IntN(maxGrowth))
			p.stopping = true
			op.Type = OpStopped
		}
		p.resetOK = false
		op.Uploaded, op.Downloaded = p.up, p.down
		m := rng.IntN(len(w.masters))
		if w.masters[m].UDP != "" && rng.IntN(2) == 0 {
			op = w.announceUDP(ctx, op, m, p)
			p.quietUntil = time.Now().Add(udpQuiet)
		} else {
			op = w.announceHTTP(ctx, op, m, p, rng.IntN(2) == 0)
			p.quietUntil = time.Now().Add(growthGap)
		}
		if op.Outcome != OK {
			p.staleUntil = time.Now().Add(w.staleAfter)
			if op.Outcome == Info {
				process = w.newProcess()
			}
			continue
		}
		p.growOK = true
		switch op.Type {
		case OpStarted:
			p.active = true
		case OpCompleted:
			p.seeder, p.resetOK = true, true
		case OpStopped:
			// A restart after a clean stop: the next session starts
			// from zero, half the time as a fresh client, and always as
			// one while an earlier copy of this stop may still be in
			// flight: processed late, it would read as the new
			// session's stop, with growth, and no tracker can tell.
			p.active, p.stopping, p.growOK = false, false, false
			p.up, p.down = 0, 0
			if rng.IntN(2) == 0 || time.Now().Before(p.staleUntil) {
				peers[slot] = w.freshPeer(rng)
			}
		}
	}
}

// announceHTTP announces op to master m over HTTP with the member's
// passkey in the path, as /PASSKEY/announce or (suffix) /announce/PASSKEY.
// A refusal is a failure: the private tracker refuses before any change.
func (w *accountingWorkload) announceHTTP(ctx context.Context, op Op, m int, p *acctPeer, suffix bool) Op {
	tm := w.masters[m]
	op.Master = tm.ID
	base := strings.TrimSuffix(tm.URL, "/announce")
	pk := w.members[p.member].Passkey
	u := base + "/" + pk + "/announce"
	if suffix {
		u = base + "/announce/" + pk
	}
	octx, cancel := context.WithTimeout(ctx, w.opTimeout)
	defer cancel()
	op.Invoke = w.rec.since()
	r, err := btclient.AnnounceHTTP(octx, w.hc, u, w.btAnnounce(op, p.port, p.seeder))
	op.Complete = w.rec.since()
	var fe *btclient.FailureError
	switch {
	case err == nil:
		op.Outcome = OK
		op.Swarm = r.Complete + r.Incomplete
	case errors.As(err, &fe) && strings.Contains(fe.Reason, "passkey"):
		op.Outcome, op.Error = Fail, err.Error()
	default:
		// A failure reason may be a relay that timed out while the
		// change may still commit: unknown.
		op.Outcome, op.Error = Info, err.Error()
	}
	return w.rec.add(op)
}

// announceUDP announces op to master m over UDP through its proxy, the
// passkey in BEP 41 URL data.
func (w *accountingWorkload) announceUDP(ctx context.Context, op Op, m int, p *acctPeer) Op {
	op, _ = w.sendUDP(ctx, op, m, "/"+w.members[p.member].Passkey+"/announce", w.btAnnounce(op, p.port, p.seeder))
	return w.rec.add(op)
}

// finalAnnounces waits until no unknown announce can still be processed
// late, then announces every peer still in its swarm (or stopping) once
// more with its counters, over HTTP to the masters in turn, until
// acknowledged: the books then hold every peer's last counters.
func (w *accountingWorkload) finalAnnounces(ctx context.Context) error {
	w.mu.Lock()
	peers := append([]*acctPeer(nil), w.peers...)
	w.mu.Unlock()
	var last time.Time
	for _, p := range peers {
		if p.staleUntil.After(last) {
			last = p.staleUntil
		}
	}
	if d := time.Until(last); d > 0 && !sleepCtx(ctx, d) {
		return ctx.Err()
	}
	for i, p := range peers {
		if !p.active {
			continue
		}
		typ := OpReannounce
		if p.stopping {
			typ = OpStopped
		}
		for try := 0; ; try++ {
			op := Op{Process: 0, Worker: -1, Type: typ, Key: p.key, Peer: p.id, Member: w.members[p.member].Name,
				Uploaded: p.up, Downloaded: p.down, Final: true}
			if op = w.announceHTTP(ctx, op, (i+try)%len(w.masters), p, try%2 == 1); op.Outcome == OK {
				break
			}
			if !sleepCtx(ctx, 200*time.Millisecond) {
				return fmt.Errorf("the final announce of peer %s did not succeed: %s", p.id, op.Error)
			}
		}
	}
	return nil
}

// MemberBooks is one member's credited totals as one master reads them.
type MemberBooks struct {
	Master        string `json:"master"`
	Member        string `json:"member"`
	Uploaded      uint64 `json:"uploaded"`
	Downloaded    uint64 `json:"downloaded"`
	RawUploaded   uint64 `json:"raw_uploaded"`
	RawDownloaded uint64 `json:"raw_downloaded"`
	Suspicious    uint64 `json:"suspicious"`
	// Swarms is the raw [upload, download] credited per swarm (torrent
	// key), for the checker to say where books went wrong.
	Swarms map[int][2]uint64 `json:"swarms,omitempty"`
	Error  string            `json:"error,omitempty"`
}

// readBooks reads every member's books from every master (each master's
// own applied state), polling until every master's totals equal want or
// budget passes; it returns the last reads.
func (w *accountingWorkload) readBooks(ctx context.Context, masters []string, ids []string, creds *transport.TLS, want map[string][2]uint64, budget time.Duration) []MemberBooks {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var out []MemberBooks
	for {
		out = out[:0]
		done := true
		for i, addr := range masters {
			c, err := client.New(client.Config{Masters: []string{addr}, AttemptTimeout: time.Second, TLS: creds})
			for _, m := range w.members {
				b := MemberBooks{Master: ids[i], Member: m.Name}
				if err == nil {
					rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
					var books client.TrackerBooks
					books, err = c.TrackerUserBooks(rctx, m.Name, client.ReadStale)
					rcancel()
					b.Uploaded, b.Downloaded, b.RawUploaded, b.RawDownloaded, b.Suspicious = books.Uploaded, books.Downloaded, books.RawUploaded, books.RawDownloaded, books.Suspicious
					b.Swarms = w.swarmBooks(books.Torrents)
				}
				if err != nil {
					b.Error = err.Error()
					err = nil
				}
				if b.Error != "" || [2]uint64{b.RawUploaded, b.RawDownloaded} != want[m.Name] {
					done = false
				}
				out = append(out, b)
			}
			if c != nil {
				c.Close()
			}
		}
		if done || !sleepCtx(ctx, 500*time.Millisecond) {
			return out
		}
	}
}

// swarmBooks maps a member's per-torrent rows to the workload's torrent
// keys (a row of a torrent the workload does not know gets key -1).
func (w *accountingWorkload) swarmBooks(rows []client.TrackerBookRow) map[int][2]uint64 {
	if len(rows) == 0 {
		return nil
	}
	out := make(map[int][2]uint64, len(rows))
	for _, r := range rows {
		key := -1
		for _, t := range w.torrents {
			if hex.EncodeToString(t.Hash[:]) == r.InfoHash {
				key = t.Key
			}
		}
		e := out[key]
		out[key] = [2]uint64{e[0] + r.RawUploaded, e[1] + r.RawDownloaded}
	}
	return out
}

// startAccounting builds the accounting workload and sets the cluster up
// for it (private mode, allowed torrents, members).
func startAccounting(ctx context.Context, cfg Config, tms []trackerMaster, rec *recorder, wl *workload, admin *client.Client) (*accountingWorkload, error) {
	// A request may wait in a paused master's socket for the longest
	// fault (3/4 of an interval), then take up to the tracker's backend
	// timeout to be relayed and applied.
	stale := cfg.Interval + tracker.BackendTimeout + 2*cfg.OpTimeout
	a := newAccountingWorkload(tms, cfg.Torrents, rec, wl.pace, cfg.Seed, cfg.OpTimeout, stale, wl.newProcess)
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := a.setup(sctx, admin); err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

// final makes every peer's last announce and reads the books from every
// master; it returns the problems it met. The books are kept for check.
func (w *accountingWorkload) final(ctx context.Context, cl *cluster, creds *transport.TLS) []string {
	var problems []string
	if err := w.finalAnnounces(ctx); err != nil {
		problems = append(problems, err.Error())
	}
	want := ExpectedCredits(w.rec.history())
	w.books = w.readBooks(ctx, cl.advertised(), cl.ids(), creds, want, 60*time.Second)
	return problems
}

// check runs the accounting checker and writes its evidence to path.
func (w *accountingWorkload) check(history []Op, path string) CheckerResult {
	r := CheckAccounting(history, w.books)
	if err := writeJSON(path, r); err != nil {
		r.Explanation += fmt.Sprintf(" (and %s could not be written: %v)", path, err)
	}
	return CheckerResult{r.Verdict, r.Explanation}
}
