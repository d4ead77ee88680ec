package connset

import (
	"errors"
	"io"
	"net"
	"testing"
)

// A closed set severs every connection it held, leaves alone the ones
// removed before, and refuses new ones, which stay the caller's.
func TestCloseSeversHeldAndRefusesNew(t *testing.T) {
	var s Set
	held, heldPeer := net.Pipe()
	gone, gonePeer := net.Pipe()
	defer gone.Close()
	if !s.Add(held) || !s.Add(gone) {
		t.Fatal("Add refused on an open set")
	}
	s.Remove(gone)
	if n := s.Len(); n != 1 {
		t.Fatalf("Len %d after two Adds and a Remove, want 1", n)
	}
	s.Close()
	s.Close() // twice is fine
	if _, err := heldPeer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read from the held connection's peer: %v, want EOF (severed)", err)
	}
	go gone.Write([]byte{1})
	if _, err := gonePeer.Read(make([]byte, 1)); err != nil {
		t.Fatalf("the removed connection was closed too: %v", err)
	}
	late, latePeer := net.Pipe()
	defer late.Close()
	defer latePeer.Close()
	if s.Add(late) {
		t.Fatal("Add held a connection after Close")
	}
	if n := s.Len(); n != 0 {
		t.Fatalf("Len %d after Close, want 0", n)
	}
}
