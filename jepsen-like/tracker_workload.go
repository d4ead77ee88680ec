package jepsenlike

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"fileshare/tracker"
)

// The tracker workload: every worker runs a few simulated BitTorrent
// peers, each with its own peer_id and port, and announces them over
// HTTP (started, re-announce, completed, stopped) to a master drawn at
// random for every op, so every master's answers, a partitioned
// minority's included, are exercised. All peers announce from the
// harness's loopback address, so the masters run with a high
// --tracker-max-peers-per-ip; their peer lifetime outlasts the run and the
// final reads (Config.PeerLease), so no entry may expire and the checker
// needs no clock: an entry is present at the end exactly when the swarm's
// membership events leave it there.
//
// What the tracker promises (master/tracker.go) and so what is checked
// (check_tracker.go): a started or completed is acknowledged only after
// it committed; a stopped likewise; peer lists are served stale, so the
// lists clients get during the run are only checked for phantoms, and
// the final lists, read from every master after the cluster healed and
// went quiet, must hold every acknowledged peer and no acknowledged
// stopped one, and be the same on every master.

// torrent is one swarm of the workload.
type torrent struct {
	Key  int
	Hash tracker.InfoHash
}

func makeTorrents(n int) []torrent {
	out := make([]torrent, n)
	for i := range out {
		out[i] = torrent{Key: i, Hash: sha1.Sum(fmt.Appendf(nil, "fileshare-jepsen-torrent-%d", i))}
	}
	return out
}

// trackerMaster is one master's announce endpoint.
type trackerMaster struct {
	ID  string // m1, m2, ...
	URL string // http://IP:PORT/announce
	// UDP is where the workload's UDP announces for this master go (the
	// harness's UDP proxy in front of its UDP tracker), or "": HTTP only.
	UDP string
}

// btPeer is one simulated BitTorrent client in one swarm.
type btPeer struct {
	id     string // the 20-byte peer_id, printable
	port   uint16
	key    int  // the torrent
	active bool // its last membership event was acknowledged and was not a stop
	seeder bool
	// quietUntil: after a UDP announce the peer sends nothing until every
	// datagram of it (retransmissions, duplicates, delayed copies) has
	// arrived or died; see udpQuiet.
	quietUntil time.Time
}

// udpQuiet is how long a peer stays quiet after a UDP announce ends. A
// UDP datagram lives at most 650 ms in the harness's proxies (a delay of
// up to 600 ms plus a duplicate's 50 ms; a reordered one is held 100 ms),
// so after this no datagram of the announce can still reach a tracker. A
// real client's announces are minutes apart; without the pause a late
// copy of a peer's started could arrive after its stopped and bring it
// back, which no tracker can tell from a new start (BEP 15 has no
// sequence numbers). The UDP checks are about duplicates within an
// announce, which must have one effect.
const udpQuiet = time.Second

// nextSpeaker returns the slot of a worker's peer that may announce now:
// slot start if its quiet time is over, else the next one after it whose
// quiet time is over, else start once its own is (false if ctx ends
// first). quietUntil gives slot i's quiet time.
func nextSpeaker(ctx context.Context, start, n int, quietUntil func(int) time.Time) (int, bool) {
	now := time.Now()
	if !now.Before(quietUntil(start)) {
		return start, true
	}
	for k := 1; k < n; k++ {
		if s := (start + k) % n; now.After(quietUntil(s)) {
			return s, true
		}
	}
	return start, sleepCtx(ctx, time.Until(quietUntil(start)))
}

const (
	// peersPerWorker is how many simulated peers one worker runs at once.
	peersPerWorker = 4
	// runNumWant is the numwant of the announces during the run: enough
	// to check for phantoms, small enough to keep the history small.
	runNumWant = 10
	// watcherID is the peer_id of the final reads' watcher. It starts in
	// every swarm before the reads, so that each read is a pure renewal
	// (no log entry), and it is left out of every check.
	watcherID = "-FSJPWATCH-000000000"
	// maxReply bounds one announce reply the harness reads.
	maxReply = 1 << 20
)

// trackerWorkload drives C concurrent BitTorrent clients against every
// master's HTTP tracker.
type trackerWorkload struct {
	btClients
	// compact asks for compact peer lists (addresses; the peers are told
	// apart by port), for trackers that refuse compact=0 (opentracker).
	compact bool

	mu       sync.Mutex
	nextPeer int               // the last peer number handed out
	byPort   map[uint16]string // peer_id by port, to read UDP peer lists
}

func newTrackerWorkload(masters []trackerMaster, torrents int, rec *recorder, pace *pacer, seed int64, opTimeout time.Duration, newProcess func() int) *trackerWorkload {
	return &trackerWorkload{
		btClients: newBTClients(masters, torrents, rec, pace, seed, opTimeout, newProcess),
		byPort:    map[uint16]string{},
	}
}

// freshPeer returns a new simulated peer, with a peer_id and port nobody
// used before, in a swarm drawn from rng.
func (w *trackerWorkload) freshPeer(rng *rand.Rand) *btPeer {
	w.mu.Lock()
	w.nextPeer++
	n := w.nextPeer
	p := &btPeer{
		id:   fmt.Sprintf("-FSJP01-%012d", n),
		port: uint16(10000 + n%50000),
		key:  rng.IntN(len(w.torrents)),
	}
	w.byPort[p.port] = p.id
	w.mu.Unlock()
	return p
}

// run runs concurrency clients until stop is closed, then waits for
// their announces in flight.
func (w *trackerWorkload) run(ctx context.Context, stop <-chan struct{}, concurrency int) {
	runWorkers(concurrency, func(i int) { w.client(ctx, stop, i) })
}

// client is one worker with peersPerWorker peers. Each op picks one of
// them: a peer outside its swarm starts (a quarter as seeders); one inside
// re-announces (60 %), completes (10 %, leechers) or stops (the rest).
// After an acknowledged stop the peer starts again later, as a client
// restarting a torrent does, or half the time is replaced by a fresh one.
// An op whose outcome is unknown ends the process: its peer is replaced
// by a fresh one (its state is unknown) and the worker goes on as a new
// process, as in the index workload.
func (w *trackerWorkload) client(ctx context.Context, stop <-chan struct{}, worker int) {
	rng := rand.New(rand.NewPCG(uint64(w.seed), uint64(worker)+1<<32))
	process := w.newProcess()
	peers := workerPeers(rng, w.freshPeer)
	for {
		slot, ok := nextTurn(ctx, stop, w.pace, rng, peers, func(p *btPeer) time.Time { return p.quietUntil })
		if !ok {
			return
		}
		p := peers[slot]
		op := Op{Process: process, Worker: worker, Peer: p.id, Key: p.key}
		switch r := rng.IntN(100); {
		case !p.active:
			op.Type = OpStarted
			p.seeder = rng.IntN(4) == 0
		case r < 60:
			op.Type = OpReannounce
		case r < 70 && !p.seeder:
			op.Type = OpCompleted
		case r < 70:
			op.Type = OpReannounce
		default:
			op.Type = OpStopped
		}
		m := rng.IntN(len(w.masters))
		if w.masters[m].UDP != "" && rng.IntN(2) == 0 {
			op = w.announceUDP(ctx, op, m, p.port, p.seeder || op.Type == OpCompleted)
			p.quietUntil = time.Now().Add(udpQuiet)
		} else {
			op = w.announce(ctx, op, m, p.port, p.seeder || op.Type == OpCompleted, runNumWant)
		}
		switch op.Outcome {
		case OK:
			switch op.Type {
			case OpStopped:
				p.active = false
				if rng.IntN(2) == 0 {
					peers[slot] = w.freshPeer(rng)
				}
			case OpCompleted:
				p.active, p.seeder = true, true
			default:
				p.active = true
			}
		case Info:
			peers[slot] = w.freshPeer(rng)
			process = w.newProcess()
		}
	}
}

// announce sends one HTTP announce for op's peer to master m, records it,
// and returns it. Outcomes: ok for a reply without "failure reason"; fail
// only when the master refused the connection (the request reached no
// tracker); info for everything else, a failure reason included: a
// refusal cannot be told from a backend error (a relay that timed out
// while the change may still commit) by its words, and info is never
// wrong.
func (w *trackerWorkload) announce(ctx context.Context, op Op, m int, port uint16, seeder bool, numWant int) Op {
	tm := w.masters[m]
	op.Master = tm.ID
	left := 1 << 20
	if seeder {
		left = 0
	}
	ih := w.torrents[op.Key].Hash
	q := "info_hash=" + escapeAll(ih[:]) + "&peer_id=" + escapeAll([]byte(op.Peer)) +
		fmt.Sprintf("&port=%d&uploaded=0&downloaded=0&left=%d&compact=%d&numwant=%d", port, left, w.compactFlag(), numWant)
	switch op.Type {
	case OpStarted:
		q += "&event=started"
	case OpCompleted:
		q += "&event=completed"
	case OpStopped:
		q += "&event=stopped"
	}
	octx, cancel := context.WithTimeout(ctx, w.opTimeout)
	defer cancel()
	op.Invoke = w.rec.since()
	reply, err := w.get(octx, tm.URL+"?"+q)
	op.Complete = w.rec.since()
	switch {
	case err == nil:
		op.Outcome = OK
		op.Swarm = reply.complete + reply.incomplete
		op.Holders = w.holders(reply)
	case errors.Is(err, syscall.ECONNREFUSED):
		op.Outcome = Fail
		op.Error = err.Error()
	default:
		op.Outcome = Info
		op.Error = err.Error()
	}
	return w.rec.add(op)
}

// announceUDP is announce over UDP through master m's UDP proxy, with
// BEP 15's retries. Outcomes: ok for a reply; info for everything else (a
// lost reply says nothing of the announce). The peers of a UDP reply are
// addresses: each is recorded as the peer_id of the workload's peer with
// that port, or "port N" if none has it (a phantom).
func (w *trackerWorkload) announceUDP(ctx context.Context, op Op, m int, port uint16, seeder bool) Op {
	op, r := w.sendUDP(ctx, op, m, "", w.btAnnounce(op, port, seeder))
	if op.Outcome != OK {
		return w.rec.add(op)
	}
	w.mu.Lock()
	for _, ap := range r.Peers {
		id, ok := w.byPort[ap.Port()]
		if !ok {
			id = fmt.Sprintf("port %d", ap.Port())
		}
		op.Holders = append(op.Holders, id)
	}
	w.mu.Unlock()
	slices.Sort(op.Holders)
	op.Holders = slices.Compact(op.Holders)
	return w.rec.add(op)
}

// trackerReply is what the workload reads from an announce reply.
type trackerReply struct {
	complete, incomplete int
	peers                []string // sorted, distinct peer_ids
	// ports are the ports of a compact reply's peers (trackers such as
	// opentracker answer compact whatever compact=0 asks); holders maps
	// them to peer_ids.
	ports []uint16
}

func (w *trackerWorkload) compactFlag() int {
	if w.compact {
		return 1
	}
	return 0
}

// holders returns the peer_ids of a reply: the listed ones, and for each
// compact entry the workload's peer with that port ("port N" if none).
func (w *trackerWorkload) holders(r trackerReply) []string {
	out := slices.Clone(r.peers)
	w.mu.Lock()
	for _, port := range r.ports {
		id, ok := w.byPort[port]
		if port == 1 {
			id, ok = watcherID, true
		}
		if !ok {
			id = fmt.Sprintf("port %d", port)
		}
		out = append(out, id)
	}
	w.mu.Unlock()
	slices.Sort(out)
	return slices.Compact(out)
}

// errRefused is an announce answered with a failure reason.
var errRefused = errors.New("the tracker refused the announce")

// get sends one announce and decodes the reply.
func (w *trackerWorkload) get(ctx context.Context, u string) (trackerReply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return trackerReply{}, err
	}
	resp, err := w.hc.Do(req)
	if err != nil {
		return trackerReply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return trackerReply{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return trackerReply{}, fmt.Errorf("HTTP %s: %q", resp.Status, body)
	}
	return parseAnnounceReply(body)
}

// parseAnnounceReply decodes a non-compact announce reply (compact=0:
// a list of dictionaries with "peer id"). A reply with "failure reason"
// is errRefused with the reason.
func parseAnnounceReply(body []byte) (trackerReply, error) {
	v, err := tracker.DecodeBencode(body)
	if err != nil {
		return trackerReply{}, fmt.Errorf("undecodable announce reply: %w", err)
	}
	d, ok := v.(map[string]any)
	if !ok {
		return trackerReply{}, fmt.Errorf("announce reply is a %T, not a dictionary", v)
	}
	if f, ok := d["failure reason"].(string); ok {
		return trackerReply{}, fmt.Errorf("%w: %s", errRefused, f)
	}
	var out trackerReply
	c, ok1 := d["complete"].(int64)
	inc, ok2 := d["incomplete"].(int64)
	if !ok1 || !ok2 || c < 0 || inc < 0 || c > 1<<31 || inc > 1<<31 {
		return trackerReply{}, errors.New("announce reply without valid complete and incomplete counts")
	}
	out.complete, out.incomplete = int(c), int(inc)
	if compact, ok := d["peers"].(string); ok {
		if len(compact)%6 != 0 {
			return trackerReply{}, fmt.Errorf("compact peers of %d bytes, not a multiple of 6", len(compact))
		}
		for i := 0; i < len(compact); i += 6 {
			out.ports = append(out.ports, uint16(compact[i+4])<<8|uint16(compact[i+5]))
		}
		return out, nil
	}
	list, ok := d["peers"].([]any)
	if !ok {
		if _, present := d["peers"]; present {
			return trackerReply{}, errors.New("announce reply's peers is not a list (asked for compact=0)")
		}
	}
	for _, e := range list {
		pd, ok := e.(map[string]any)
		if !ok {
			return trackerReply{}, errors.New("announce reply lists a peer that is not a dictionary")
		}
		id, ok := pd["peer id"].(string)
		if !ok || len(id) != 20 {
			return trackerReply{}, errors.New("announce reply lists a peer without a 20-byte peer id")
		}
		out.peers = append(out.peers, id)
	}
	slices.Sort(out.peers)
	out.peers = slices.Compact(out.peers)
	return out, nil
}

// startWatcher starts the watcher peer in every swarm, through the
// masters in turn, retrying each until it is acknowledged or ctx ends.
// The announces are recorded as final ops.
func (w *trackerWorkload) startWatcher(ctx context.Context) error {
	for _, t := range w.torrents {
		for try := 0; ; try++ {
			op := w.announce(ctx, Op{Process: 0, Worker: -1, Type: OpStarted, Key: t.Key, Peer: watcherID, Final: true}, try%len(w.masters), 1, false, 0)
			if op.Outcome == OK {
				break
			}
			if !sleepCtx(ctx, 100*time.Millisecond) {
				return fmt.Errorf("the tracker's watcher could not join swarm %d: %s", t.Key, op.Error)
			}
		}
	}
	return nil
}

// readFinal reads every swarm's peer list from every master as the
// watcher (a renewal: the watcher is in every master's index by now, so
// no read adds a log entry) with the largest numwant. A swarm larger than
// one reply is sampled until the union of the samples is the whole
// swarm, up to 30 times. Each master's list of each swarm is recorded as
// one OpPeers op: ok with the whole list, or info if it could not be
// read whole.
func (w *trackerWorkload) readFinal(ctx context.Context, budget time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var missing []string
	for m, tm := range w.masters {
		for _, t := range w.torrents {
			op := w.readSwarm(ctx, m, t.Key)
			if op.Outcome != OK {
				missing = append(missing, fmt.Sprintf("%s torrent %d (%s)", tm.ID, t.Key, op.Error))
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the final peer list of %d swarms could not be read: %s", len(missing), strings.Join(missing, "; "))
	}
	return nil
}

func (w *trackerWorkload) readSwarm(ctx context.Context, m, key int) Op {
	op := Op{Process: 0, Worker: -1, Type: OpPeers, Key: key, Peer: watcherID, Final: true, Master: w.masters[m].ID}
	op.Invoke = w.rec.since()
	union := map[string]bool{}
	var lastErr error
	for try := 0; try < 30; try++ {
		octx, cancel := context.WithTimeout(ctx, w.opTimeout)
		ih := w.torrents[key].Hash
		u := w.masters[m].URL + "?info_hash=" + escapeAll(ih[:]) + "&peer_id=" + escapeAll([]byte(watcherID)) +
			fmt.Sprintf("&port=1&uploaded=0&downloaded=0&left=%d&compact=%d&numwant=%d", 1<<20, w.compactFlag(), tracker.MaxNumWant)
		r, err := w.get(octx, u)
		cancel()
		if err != nil {
			lastErr = err
			if !sleepCtx(ctx, 100*time.Millisecond) {
				break
			}
			continue
		}
		for _, p := range w.holders(r) {
			if p != watcherID {
				union[p] = true
			}
		}
		op.Swarm = r.complete + r.incomplete
		// The watcher counts in the swarm but is not in its own list.
		if len(union) >= op.Swarm-1 {
			op.Outcome = OK
			break
		}
		lastErr = fmt.Errorf("listed %d of the swarm's %d other peers", len(union), op.Swarm-1)
	}
	op.Complete = w.rec.since()
	if op.Outcome == OK {
		op.Holders = make([]string, 0, len(union))
		for p := range union {
			op.Holders = append(op.Holders, p)
		}
		slices.Sort(op.Holders)
	} else {
		op.Outcome = Info
		if lastErr == nil {
			lastErr = ctx.Err()
		}
		op.Error = fmt.Sprint(lastErr)
		op.Swarm = 0
	}
	return w.rec.add(op)
}

// escapeAll %-escapes every byte, as many BitTorrent clients do.
func escapeAll(b []byte) string {
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, 3*len(b))
	for _, c := range b {
		out = append(out, '%', hex[c>>4], hex[c&15])
	}
	return string(out)
}
