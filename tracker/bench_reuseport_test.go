package tracker_test

import (
	"context"
	"testing"

	"fileshare/tracker"
	"fileshare/tracker/trackertest"
)

// BenchmarkUDPAnnounceThroughputReusePort is BenchmarkUDPAnnounceThroughput
// on ListenUDP's sockets (one per GOMAXPROCS, SO_REUSEPORT on Linux).
func BenchmarkUDPAnnounceThroughputReusePort(b *testing.B) {
	s := newUDP(b, &trackertest.MemoryBackend{}, tracker.UDPConfig{})
	pc, err := tracker.ListenUDP(context.Background(), "udp4", "127.0.0.1:0", 0)
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc) }()
	defer func() { cancel(); <-done }()
	udpLoad(b, pc.LocalAddr().String(), 8, 32)
}
