package jepsenlike

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"fileshare/internal/connset"
)

// proxyNet injects network faults without root: a TCP proxy sits in front
// of every master, and every master advertises its proxy's address, so all
// traffic between masters crosses a proxy. Each master dials from its own
// loopback IP (transport.Mux binds outgoing connections to the listen IP),
// so the proxy in front of master j knows, from a connection's source IP,
// that it carries the link i→j one way and j→i the other.
//
// A cut direction does not close anything: the proxy stops forwarding
// that direction's bytes and holds them (the kernel buffers fill and the
// sender stalls), exactly what a sender sees when the network drops its
// packets, and after the heal the held bytes flow again like TCP
// retransmissions. A new connection while either direction of its link is
// cut is accepted but left unanswered, as a SYN that is dropped or whose
// SYN-ACK is dropped would leave it. Delay holds each chunk for the delay
// (plus jitter) before forwarding it, in order. Loss is emulated the way
// TCP experiences it: a lost segment arrives one retransmission timeout
// (200 ms, Linux's minimum RTO) later, possibly several times over.
//
// Connections from addresses that are not masters (the workload's clients,
// the harness) are forwarded without faults.
type proxyNet struct {
	logger  *slog.Logger
	ipIndex map[string]int // master IP → index
	proxies []*proxy

	mu      sync.Mutex
	faults  NetFaults
	changed chan struct{} // closed and replaced whenever faults change

	conns     connset.Set // proxied connections, both sides, for Close
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

type proxy struct {
	node     int
	ln       net.Listener
	upstream string
}

// rto is the extra delay a lost segment costs.
const rto = 200 * time.Millisecond

// newProxyNet starts a proxy for every master whose addrs.Proxy is set,
// forwarding to addrs.Listen. The proxies run until Close.
func newProxyNet(addrs []nodeAddrs, logger *slog.Logger) (*proxyNet, error) {
	p := &proxyNet{
		logger:  logger,
		ipIndex: map[string]int{},
		changed: make(chan struct{}),
		closed:  make(chan struct{}),
	}
	for i, a := range addrs {
		p.ipIndex[a.IP] = i
	}
	if len(p.ipIndex) != len(addrs) {
		return nil, errors.New("proxies need every master on its own loopback IP to tell links apart")
	}
	for i, a := range addrs {
		ln, err := net.Listen("tcp", a.Proxy)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("start the proxy for master %d on %s: %w", i+1, a.Proxy, err)
		}
		px := &proxy{node: i, ln: ln, upstream: a.Listen}
		p.proxies = append(p.proxies, px)
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.acceptLoop(px) }()
	}
	return p, nil
}

func (p *proxyNet) Describe() string {
	return "userspace TCP proxies in front of every master (no root needed); a cut link's bytes are held back, not delivered, until the heal"
}

func (p *proxyNet) Supports(Kind) error { return nil }

func (p *proxyNet) Set(_ context.Context, f NetFaults) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = f
	close(p.changed)
	p.changed = make(chan struct{})
	return nil
}

// Close stops every proxy, closes every proxied connection and waits for
// all proxy goroutines.
func (p *proxyNet) Close() error {
	p.closeOnce.Do(func() {
		close(p.closed)
		for _, px := range p.proxies {
			px.ln.Close()
		}
		p.conns.Close()
		p.wg.Wait()
	})
	return nil
}

// state returns the faults now in force and a channel closed when they
// change.
func (p *proxyNet) state() (NetFaults, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults, p.changed
}

// track holds c for Close; false (c closed) if the proxies are closing.
func (p *proxyNet) track(c net.Conn) bool {
	if !p.conns.Add(c) {
		c.Close()
		return false
	}
	return true
}

// untrack lets c go, closing it.
func (p *proxyNet) untrack(c net.Conn) {
	p.conns.Remove(c)
	c.Close()
}

func (p *proxyNet) acceptLoop(px *proxy) {
	for {
		c, err := px.ln.Accept()
		if err != nil {
			select {
			case <-p.closed:
				return
			default:
			}
			// Out of file descriptors or the like: back off and retry, so
			// the master does not become unreachable for good.
			p.logger.Warn("proxy accept failed; retrying", "node", px.node, "err", err)
			select {
			case <-time.After(50 * time.Millisecond):
			case <-p.closed:
				return
			}
			continue
		}
		if !p.track(c) {
			continue
		}
		from := -1
		if tcp, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			if i, ok := p.ipIndex[tcp.IP.String()]; ok && i != px.node {
				from = i
			}
		}
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.serve(c, from, px) }()
	}
}

// serve forwards one connection from master from (-1: a client) to px's
// master.
func (p *proxyNet) serve(c net.Conn, from int, px *proxy) {
	defer p.untrack(c)
	to := px.node
	if from >= 0 {
		// A handshake needs both directions: wait until neither is cut.
		for {
			f, changed := p.state()
			if !f.cut(from, to) && !f.cut(to, from) {
				break
			}
			select {
			case <-changed:
			case <-p.closed:
				return
			}
		}
	}
	d := net.Dialer{Timeout: 2 * time.Second}
	up, err := d.Dial("tcp", px.upstream)
	if err != nil {
		return // the master is down: the client sees its connection close
	}
	if !p.track(up) {
		return
	}
	defer p.untrack(up)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(c, up, from, to) }()
	go func() { defer wg.Done(); p.pump(up, c, to, from) }()
	wg.Wait()
}

type chunk struct {
	data    []byte
	readAt  time.Time
	penalty time.Duration // emulated retransmissions
	err     error         // io.EOF or a read error: the last chunk
}

// pump copies src to dst for the link from→to (either may be -1 for a
// client, which is never faulted), applying the faults in force when each
// chunk is due. It returns when src ends or dst fails; on failure it
// closes both connections so the opposite pump ends too.
func (p *proxyNet) pump(src, dst net.Conn, from, to int) {
	chunks := make(chan chunk, 64)
	faulted := from >= 0 && to >= 0
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(chunks)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			c := chunk{data: buf[:n], readAt: time.Now(), err: err}
			if faulted && n > 0 {
				f, _ := p.state()
				for f.Loss > 0 && rand.Float64() < f.Loss && c.penalty < 10*rto {
					c.penalty += rto
				}
			}
			select {
			case chunks <- c:
			case <-p.closed:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer wg.Wait()
	var last time.Time // chunks leave in order: never before the previous one
	for c := range chunks {
		if faulted && !p.await(c, &last, from, to) {
			src.Close()
			dst.Close()
			break
		}
		if len(c.data) > 0 {
			if _, err := dst.Write(c.data); err != nil {
				src.Close()
				dst.Close()
				break
			}
		}
		if c.err != nil {
			if tcp, ok := dst.(*net.TCPConn); ok && c.err == io.EOF {
				tcp.CloseWrite()
			} else {
				src.Close()
				dst.Close()
			}
			break
		}
	}
	for range chunks { // let the reader finish after a failure
	}
}

// await blocks until chunk c may be forwarded on link from→to: the link is
// not cut and its delay has passed. It returns false if the proxies close.
func (p *proxyNet) await(c chunk, last *time.Time, from, to int) bool {
	jitter := time.Duration(-1)
	for {
		f, changed := p.state()
		var wait <-chan time.Time
		var t *time.Timer
		if !f.cut(from, to) {
			if jitter < 0 && f.Jitter > 0 {
				jitter = rand.N(f.Jitter + 1)
			}
			due := c.readAt.Add(f.Delay + max(jitter, 0) + c.penalty)
			if due.Before(*last) {
				due = *last
			}
			d := time.Until(due)
			if d <= 0 {
				*last = due
				return true
			}
			t = time.NewTimer(d)
			wait = t.C
		}
		select {
		case <-wait:
		case <-changed:
		case <-p.closed:
			if t != nil {
				t.Stop()
			}
			return false
		}
		if t != nil {
			t.Stop()
		}
	}
}
