package master

import (
	"errors"
	"net"
	"net/netip"

	"fileshare/client"
)

// serveUDPObserve answers UDP binding requests (client.ParseBindingRequest)
// on the cluster address's UDP port with the address each came from, so
// peers learn their NAT's UDP mapping for hole punching. One goroutine
// reads and answers in place; it allocates nothing per datagram and
// answers only well-formed requests, never with more bytes than came in.
// It runs in m.wg and stops when m.ctx ends (it closes the socket).
func (m *Master) serveUDPObserve() {
	addr := m.mux.Addr().(*net.TCPAddr)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: addr.IP, Port: addr.Port})
	if err != nil {
		m.logger.Warn("no UDP address observation on the cluster port (peers behind NATs use another master for it)", "addr", addr, "err", err)
		return
	}
	m.wg.Go(func() {
		<-m.ctx.Done()
		conn.Close()
	})
	m.wg.Go(func() {
		buf := make([]byte, client.BindingRequestLen+1)
		out := make([]byte, 0, client.BindingRequestLen)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			id, err := client.ParseBindingRequest(buf[:n])
			if err != nil {
				continue
			}
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			out = client.AppendBindingResponse(out[:0], id, from)
			_, _ = conn.WriteToUDPAddrPort(out, from)
		}
	})
}
