package jepsenlike

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"fileshare/btclient"
	"fileshare/tracker"
)

// btClients is what the tracker and the accounting workloads share, and
// embed: the masters' announce endpoints, the swarms, the pace, and the
// HTTP and UDP clients every announce goes through. Its fields are set
// once by newBTClients and only read afterwards, so workers share it
// without a lock.
type btClients struct {
	masters    []trackerMaster
	torrents   []torrent
	rec        *recorder
	pace       *pacer
	seed       int64
	opTimeout  time.Duration
	newProcess func() int
	hc         *http.Client
	// udp announces over UDP (BEP 15), retransmitting after opTimeout/8
	// and then twice as long each time: BEP 15's 15·2^n seconds, scaled
	// down so an op sees three or four tries.
	udp *btclient.UDPClient
}

func newBTClients(masters []trackerMaster, torrents int, rec *recorder, pace *pacer, seed int64, opTimeout time.Duration, newProcess func() int) btClients {
	// No keep-alive: every announce is one connection, so a killed or
	// paused master costs only the announce in flight, and a refused
	// connection certainly delivered nothing.
	tr := &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{Timeout: opTimeout}).DialContext}
	return btClients{
		masters: masters, torrents: makeTorrents(torrents), rec: rec, pace: pace, seed: seed,
		opTimeout: opTimeout, newProcess: newProcess, hc: &http.Client{Transport: tr},
		udp: &btclient.UDPClient{Retransmit: max(opTimeout/8, 20*time.Millisecond)},
	}
}

func (b *btClients) close() { b.hc.CloseIdleConnections() }

// btAnnounce is op as the announce of a peer listening on port: op's
// swarm, peer_id, counters and event, numwant runNumWant, and left 0 if
// the peer is a seeder or op completes its download (1 MiB otherwise).
func (b *btClients) btAnnounce(op Op, port uint16, seeder bool) btclient.Announce {
	a := btclient.Announce{InfoHash: b.torrents[op.Key].Hash, Port: port, Uploaded: op.Uploaded, Downloaded: op.Downloaded, Left: 1 << 20, NumWant: runNumWant}
	copy(a.PeerID[:], op.Peer)
	if seeder || op.Type == OpCompleted {
		a.Left = 0
	}
	switch op.Type {
	case OpStarted:
		a.Event = tracker.EventStarted
	case OpCompleted:
		a.Event = tracker.EventCompleted
	case OpStopped:
		a.Event = tracker.EventStopped
	}
	return a
}

// sendUDP sends a to master m over UDP through its proxy, with
// BEP 15's retries, urlData (a path such as "/PASSKEY/announce", or "")
// going along as BEP 41 URL data. It returns op with its master, its
// times and its outcome: ok with the swarm's size for a reply, info for
// everything else (a lost reply says nothing of the announce); and the
// reply. The caller records op.
func (b *btClients) sendUDP(ctx context.Context, op Op, m int, urlData string, a btclient.Announce) (Op, btclient.Response) {
	tm := b.masters[m]
	op.Master = tm.ID + "/udp"
	target := tm.UDP
	if urlData != "" {
		target = "udp://" + tm.UDP + urlData
	}
	octx, cancel := context.WithTimeout(ctx, b.opTimeout)
	defer cancel()
	op.Invoke = b.rec.since()
	r, err := b.udp.Announce(octx, target, a)
	op.Complete = b.rec.since()
	if err != nil {
		op.Outcome, op.Error = Info, err.Error()
		return op, btclient.Response{}
	}
	op.Outcome = OK
	op.Swarm = r.Complete + r.Incomplete
	return op, r
}

// runWorkers runs worker(0) to worker(n-1), each on a goroutine of its
// own, and returns when all have returned.
func runWorkers(n int, worker func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { worker(i) })
	}
	wg.Wait()
}

// workerPeers returns one worker's peersPerWorker simulated peers, each
// drawn by fresh from rng.
func workerPeers[P any](rng *rand.Rand, fresh func(*rand.Rand) P) []P {
	peers := make([]P, peersPerWorker)
	for i := range peers {
		peers[i] = fresh(rng)
	}
	return peers
}

// nextTurn waits for the pace's next op, then for one of peers whose
// quiet time is over (nextSpeaker from a slot drawn from rng), and
// returns its slot; false once stop is closed or ctx ends.
func nextTurn[P any](ctx context.Context, stop <-chan struct{}, pace *pacer, rng *rand.Rand, peers []P, quietUntil func(P) time.Time) (int, bool) {
	if !pace.wait(ctx, stop) {
		return 0, false
	}
	return nextSpeaker(ctx, rng.IntN(len(peers)), len(peers), func(i int) time.Time { return quietUntil(peers[i]) })
}
