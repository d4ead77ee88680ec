package jepsenlike

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"fileshare/btclient"
	"fileshare/tracker"
)

// UDPFaults are what the UDP proxies do to datagrams, in both directions
// (client to tracker and back), each drawn per datagram. The zero value
// forwards everything at once.
type UDPFaults struct {
	// Loss is the fraction of datagrams dropped (0..1).
	Loss float64 `json:"loss,omitempty"`
	// Dup is the fraction sent twice; the copy follows within 50 ms.
	Dup float64 `json:"dup,omitempty"`
	// Reorder is the fraction held back until the next datagram of the
	// same flow and direction has passed (or 100 ms, if none comes).
	Reorder float64 `json:"reorder,omitempty"`
	// Delay is added to every datagram, with Jitter (0..Jitter) on top,
	// so datagrams also overtake one another.
	Delay  Duration `json:"delay,omitempty"`
	Jitter Duration `json:"jitter,omitempty"`
}

// UDPCounts counts what the proxies did.
type UDPCounts struct {
	Forwarded  int `json:"forwarded"`
	Dropped    int `json:"dropped"`
	Duplicated int `json:"duplicated"`
	Reordered  int `json:"reordered"`
	Delayed    int `json:"delayed"`
	// DupStarted and DupStopped count duplicated announces (client to
	// tracker) whose event was started or stopped: each must have had
	// one effect.
	DupStarted int `json:"dup_started"`
	DupStopped int `json:"dup_stopped"`
}

// udpProxy relays a UDP tracker's datagrams: clients send to its
// address, and for each client address (a flow) it relays through a
// socket of its own to the tracker, and the replies back, applying the
// faults in force. Safe for concurrent use; close stops it.
type udpProxy struct {
	ln       *net.UDPConn
	upstream *net.UDPAddr
	logger   *slog.Logger

	mu     sync.Mutex
	faults UDPFaults
	rng    *rand.Rand
	counts UDPCounts
	flows  map[string]*udpFlow
	closed bool
	wg     sync.WaitGroup
}

// udpFlow is one client address's relay socket, and the datagram each
// direction holds back for reordering.
type udpFlow struct {
	client   *net.UDPAddr
	up       *net.UDPConn
	lastUsed time.Time
	held     [2]*heldDatagram // by direction: 0 to the tracker, 1 back
}

type heldDatagram struct {
	b     []byte
	timer *time.Timer
}

// udpFlowIdle is how long a flow without datagrams is kept.
const udpFlowIdle = 30 * time.Second

// newUDPProxy listens on listenIP (an ephemeral port) and relays to
// upstream.
func newUDPProxy(listenIP, upstream string, seed int64, logger *slog.Logger) (*udpProxy, error) {
	ua, err := net.ResolveUDPAddr("udp", upstream)
	if err != nil {
		return nil, err
	}
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(listenIP)})
	if err != nil {
		return nil, fmt.Errorf("listen for the UDP proxy on %s: %w", listenIP, err)
	}
	p := &udpProxy{ln: ln, upstream: ua, logger: logger, flows: map[string]*udpFlow{},
		rng: rand.New(rand.NewPCG(uint64(seed), 0x7564702d70726f78))}
	p.wg.Go(p.serve)
	return p, nil
}

// addr is where clients send.
func (p *udpProxy) addr() string { return p.ln.LocalAddr().String() }

// set puts faults in force (the zero value heals).
func (p *udpProxy) set(f UDPFaults) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = f
}

// takeCounts returns the counts since the last call and resets them.
func (p *udpProxy) takeCounts() UDPCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.counts
	p.counts = UDPCounts{}
	return c
}

func (p *udpProxy) serve() {
	buf := make([]byte, 2048)
	for {
		n, from, err := p.ln.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		fl, err := p.flow(from)
		if err != nil {
			p.logger.Warn("udp proxy: open a relay socket", "err", err)
			continue
		}
		p.send(fl, 0, append([]byte(nil), buf[:n]...))
	}
}

// flow returns the relay of client address from, opening it (and its
// reader of replies) on first use.
func (p *udpProxy) flow(from *net.UDPAddr) (*udpFlow, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	key := from.String()
	if fl := p.flows[key]; fl != nil {
		fl.lastUsed = now
		return fl, nil
	}
	for k, fl := range p.flows {
		if now.Sub(fl.lastUsed) > udpFlowIdle {
			fl.up.Close()
			delete(p.flows, k)
		}
	}
	if p.closed {
		return nil, net.ErrClosed
	}
	up, err := net.DialUDP("udp", nil, p.upstream)
	if err != nil {
		return nil, err
	}
	fl := &udpFlow{client: from, up: up, lastUsed: now}
	p.flows[key] = fl
	p.wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, err := up.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // e.g. ECONNREFUSED while the tracker is down
			}
			p.send(fl, 1, append([]byte(nil), buf[:n]...))
		}
	})
	return fl, nil
}

// send passes datagram b of flow fl in direction dir (0 to the tracker,
// 1 back to the client) through the faults in force.
func (p *udpProxy) send(fl *udpFlow, dir int, b []byte) {
	for _, d := range p.plan(fl, dir, b) {
		p.write(fl, dir, d)
	}
}

// plan applies the faults in force to datagram b: it schedules what goes
// out later and returns what goes out now, in order.
func (p *udpProxy) plan(fl *udpFlow, dir int, b []byte) (now [][]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.faults
	if f.Loss > 0 && p.rng.Float64() < f.Loss {
		p.counts.Dropped++
		return nil
	}
	// A datagram held back for reordering goes out right after this one.
	var release []byte
	if h := fl.held[dir]; h != nil && h.timer.Stop() {
		release, fl.held[dir] = h.b, nil
	}
	if f.Reorder > 0 && release == nil && p.rng.Float64() < f.Reorder {
		h := &heldDatagram{b: b}
		h.timer = time.AfterFunc(100*time.Millisecond, func() {
			p.mu.Lock()
			if fl.held[dir] == h {
				fl.held[dir] = nil
			}
			p.mu.Unlock()
			p.write(fl, dir, h.b)
		})
		fl.held[dir] = h
		p.counts.Reordered++
		return nil
	}
	delay := func() time.Duration {
		d := time.Duration(f.Delay)
		if f.Jitter > 0 {
			d += time.Duration(p.rng.Int64N(int64(f.Jitter) + 1))
		}
		return d
	}
	out := [][]byte{b}
	if release != nil {
		out = append(out, release)
	}
	if f.Dup > 0 && p.rng.Float64() < f.Dup {
		p.counts.Duplicated++
		if ev, ok := btclient.AnnounceRequestEvent(b); ok && dir == 0 {
			switch ev {
			case tracker.EventStarted:
				p.counts.DupStarted++
			case tracker.EventStopped:
				p.counts.DupStopped++
			}
		}
		copyAfter := time.Duration(p.rng.Int64N(int64(50 * time.Millisecond)))
		p.after(delay()+copyAfter, func() { p.write(fl, dir, b) })
	}
	if f.Delay == 0 && f.Jitter == 0 {
		return out
	}
	for _, d := range out {
		p.counts.Delayed++
		p.after(delay(), func() { p.write(fl, dir, d) })
	}
	return nil
}

// after runs fn after d on a timer the proxy does not wait for: a write
// after close fails harmlessly.
func (p *udpProxy) after(d time.Duration, fn func()) { time.AfterFunc(d, fn) }

func (p *udpProxy) write(fl *udpFlow, dir int, b []byte) {
	var err error
	if dir == 0 {
		_, err = fl.up.Write(b)
	} else {
		_, err = p.ln.WriteToUDP(b, fl.client)
	}
	p.mu.Lock()
	if err == nil {
		p.counts.Forwarded++
	}
	p.mu.Unlock()
}

// close stops the proxy and waits for its readers.
func (p *udpProxy) close() {
	p.mu.Lock()
	p.closed = true
	for _, fl := range p.flows {
		fl.up.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}
