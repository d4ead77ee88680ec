// Package connset holds the connections a server has open, so that
// closing the server severs every one of them, and a connection accepted
// while it closes is refused instead of escaping.
//
// A server Adds each connection it accepts (closing it itself if Add
// refuses), Removes it when its handler is done, and Closes the set when
// it shuts down:
//
//	if !s.conns.Add(c) {
//		c.Close()
//		return
//	}
//	defer s.conns.Remove(c)
package connset

import (
	"net"
	"sync"
)

// Set is a set of open connections. The zero Set is empty and open. It
// is safe for concurrent use; it must not be copied after first use.
type Set struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// Add holds c until Remove or Close. Once Close has run it holds nothing
// and returns false: the caller still owns c, and closes it.
func (s *Set) Add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[net.Conn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

// Remove stops holding c. It does not close c.
func (s *Set) Remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Len returns the number of connections held.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close closes every connection held, and from then on Add refuses. It
// does not wait for their handlers. Safe to call more than once.
func (s *Set) Close() {
	s.mu.Lock()
	conns := s.conns
	s.conns, s.closed = nil, true
	s.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}
