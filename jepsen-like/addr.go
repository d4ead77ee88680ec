package jepsenlike

import (
	"fmt"
	"net"
	"time"

	"fileshare/internal/freeport"
)

// nodeAddrs are the addresses of one master.
type nodeAddrs struct {
	// IP is the loopback address the master owns: it listens and dials
	// from it, so a packet's source or destination IP names the master.
	IP string
	// Listen is where the master's cluster port listens.
	Listen string
	// Advertise is where every other master and every client reaches it:
	// Listen itself, or the address of the proxy in front of it.
	Advertise string
	// HTTP is the master's status port (never faulted).
	HTTP string
	// Tracker is the master's BitTorrent HTTP tracker, on IP: the
	// tracker workload's clients announce here. Client traffic is not
	// faulted (as in Jepsen, a client reaches its node), but what the
	// master relays to the leader crosses the faulted links.
	Tracker string
	// Proxy is the listen address of the proxy in front of the master, or
	// "" when there is none.
	Proxy string
}

// nodeIP is the loopback address of master i (0-based): 127.0.0.11,
// 127.0.0.12, ... Linux routes all of 127.0.0.0/8 to the loopback
// interface, so these work without configuration.
func nodeIP(i int) string { return fmt.Sprintf("127.0.0.%d", 11+i) }

// probeIP checks that a listener can bind ip and that a connection dialled
// from ip reaches it: both are needed for per-link faults.
func probeIP(ip string) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return err
	}
	defer ln.Close()
	d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	c.Close()
	return nil
}

// planAddrs chooses every master's addresses. Each master gets its own
// loopback IP if the system routes them (Linux does; macOS needs an alias
// per address); otherwise all share 127.0.0.1 and perNodeIP is false,
// which rules out per-link network faults. With proxies, each master also
// gets a proxy port on its IP, which becomes its advertised address.
func planAddrs(n int, withProxy bool) (addrs []nodeAddrs, perNodeIP bool, err error) {
	perNodeIP = true
	for i := range n {
		if probeIP(nodeIP(i)) != nil {
			perNodeIP = false
			break
		}
	}
	for i := range n {
		ip := "127.0.0.1"
		if perNodeIP {
			ip = nodeIP(i)
		}
		a := nodeAddrs{IP: ip}
		ports := make([]string, 4)
		for j := range ports {
			if ports[j], err = freeport.Port(ip); err != nil {
				return nil, false, fmt.Errorf("find a free port on %s: %w", ip, err)
			}
		}
		a.Listen = net.JoinHostPort(ip, ports[0])
		a.HTTP = net.JoinHostPort(ip, ports[1])
		a.Tracker = net.JoinHostPort(ip, ports[3])
		a.Advertise = a.Listen
		if withProxy {
			a.Proxy = net.JoinHostPort(ip, ports[2])
			a.Advertise = a.Proxy
		}
		addrs = append(addrs, a)
	}
	return addrs, perNodeIP, nil
}
