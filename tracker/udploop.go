package tracker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// How Serve spends its goroutines, and why.
//
// Read loops. Each socket is read by loops that move udpBatch datagrams
// per system call (recvmmsg and sendmmsg on Linux, see udpio_linux.go),
// answer them in place into reply buffers they own, and send the replies
// in one call: no goroutine, channel or allocation per datagram.
// Connects, scrapes and renewals (announces without an event) are
// answered inline: the Backend answers them from local state.
//
// Workers. An announce that carries an event (started, completed,
// stopped) usually changes membership, and the master's Backend answers
// it only after the change commits — milliseconds normally, seconds while
// a leader is elected. Answered inline it would hold up every datagram
// behind it in the batch, and during an election every loop. So a loop
// copies it into a job and hands it to a bounded set of workers
// (UDPConfig.Workers, behind a queue of UDPConfig.Queue), which write
// their replies themselves. About one announce in seven carries an event,
// so the loops keep the bulk of the traffic and the workers the slow part.
// A full queue drops the datagram (counted and logged): the client
// retries.
//
// Stalls. An announce without an event can still be a change (a peer the
// index no longer lists, a new address or seeding state), and the loop
// cannot tell before it calls. So a monitor ticks every stallTick; a loop
// marks each Backend call with the tick it started in, and one still in a
// call two ticks later is replaced: the monitor starts a new loop on the
// same socket, which first answers the rest of the stalled loop's batch
// (datagrams are claimed one at a time), and the stalled one exits when
// its call returns. So a blocked renewal delays the others of its batch
// by two ticks at most, and never stalls the socket. Replacements are bounded (maxStalledLoops extra loops in
// all, 128 KiB of buffers each); past that a stalled socket waits, as the
// workers do.

const (
	stallTick       = 5 * time.Millisecond
	maxStalledLoops = 64
)

// rxMsg is one received datagram.
type rxMsg struct {
	buf  [udpMaxPacket]byte
	n    int
	from netip.AddrPort // as the socket gave it (maybe IPv4-mapped)
}

// txMsg is one reply.
type txMsg struct {
	buf []byte
	to  netip.AddrPort
}

// batchIO reads and writes batches of datagrams on one socket. Each loop
// has its own (it holds the system call's scratch space).
type batchIO interface {
	// read fills rx[:n] and returns n ≥ 1, or an error.
	read(rx []rxMsg) (int, error)
	// write sends every message; a message that cannot be sent is
	// skipped (UDP may lose it anyway).
	write(tx []txMsg) error
}

// udpJob is an announce handed to a worker.
type udpJob struct {
	buf  [udpMaxPacket]byte
	n    int
	from netip.AddrPort
	pc   net.PacketConn
}

// udpRun is one Serve call's shared state.
type udpRun struct {
	s      *UDPServer
	ctx    context.Context
	dl     *deadlines
	queue  chan *udpJob
	epoch  atomic.Uint64
	maxNew int // replacement loops allowed in all

	mu       sync.Mutex
	stopping bool
	loops    map[*udpLoop]struct{}
	started  int // replacement loops started
	wg       sync.WaitGroup
	errOnce  sync.Once
	err      error
	cancel   context.CancelFunc
}

// udpLoop is one read loop.
type udpLoop struct {
	run      *udpRun
	pc       net.PacketConn
	io       batchIO
	w        *udpWorker
	inCall   atomic.Uint64 // see udpWorker.inCall
	replaced atomic.Bool
	own      *rxBatch                // the batch this loop reads into
	cur      atomic.Pointer[rxBatch] // the batch it is answering
	inherit  *rxBatch                // a stalled loop's batch, answered first
	tx       []txMsg
}

// rxBatch is the datagrams of one read. Loops claim them one at a time
// (next), so a loop that replaces a stalled one answers the rest of its
// batch while the stalled one waits in its call.
type rxBatch struct {
	rx   []rxMsg
	n    int // set before the batch is shared, then read-only
	next atomic.Int32
}

// takenMark, set in a loop's inCall by the monitor, says the loop was
// replaced during that call.
const takenMark = 1 << 63

// Serve reads packets from pc and answers them until ctx ends (then it
// returns nil) or a read fails (then it returns the error). It blocks; its
// goroutines (read loops, workers, a stall monitor: see above) are all
// gone when it returns. It does not close pc.
//
// pc may be a UDPConns from ListenUDP (one loop per socket: the kernel
// spreads clients over the sockets) or any other PacketConn (then
// UDPConfig.Readers loops share it). Serve may run on several PacketConns
// at once (say an IPv4 and an IPv6 socket); each call has its own loops,
// workers and queue.
func (s *UDPServer) Serve(ctx context.Context, pc net.PacketConn) error {
	socks := []net.PacketConn{pc}
	per := s.cfg.Readers
	if g, ok := pc.(*UDPConns); ok {
		socks, per = g.conns, 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &udpRun{
		s: s, ctx: ctx, dl: newDeadlines(ctx), cancel: cancel,
		queue:  make(chan *udpJob, s.cfg.Queue),
		maxNew: maxStalledLoops,
		loops:  make(map[*udpLoop]struct{}),
	}
	r.epoch.Store(1)
	// A deadline in the past wakes blocked reads when ctx ends; one left
	// by an earlier Serve on the same sockets is cleared first.
	for _, c := range socks {
		c.SetReadDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() {
		for _, c := range socks {
			c.SetReadDeadline(time.Unix(1, 0))
		}
	})
	defer stop()

	var workers sync.WaitGroup
	for range s.cfg.Workers {
		workers.Go(r.work)
	}
	monitorDone := make(chan struct{})
	go func() { // owned by Serve, which waits for it below
		defer close(monitorDone)
		r.monitor()
	}()
	r.mu.Lock()
	for _, c := range socks {
		for range per {
			r.startLoop(c, nil)
		}
	}
	r.mu.Unlock()

	<-ctx.Done()
	r.mu.Lock()
	r.stopping = true
	r.mu.Unlock()
	r.wg.Wait() // the loops, the only senders on queue
	<-monitorDone
	close(r.queue)
	workers.Wait()
	return r.err
}

// startLoop starts a read loop on pc. r.mu is held.
func (r *udpRun) startLoop(pc net.PacketConn, inherit *rxBatch) {
	l := &udpLoop{run: r, pc: pc, io: newBatchIO(pc), w: r.s.newWorker(), inherit: inherit}
	l.w.inCall, l.w.epoch, l.w.taken = &l.inCall, &r.epoch, &l.replaced
	l.own = &rxBatch{rx: make([]rxMsg, udpBatch)}
	l.tx = make([]txMsg, udpBatch)
	for i := range l.tx {
		l.tx[i].buf = make([]byte, 0, udpMaxPacket)
	}
	r.loops[l] = struct{}{}
	r.wg.Add(1)
	go l.loop() // owned by udpRun: Serve waits on r.wg
}

func (r *udpRun) fail(err error) {
	r.errOnce.Do(func() { r.err = err })
	r.cancel()
}

// monitor replaces loops stuck in a Backend call (see the top of this
// file) until the run ends.
func (r *udpRun) monitor() {
	t := time.NewTicker(stallTick)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		now := r.epoch.Add(1)
		r.mu.Lock()
		for l := range r.loops {
			e := l.inCall.Load()
			if e == 0 || e&takenMark != 0 || now-e < 2 || r.started >= r.maxNew || r.stopping {
				continue
			}
			// The CAS succeeds only while l is still in the call it
			// started at e, so l.cur is the batch it is answering and
			// stays so until l leaves the call and sees the mark.
			if l.inCall.CompareAndSwap(e, e|takenMark) {
				r.started++
				r.startLoop(l.pc, l.cur.Load())
			}
		}
		r.mu.Unlock()
	}
}

func (l *udpLoop) loop() {
	r := l.run
	defer func() {
		r.mu.Lock()
		delete(r.loops, l)
		if l.replaced.Load() {
			r.started--
		}
		r.mu.Unlock()
		r.wg.Done()
	}()
	if l.inherit != nil {
		l.cur.Store(l.inherit)
		l.answer(l.inherit)
	}
	for !l.replaced.Load() {
		b := l.own
		n, err := l.io.read(b.rx)
		if err != nil {
			if r.ctx.Err() == nil {
				r.fail(fmt.Errorf("tracker: udp read: %w", err))
			}
			return
		}
		b.n = n
		b.next.Store(0)
		l.cur.Store(b)
		l.answer(b)
	}
}

// answer claims and answers b's datagrams until none is left, then sends
// the replies in one batch.
func (l *udpLoop) answer(b *rxBatch) {
	r := l.run
	s := r.s
	now := s.cfg.Now()
	ctx := r.dl.get(time.Now().UnixNano())
	l.w.keys = s.ring.keys()
	out := 0
	for {
		i := int(b.next.Add(1)) - 1
		if i >= b.n {
			break
		}
		m := &b.rx[i]
		reply, deferred := l.w.handle(ctx, l.tx[out].buf[:0], m.buf[:m.n], m.from, now, true)
		if deferred {
			r.hand(m, now, l.pc)
			continue
		}
		if reply != nil {
			l.tx[out].buf, l.tx[out].to = reply, m.from
			out++
		}
	}
	if out > 0 {
		if err := l.io.write(l.tx[:out]); err != nil && !errors.Is(err, net.ErrClosed) {
			s.cfg.Logger.Debug("tracker: udp write failed", "err", err)
		}
	}
}

// hand gives an announce to the workers, or drops it if they are behind.
func (r *udpRun) hand(m *rxMsg, now time.Time, pc net.PacketConn) {
	j := r.s.jobs.Get().(*udpJob)
	j.n = copy(j.buf[:], m.buf[:m.n])
	j.from, j.pc = m.from, pc
	select {
	case r.queue <- j:
	default:
		j.pc = nil
		r.s.jobs.Put(j)
		r.s.drop(dropQueueFull, m.from, now.UnixNano())
	}
}

// work answers handed announces until the queue closes.
func (r *udpRun) work() {
	s := r.s
	w := s.newWorker()
	out := make([]byte, 0, udpMaxPacket)
	for j := range r.queue {
		from := netip.AddrPortFrom(j.from.Addr().Unmap().WithZone(""), j.from.Port())
		pkt := j.buf[:j.n]
		ctx := r.dl.get(time.Now().UnixNano())
		reply := w.announce(ctx, out[:0], pkt, from, binary.BigEndian.Uint32(pkt[12:]))
		writeOne(s, j.pc, reply, j.from)
		j.pc = nil
		s.jobs.Put(j)
	}
}

// writeOne sends one reply (from a worker).
func writeOne(s *UDPServer, pc net.PacketConn, reply []byte, to netip.AddrPort) {
	var err error
	if udp, ok := pc.(*net.UDPConn); ok {
		_, err = udp.WriteToUDPAddrPort(reply, to)
	} else {
		_, err = pc.WriteTo(reply, net.UDPAddrFromAddrPort(to))
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		s.cfg.Logger.Debug("tracker: udp write failed", "to", to, "err", err)
	}
}

// genericIO moves one datagram per call, on any PacketConn.
type genericIO struct {
	pc  net.PacketConn
	udp *net.UDPConn
}

func (g *genericIO) read(rx []rxMsg) (int, error) {
	m := &rx[0]
	var err error
	if g.udp != nil {
		m.n, m.from, err = g.udp.ReadFromUDPAddrPort(m.buf[:])
	} else {
		var a net.Addr
		m.n, a, err = g.pc.ReadFrom(m.buf[:])
		m.from = netip.AddrPort{}
		if ua, ok := a.(*net.UDPAddr); ok {
			m.from = ua.AddrPort()
		}
	}
	if err != nil {
		return 0, err
	}
	return 1, nil
}

func (g *genericIO) write(tx []txMsg) error {
	var first error
	for i := range tx {
		var err error
		if g.udp != nil {
			_, err = g.udp.WriteToUDPAddrPort(tx[i].buf, tx[i].to)
		} else {
			_, err = g.pc.WriteTo(tx[i].buf, net.UDPAddrFromAddrPort(tx[i].to))
		}
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}
