//go:build !linux

package tracker

import "net"

// newBatchIO returns an I/O that moves one datagram per system call:
// recvmmsg and sendmmsg are Linux's.
func newBatchIO(pc net.PacketConn) batchIO {
	udp, _ := pc.(*net.UDPConn)
	return &genericIO{pc: pc, udp: udp}
}
