package transport

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// handler is one registered method: decode turns a body into the request
// (keeping no reference to the body), run answers it.
type handler struct {
	name   string
	decode func(body []byte) (any, error)
	run    func(ctx context.Context, req any) (any, error)
	weight atomic.Int64 // what a reply is expected to weigh, in bytes
	peak   atomic.Int64 // the heaviest reply lately
	peakAt atomic.Int64 // when peak was last set or halved, Unix nanoseconds
}

// Reply weights. A call reserves, before it runs, what its method's
// replies are expected to weigh; the reservation becomes the reply's real
// size once it is made. The expectation starts at initialWeight, rises at
// once to any heavier reply and decays slowly towards lighter ones, and it
// never falls below peakShare of the heaviest reply of the last
// peakHalfLife (which halves after that long without one as heavy): so a
// client cannot make heavy calls look cheap by first making many light
// ones, and a burst of heavy calls admitted at a light expectation is
// bounded by the connection's, the source's and the server's byte caps
// divided by that floor.
const (
	initialWeight = 256 << 10
	minWeight     = 256
	peakShare     = 8
	peakHalfLife  = 5 * time.Minute
)

func (h *handler) expect() int {
	if h == nil {
		return minWeight
	}
	w := h.weight.Load()
	if w <= 0 {
		return initialWeight
	}
	return int(max(w, h.peak.Load()/peakShare))
}

func (h *handler) observe(n int) {
	if h == nil {
		return
	}
	w := int64(initialWeight)
	if cur := h.weight.Load(); cur > 0 {
		w = cur
	}
	h.weight.Store(max(int64(n), w-w/16, minWeight))
	now := time.Now().UnixNano()
	switch p := h.peak.Load(); {
	case int64(n) >= p:
		h.peak.Store(int64(n))
		h.peakAt.Store(now)
	case now-h.peakAt.Load() > int64(peakHalfLife):
		h.peak.Store(max(int64(n), p/2))
		h.peakAt.Store(now)
	}
}

// connState is what a connection's calls share: its handler slots, its
// reply bytes, and the count of calls its close waits for.
type connState struct {
	src         Source
	chargeBytes bool  // replies also count against the source's and the server's byte caps
	calls       quota // handler slots of this connection
	bytes       quota // reply bytes expected, queued or being written
	inflight    sync.WaitGroup
	dead        <-chan struct{} // closed when the connection's writer fails
}

// admit takes a handler slot and weight reply bytes for one call of cs,
// waiting until they fit. It reports false if the connection or the
// server ended first.
func (s *Server) admit(cs *connState, member bool, weight int) bool {
	pool := &s.calls
	if member {
		pool = &s.memberCalls
	}
	qs := [4]*quota{&cs.calls, &cs.bytes, pool, &s.bytes}
	n := 3
	if cs.chargeBytes {
		n = 4
	}
	for {
		if s.tryAdmit(cs, member, weight) {
			return true
		}
		var chans [4]<-chan struct{}
		for i, q := range qs[:n] {
			chans[i] = q.waitCh()
		}
		// Look again once registered, so no release in between is missed.
		ok := s.tryAdmit(cs, member, weight)
		if !ok && !s.waitAny(cs, chans) {
			for _, q := range qs[:n] {
				q.doneWaiting()
			}
			return false
		}
		for _, q := range qs[:n] {
			q.doneWaiting()
		}
		if ok {
			return true
		}
	}
}

// waitAny waits for a release on any of chans; false if the connection or
// the server ended first.
func (s *Server) waitAny(cs *connState, c [4]<-chan struct{}) bool {
	select {
	case <-c[0]:
	case <-c[1]:
	case <-c[2]:
	case <-c[3]:
	case <-cs.dead:
		return false
	case <-s.ctx.Done():
		return false
	}
	return true
}

func (s *Server) tryAdmit(cs *connState, member bool, weight int) bool {
	pool := &s.calls
	if member {
		pool = &s.memberCalls
	}
	if !cs.calls.tryAcquire(Source{}, 1) {
		return false
	}
	if !cs.bytes.tryAcquire(Source{}, weight) {
		cs.calls.release(Source{}, 1)
		return false
	}
	if !pool.tryAcquire(cs.src, 1) {
		cs.calls.release(Source{}, 1)
		cs.bytes.release(Source{}, weight)
		return false
	}
	if cs.chargeBytes && !s.bytes.tryAcquire(cs.src, weight) {
		cs.calls.release(Source{}, 1)
		cs.bytes.release(Source{}, weight)
		pool.release(cs.src, 1)
		return false
	}
	return true
}

// reweigh turns a call's byte reservation from what was expected into
// what its reply weighs.
func (s *Server) reweigh(cs *connState, expected, actual int) {
	switch d := actual - expected; {
	case d > 0:
		cs.bytes.force(Source{}, d)
		if cs.chargeBytes {
			s.bytes.force(cs.src, d)
		}
	case d < 0:
		s.written(cs, -d)
	}
}

// written releases n reply bytes of cs: written to the connection, or
// dropped with it.
func (s *Server) written(cs *connState, n int) {
	cs.bytes.release(Source{}, n)
	if cs.chargeBytes {
		s.bytes.release(cs.src, n)
	}
}

// busy returns the handlers running (or admitted to run) now.
func (s *Server) busy() int {
	_, a := s.calls.usedBy(Source{})
	_, b := s.memberCalls.usedBy(Source{})
	return a + b
}
