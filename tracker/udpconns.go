package tracker

import (
	"context"
	"errors"
	"net"
	"runtime"
	"time"
)

// UDPConns is a set of UDP sockets bound to one address, made by
// ListenUDP. With SO_REUSEPORT (Linux) the kernel spreads datagrams over
// the sockets by source, so each of UDPServer.Serve's read loops has a
// socket of its own and no loop waits on another's lock.
//
// It is a net.PacketConn so a caller can treat it as one socket:
// ReadFrom and WriteTo use the first socket, LocalAddr is the shared
// address, Close and the deadlines apply to all of them.
type UDPConns struct {
	conns []net.PacketConn
}

// ListenUDP listens on the UDP address addr (network "udp", "udp4" or
// "udp6", as net.ListenPacket) with n sockets sharing it through
// SO_REUSEPORT, where the system has it (Linux), else with one. n ≤ 0
// means GOMAXPROCS. If addr's port is 0 the first socket picks one and
// the others join it.
func ListenUDP(ctx context.Context, network, addr string, n int) (*UDPConns, error) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	if !reusePortSupported {
		n = 1
	}
	lc := net.ListenConfig{Control: reusePortControl}
	g := &UDPConns{}
	for i := range n {
		a := addr
		if i > 0 {
			a = g.conns[0].LocalAddr().String()
		}
		pc, err := lc.ListenPacket(ctx, network, a)
		if err != nil {
			g.Close()
			return nil, err
		}
		g.conns = append(g.conns, pc)
	}
	return g, nil
}

// Conns returns the sockets.
func (g *UDPConns) Conns() []net.PacketConn { return g.conns }

// ReadFrom reads from the first socket.
func (g *UDPConns) ReadFrom(p []byte) (int, net.Addr, error) { return g.conns[0].ReadFrom(p) }

// WriteTo writes from the first socket.
func (g *UDPConns) WriteTo(p []byte, a net.Addr) (int, error) { return g.conns[0].WriteTo(p, a) }

// LocalAddr returns the address every socket is bound to.
func (g *UDPConns) LocalAddr() net.Addr { return g.conns[0].LocalAddr() }

// Close closes every socket.
func (g *UDPConns) Close() error {
	var errs []error
	for _, c := range g.conns {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// SetDeadline sets every socket's deadlines.
func (g *UDPConns) SetDeadline(t time.Time) error {
	return g.each(func(c net.PacketConn) error { return c.SetDeadline(t) })
}

// SetReadDeadline sets every socket's read deadline.
func (g *UDPConns) SetReadDeadline(t time.Time) error {
	return g.each(func(c net.PacketConn) error { return c.SetReadDeadline(t) })
}

// SetWriteDeadline sets every socket's write deadline.
func (g *UDPConns) SetWriteDeadline(t time.Time) error {
	return g.each(func(c net.PacketConn) error { return c.SetWriteDeadline(t) })
}

func (g *UDPConns) each(f func(net.PacketConn) error) error {
	var errs []error
	for _, c := range g.conns {
		errs = append(errs, f(c))
	}
	return errors.Join(errs...)
}
