package netlab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
)

// NATKind is how a home router maps its hosts' connections onto its one
// public address.
type NATKind int

const (
	// PortPreserving is Linux MASQUERADE as most home routers behave: a
	// connection keeps its source port on the public side whenever that
	// port is free there, so the mapping a master observes is the one
	// every other destination sees too. UDP hole punching works through
	// it.
	PortPreserving NATKind = iota
	// PortRandom is MASQUERADE --random-fully: every new connection gets
	// a random public port, so the mapping a master observes says nothing
	// about the next destination's (a "symmetric" NAT). Hole punching
	// between two of them fails; only a relay connects them.
	PortRandom
)

func (k NATKind) String() string {
	if k == PortRandom {
		return "port-random"
	}
	return "port-preserving"
}

// ErrNoIptables means iptables(8), which the NAT routers need, is missing.
var ErrNoIptables = errors.New("netlab: iptables is missing; install the iptables package")

// NATAvailable returns nil if this process can build NAT labs: root, ip(8)
// and iptables(8).
func NATAvailable() error {
	if err := Available(); err != nil {
		return err
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		return ErrNoIptables
	}
	return nil
}

// NATConfig describes a NAT lab: a public network (the hub's bridge, with
// the masters' addresses and public hosts) and homes, each one host behind
// its own router doing NAT. A zero field means the default.
type NATConfig struct {
	// Public is how many hosts sit on the public network. Default 0.
	Public int
	// PublicAddrs is how many extra addresses the hub's bridge gets, for
	// servers (masters) run in the hub namespace. Default 0.
	PublicAddrs int
	// Homes lists one NAT kind per home. At most 15.
	Homes []NATKind
	// Logger receives one line per namespace created and deleted.
	Logger *slog.Logger
}

// Home is one home network: a host behind a router. The router's eth0 is
// on the public network (Router.Addr is the home's public address); its
// lan0 leads to the host, which has a private address and a default route
// through the router.
type Home struct {
	Kind   NATKind `json:"kind"`
	Router NS      `json:"router"`
	Host   NS      `json:"host"`
}

// NATLayout is a NAT lab's names and addresses, as data.
type NATLayout struct {
	// Public is the public network's namespaces: Public.Hub holds the
	// bridge (its servers use Public.HubAddrs), Public.Hosts the public
	// hosts. The routers' public sides are on the bridge too.
	Public Layout `json:"public"`
	// Homes are the home networks, in NATConfig.Homes order.
	Homes []Home `json:"homes"`
}

// NATLab is a built NAT lab. Close deletes it.
type NATLab struct {
	NATLayout
	lab *Lab
}

// Addresses: the public network is TEST-NET-3 (203.0.113.0/24); home i's
// network is the /28 at 192.0.2.16*(i+1) of TEST-NET-1, its router at .1
// and its host at .2 of it. Documentation ranges exist only inside the
// lab's namespaces, so nothing outside can collide with or route to them.
var (
	publicBase = netip.AddrFrom4([4]byte{203, 0, 113, 0})
	maxHomes   = 15
)

func homeAddr(i, host int) netip.Addr {
	return netip.AddrFrom4([4]byte{192, 0, 2, byte(16*(i+1) + host)})
}

// NewNAT builds a NAT lab. Each router forwards between its home and the
// public network, rewrites the home's outgoing connections to its public
// address (iptables MASQUERADE, with --random-fully for PortRandom), and
// drops every packet from outside that belongs to no connection the home
// opened, as a home router does (packets to the router itself
// included). On error it deletes what it created.
func NewNAT(ctx context.Context, cfg NATConfig) (*NATLab, error) {
	if err := NATAvailable(); err != nil {
		return nil, err
	}
	if len(cfg.Homes) > maxHomes {
		return nil, fmt.Errorf("netlab: %d homes; at most %d fit the home address plan", len(cfg.Homes), maxHomes)
	}
	if cfg.Public < 0 || cfg.Public+len(cfg.Homes) > maxHosts || cfg.PublicAddrs < 0 || cfg.PublicAddrs > maxExtra {
		return nil, fmt.Errorf("netlab: %d public hosts, %d homes and %d public addresses do not fit one /24", cfg.Public, len(cfg.Homes), cfg.PublicAddrs)
	}
	lab, err := newLab(ctx, Config{Hosts: cfg.Public + len(cfg.Homes), HubAddrs: cfg.PublicAddrs, Logger: cfg.Logger}, publicBase)
	if err != nil {
		return nil, err
	}
	n := &NATLab{lab: lab}
	n.Public = lab.Layout
	n.Public.Hosts = lab.Hosts[:cfg.Public]
	for i, kind := range cfg.Homes {
		router := lab.Hosts[cfg.Public+i]
		h := Home{Kind: kind, Router: router, Host: NS{Name: "fsl-" + lab.suffix + "-home" + strconv.Itoa(i), Addr: homeAddr(i, 2)}}
		if err := n.buildHome(ctx, i, h); err != nil {
			return nil, errors.Join(err, n.Close())
		}
		n.Homes = append(n.Homes, h)
	}
	return n, nil
}

func (n *NATLab) buildHome(ctx context.Context, i int, h Home) error {
	if err := n.lab.addNS(ctx, h.Host.Name); err != nil {
		return err
	}
	r := h.Router.Name
	gw := homeAddr(i, 1)
	if err := ipAll(ctx, [][]string{
		{"-n", r, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", h.Host.Name},
		{"-n", r, "addr", "add", gw.String() + "/28", "dev", "lan0"},
		{"-n", r, "link", "set", "lan0", "up"},
		{"-n", h.Host.Name, "addr", "add", h.Host.Addr.String() + "/28", "dev", "eth0"},
		{"-n", h.Host.Name, "link", "set", "eth0", "up"},
		{"-n", h.Host.Name, "route", "add", "default", "via", gw.String()},
	}); err != nil {
		return err
	}
	masq := []string{"-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j", "MASQUERADE"}
	if h.Kind == PortRandom {
		masq = append(masq, "--random-fully")
	}
	for _, args := range [][]string{
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"iptables", "-P", "FORWARD", "DROP"},
		{"iptables", "-A", "FORWARD", "-i", "lan0", "-o", "eth0", "-j", "ACCEPT"},
		{"iptables", "-A", "FORWARD", "-i", "eth0", "-o", "lan0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
		// Unsolicited packets to the router itself are dropped, as a home
		// router's firewall does. This matters beyond politeness: a
		// packet the router accepted would leave a conntrack entry for
		// its address and port, and the mapping of the home's next
		// connection to that peer could then not keep its port.
		{"iptables", "-A", "INPUT", "-i", "eth0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
		{"iptables", "-A", "INPUT", "-i", "eth0", "-j", "DROP"},
		append([]string{"iptables"}, masq...),
	} {
		if err := runIn(ctx, r, args...); err != nil {
			return err
		}
	}
	return nil
}

// ForwardPort makes home i's router forward proto ("tcp" or "udp") port
// on its public address to the same port of the home's host, as a port
// forwarded by hand (or by UPnP) does.
func (n *NATLab) ForwardPort(ctx context.Context, i int, proto string, port int) error {
	h := n.Homes[i]
	p := strconv.Itoa(port)
	for _, args := range [][]string{
		{"iptables", "-t", "nat", "-A", "PREROUTING", "-i", "eth0", "-p", proto, "--dport", p, "-j", "DNAT", "--to-destination", h.Host.Addr.String() + ":" + p},
		{"iptables", "-I", "FORWARD", "-i", "eth0", "-o", "lan0", "-p", proto, "-d", h.Host.Addr.String(), "--dport", p, "-j", "ACCEPT"},
	} {
		if err := runIn(ctx, h.Router.Name, args...); err != nil {
			return err
		}
	}
	return nil
}

// FlushMappings forgets every NAT mapping of home i's router (its
// conntrack table), as a router does when its mappings time out or it
// reboots: connections through it stall, and the next packet out gets a
// new mapping. It needs conntrack(8).
func (n *NATLab) FlushMappings(ctx context.Context, i int) error {
	return runIn(ctx, n.Homes[i].Router.Name, "conntrack", "-F")
}

// Close SIGKILLs every process left in the lab and deletes its
// namespaces. Safe to call twice.
func (n *NATLab) Close() error { return n.lab.Close() }

// runIn runs a program inside namespace ns; its error names the command
// and its output.
func runIn(ctx context.Context, ns string, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("netlab: in %s: %s: %w: %s", ns, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
