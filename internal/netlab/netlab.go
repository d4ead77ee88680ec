package netlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"fileshare/internal/defaults"
	"fileshare/internal/poll"
)

// Errors New and Available return; test them with errors.Is.
var (
	// ErrNotRoot means the process is not root, which creating network
	// namespaces needs.
	ErrNotRoot = errors.New("netlab: network namespaces need root; run the tests as root (sudo) or in CI")
	// ErrNoIP means the ip(8) tool is missing.
	ErrNoIP = errors.New("netlab: the ip tool is missing; install iproute2")
)

// Available returns nil if this process can build labs, else ErrNotRoot or
// ErrNoIP.
func Available() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return ErrNoIP
	}
	return nil
}

// Config describes a lab. A zero field means the default.
type Config struct {
	// Hosts is how many host namespaces to create. Default 1.
	Hosts int
	// HubAddrs is how many addresses the hub's bridge gets besides its
	// own (Layout.HubAddrs), for example one per server so each listens
	// on its own IP. Default 0, at most 90.
	HubAddrs int
	// Logger receives one line per namespace created and deleted. Nil
	// discards.
	Logger *slog.Logger
}

// NS is one network namespace of a lab and its address on the bridge.
type NS struct {
	Name string     `json:"name"`
	Addr netip.Addr `json:"addr"`
}

// Command returns a command that runs name with args inside n, through
// `ip netns exec`. Its Process is the program's own (ip execs it), so a
// caller stops it by PID as it would any child.
func (n NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Layout is a lab's names and addresses, as data.
type Layout struct {
	// Prefix is the bridge's subnet, a /24.
	Prefix netip.Prefix `json:"prefix"`
	// Hub is the namespace with the bridge; Hub.Addr is the bridge's
	// first address.
	Hub NS `json:"hub"`
	// HubAddrs are further addresses of the bridge (Config.HubAddrs).
	HubAddrs []netip.Addr `json:"hub_addrs"`
	// Hosts are the host namespaces, each with one veth into the bridge.
	Hosts []NS `json:"hosts"`
}

// Lab is a built lab. Close deletes it.
type Lab struct {
	Layout
	log     *slog.Logger
	suffix  string   // in every namespace name, unique to the lab
	created []string // namespaces that exist, in creation order
}

// The address plan inside Prefix: the hub's own address, then its
// extra ones, then the hosts.
const (
	hubHost   = 1
	extraHost = 2
	firstHost = 100
	maxExtra  = firstHost - extraHost
	maxHosts  = 254 - firstHost
)

// New creates the namespaces, the bridge and the veth pairs of cfg, with
// every link up. On error it deletes what it created. It blocks while ip
// runs; ctx bounds the whole.
func New(ctx context.Context, cfg Config) (*Lab, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	defaults.Fill(&cfg.Hosts, 1)
	if cfg.Hosts < 0 || cfg.Hosts > maxHosts || cfg.HubAddrs < 0 || cfg.HubAddrs > maxExtra {
		return nil, fmt.Errorf("netlab: %d hosts and %d hub addresses do not fit one /24; use at most %d and %d", cfg.Hosts, cfg.HubAddrs, maxHosts, maxExtra)
	}
	return newLab(ctx, cfg, netip.Addr{})
}

// newLab builds the hub and hosts of cfg, with a fresh random suffix in
// the namespace names (Lab.suffix) and the bridge's /24 at base, or at a
// random 10.77.x.0/24 if base is the zero Addr. It does not check cfg.
func newLab(ctx context.Context, cfg Config, base netip.Addr) (*Lab, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	if !base.IsValid() {
		base = netip.AddrFrom4([4]byte{10, 77, rnd[3], 0})
	}
	suffix := hex.EncodeToString(rnd[:3])
	at := func(host byte) netip.Addr { a := base.As4(); a[3] = host; return netip.AddrFrom4(a) }

	l := &Lab{log: log, suffix: suffix}
	l.Prefix = netip.PrefixFrom(base, 24)
	l.Hub = NS{Name: "fsl-" + suffix + "-hub", Addr: at(hubHost)}
	for i := range cfg.HubAddrs {
		l.HubAddrs = append(l.HubAddrs, at(byte(extraHost+i)))
	}
	for i := range cfg.Hosts {
		l.Hosts = append(l.Hosts, NS{Name: "fsl-" + suffix + "-h" + strconv.Itoa(i), Addr: at(byte(firstHost + i))})
	}
	if err := l.build(ctx); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return l, nil
}

func (l *Lab) build(ctx context.Context) error {
	if err := l.addNS(ctx, l.Hub.Name); err != nil {
		return err
	}
	hub := l.Hub.Name
	steps := [][]string{
		{"-n", hub, "link", "add", "br0", "type", "bridge"},
		{"-n", hub, "addr", "add", l.Hub.Addr.String() + "/24", "dev", "br0"},
	}
	for _, a := range l.HubAddrs {
		steps = append(steps, []string{"-n", hub, "addr", "add", a.String() + "/24", "dev", "br0"})
	}
	steps = append(steps, []string{"-n", hub, "link", "set", "br0", "up"})
	if err := ipAll(ctx, steps); err != nil {
		return err
	}
	for i, h := range l.Hosts {
		if err := l.addNS(ctx, h.Name); err != nil {
			return err
		}
		// The pair is born in the hub, its far end moved straight into
		// the host: no interface ever appears in the root namespace.
		veth := "vh" + strconv.Itoa(i)
		if err := ipAll(ctx, [][]string{
			{"-n", hub, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h.Name},
			{"-n", hub, "link", "set", veth, "master", "br0", "up"},
			{"-n", h.Name, "addr", "add", h.Addr.String() + "/24", "dev", "eth0"},
			{"-n", h.Name, "link", "set", "eth0", "up"},
		}); err != nil {
			return err
		}
	}
	return nil
}

// addNS creates namespace name with its loopback up.
func (l *Lab) addNS(ctx context.Context, name string) error {
	if err := ip(ctx, "netns", "add", name); err != nil {
		return err
	}
	l.created = append(l.created, name)
	l.log.Info("network namespace created", "ns", name)
	return ip(ctx, "-n", name, "link", "set", "lo", "up")
}

// Close SIGKILLs every process left in the lab's namespaces, waits until
// they are gone (at most 10 s), and deletes the namespaces, hosts first.
// It is safe to call twice. It returns what failed, all of it.
func (l *Lab) Close() error {
	var errs []error
	for i := len(l.created) - 1; i >= 0; i-- {
		name := l.created[i]
		if err := killAll(name); err != nil {
			errs = append(errs, err)
		}
		if err := ip(context.Background(), "netns", "del", name); err != nil {
			errs = append(errs, err)
			continue
		}
		l.log.Info("network namespace deleted", "ns", name)
	}
	l.created = nil
	return errors.Join(errs...)
}

// killAll SIGKILLs, by PID, every process in namespace name (each one a
// process the lab's user started there, as nothing else can enter it),
// again and again until none is left or 10 s have passed.
func killAll(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var pids []int
	var err error
	if poll.Wait(ctx, func() bool {
		pids, err = PIDs(name)
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return err != nil || len(pids) == 0
	}) != nil {
		return fmt.Errorf("netlab: processes %v in %s outlived SIGKILL for 10s", pids, name)
	}
	return err
}

// PIDs returns the processes in namespace name (`ip netns pids`).
func PIDs(name string) ([]int, error) {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return nil, fmt.Errorf("netlab: list processes in %s: %w", name, exitDetail(err))
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

func ipAll(ctx context.Context, steps [][]string) error {
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// ip runs ip(8) with args; its error names the command and ip's stderr.
func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("netlab: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func exitDetail(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return err
}
