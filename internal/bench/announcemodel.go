package bench

import (
	"bufio"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"

	"fileshare/btclient"
	"fileshare/tracker"
)

// Mix is the share of each kind of announce in a load, in parts of their
// sum: Changes are started events of new peers (membership changes, which
// a cluster commits through Raft), Renew re-announces of started peers
// (lease renewals), Stopped stopped events of started peers.
type Mix struct {
	Changes, Renew, Stopped int
}

// DefaultMix is what a tracker sees from a settled population: most
// announces are periodic re-announces.
var DefaultMix = Mix{Changes: 10, Renew: 85, Stopped: 5}

// ErrBadMix means a --mix value cannot be parsed.
var ErrBadMix = errors.New("bad announce mix")

// ParseMix parses "changes=10,renew=85,stopped=5"; a kind left out is 0.
// The parts need not sum to 100, but must not all be zero.
func ParseMix(s string) (Mix, error) {
	var m Mix
	for part := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 0 {
			return m, fmt.Errorf("%w: %q is not KIND=N with N ≥ 0 (e.g. changes=10,renew=85,stopped=5)", ErrBadMix, part)
		}
		switch k {
		case "changes":
			m.Changes = n
		case "renew":
			m.Renew = n
		case "stopped":
			m.Stopped = n
		default:
			return m, fmt.Errorf("%w: unknown kind %q; use changes, renew and stopped", ErrBadMix, k)
		}
	}
	if m.Changes+m.Renew+m.Stopped == 0 {
		return m, fmt.Errorf("%w: every part is zero", ErrBadMix)
	}
	return m, nil
}

func (m Mix) String() string {
	return fmt.Sprintf("changes=%d,renew=%d,stopped=%d", m.Changes, m.Renew, m.Stopped)
}

// opKind is one kind of announce a load sends.
type opKind int

const (
	opStart opKind = iota
	opRenew
	opStop
	numOpKinds
)

var opNames = [numOpKinds]string{"started", "renew", "stopped"}

// pick draws a kind by the mix's weights.
func (m Mix) pick(r *rand.Rand) opKind {
	n := r.IntN(m.Changes + m.Renew + m.Stopped)
	switch {
	case n < m.Changes:
		return opStart
	case n < m.Changes+m.Renew:
		return opRenew
	default:
		return opStop
	}
}

// SwarmHash returns the info-hash of the benchmark's swarm i: the SHA-1 of
// "fileshare bench swarm <i>". It is the same in every run, so a tracker
// that serves only listed torrents (Debian's opentracker) can be given
// the list (WriteSwarmList).
func SwarmHash(i int) [20]byte {
	return sha1.Sum([]byte("fileshare bench swarm " + strconv.Itoa(i)))
}

// WriteSwarmList writes the hex info-hashes of swarms 0..n-1, one a line,
// the format of opentracker's access.whitelist file.
func WriteSwarmList(w io.Writer, n int) error {
	bw := bufio.NewWriter(w)
	for i := range n {
		h := SwarmHash(i)
		bw.WriteString(hex.EncodeToString(h[:]))
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// peerModel is the simulated population one worker owns: the peers it
// started and has not stopped. Worker w of W owns the peers with global
// index g ≡ w (mod W); peer g is in swarm g mod swarms and listens on
// port 1024 + (g / swarms) mod 64511, so two peers of one swarm never
// share a port (a tracker keys peers from one IP by port) until a swarm
// holds 64511 peers. Everything follows from the seed: the same seed
// gives the same sequence of announces.
//
// In a flash crowd (hot > 0) every announce of the measurement starts a
// new peer on one of swarms 0..hot-1: hot peer h of the worker has
// global hot index g = worker + workers*h, is in swarm g mod hot, listens
// on port 65535 - (g / hot) mod 64511 (counting down, away from the
// settled peers' ports) and has the top bit of its peer-ID index set.
// Hot peers are never renewed or stopped.
type peerModel struct {
	worker, workers, swarms int
	tag                     uint32 // from the seed: runs with other seeds announce other peer IDs
	mix                     Mix
	hot                     int // flash crowd: hot swarms; 0: draw from mix
	rng                     *rand.Rand
	started                 int    // peers this worker has started so far
	hotStarted              int    // hot peers this worker has started so far
	active                  []int  // global indices of started, not stopped peers
	filled                  uint64 // announces this worker has filled: the transfer clock
}

func newPeerModel(seed uint64, worker, workers, swarms int, mix Mix) *peerModel {
	return &peerModel{
		worker: worker, workers: workers, swarms: swarms, mix: mix,
		tag: uint32(seed>>32) ^ uint32(seed),
		rng: rand.New(rand.NewPCG(seed, uint64(worker))),
	}
}

// next picks the next announce and fills p with it. A renew or stop with
// no active peer starts one instead. The model counts a started peer as
// active and a stopped one as gone at once, whatever the tracker answers:
// a failed start is renewed later as a peer the tracker does not know,
// which a tracker treats as a join.
func (m *peerModel) next(p *btclient.Announce, kind opKind) opKind {
	if kind != opStart && len(m.active) == 0 {
		kind = opStart
	}
	var g int
	switch kind {
	case opStart:
		g = m.worker + m.workers*m.started
		m.started++
		m.active = append(m.active, g)
		p.Event = tracker.EventStarted
	case opRenew:
		g = m.active[m.rng.IntN(len(m.active))]
		p.Event = tracker.EventNone
	case opStop:
		i := m.rng.IntN(len(m.active))
		g = m.active[i]
		m.active[i] = m.active[len(m.active)-1]
		m.active = m.active[:len(m.active)-1]
		p.Event = tracker.EventStopped
	}
	m.fill(p, g)
	return kind
}

// draw picks the measurement's next announce: in a flash crowd a new hot
// peer, else a kind drawn from the mix.
func (m *peerModel) draw(p *btclient.Announce) opKind {
	if m.hot <= 0 {
		return m.next(p, m.mix.pick(m.rng))
	}
	g := m.worker + m.workers*m.hotStarted
	m.hotStarted++
	p.Event = tracker.EventStarted
	m.fillPeer(p, g%m.hot, uint16(65535-(g/m.hot)%64511), uint64(g)|1<<63)
	p.Left = 1 << 20 // a crowd arrives to download
	p.Uploaded, p.Downloaded = 0, 0
	return opStart
}

// transferStep is how many bytes every peer's counters grow between two
// announces of its worker.
const transferStep = 16 << 10

// fill sets p's identity fields and counters for global peer g. The
// counters are cumulative and grow with the worker's announces (each
// peer belongs to one worker), so a private tracker credits a delta on
// every re-announce, as it would for clients that are transferring:
// leechers report download and upload, seeders upload only.
func (m *peerModel) fill(p *btclient.Announce, g int) {
	m.fillPeer(p, g%m.swarms, uint16(1024+(g/m.swarms)%64511), uint64(g))
	m.filled++
	p.Left = 1 << 20
	p.Uploaded, p.Downloaded = m.filled*transferStep, m.filled*transferStep
	if g%4 == 0 {
		p.Left, p.Downloaded = 0, 0 // a quarter of the peers seed
	}
}

// fillPeer sets p's identity fields for the peer with index id in swarm
// swarm, listening on port.
func (m *peerModel) fillPeer(p *btclient.Announce, swarm int, port uint16, id uint64) {
	p.InfoHash = SwarmHash(swarm)
	copy(p.PeerID[:8], "-FB0001-")
	binary.BigEndian.PutUint32(p.PeerID[8:], m.tag)
	binary.BigEndian.PutUint64(p.PeerID[12:], id)
	p.Port = port
	p.Key, p.HasKey = uint32(id)^uint32(id>>32)^m.tag, true
	p.NumWant = 50 // aria2's default; others ask 80-200
	if p.Event == tracker.EventStopped {
		p.NumWant = 0
	}
}
