package jepsenlike

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// iptablesNet injects network faults in the kernel. Every master listens
// and dials on its own loopback IP, so the rule
//
//	-A CHAIN -s 127.0.0.11 -d 127.0.0.12 -j DROP
//
// drops every packet master 1 sends to master 2: one direction of one
// link, for connections either side opened (a TCP connection needs both
// directions, so this also stalls connections master 2 opened to master
// 1). All rules live in one chain of our own, FILESHARE-JEPSEN-<pid>,
// jumped to from OUTPUT (loopback packets traverse OUTPUT once). Set
// replaces the chain's contents atomically with one iptables-restore
// --noflush; Close unhooks, flushes and deletes the chain, touching no
// other rule. Loss uses the statistic match on the same links. Delay needs
// tc netem on lo, which also slows the clients' traffic, so it is only
// used inside a private network namespace and only if the kernel has it.
type iptablesNet struct {
	chain  string
	ips    []string
	netns  bool
	netem  error // nil if tc netem works here
	mu     sync.Mutex
	delay  bool // a netem qdisc is installed
	closed bool
}

// newIptablesNet creates and hooks the chain. netns says the harness runs
// in a private network namespace (see RunInPrivateNetns).
func newIptablesNet(ctx context.Context, ips []string, netns bool) (*iptablesNet, error) {
	n := &iptablesNet{chain: fmt.Sprintf("FILESHARE-JEPSEN-%d", os.Getpid()), ips: ips, netns: netns}
	if err := runCmd(ctx, nil, "iptables", "-w", "-N", n.chain); err != nil {
		return nil, fmt.Errorf("create iptables chain %s: %w", n.chain, err)
	}
	if err := runCmd(ctx, nil, "iptables", "-w", "-I", "OUTPUT", "1", "-j", n.chain); err != nil {
		_ = runCmd(ctx, nil, "iptables", "-w", "-X", n.chain)
		return nil, fmt.Errorf("hook iptables chain %s into OUTPUT: %w", n.chain, err)
	}
	n.netem = errors.New("delay with the kernel mechanism needs a private network namespace, because tc netem on lo would also slow every other program's loopback traffic; use the proxy mechanism")
	if netns {
		n.netem = probeNetem(ctx)
	}
	return n, nil
}

// probeNetem checks that a netem qdisc can be installed on lo.
func probeNetem(ctx context.Context) error {
	if _, err := exec.LookPath("tc"); err != nil {
		return errors.New("delay with the kernel mechanism needs the tc command (apt-get install iproute2); or use the proxy mechanism")
	}
	if err := runCmd(ctx, nil, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms"); err != nil {
		return fmt.Errorf("delay with the kernel mechanism needs tc netem, which this kernel lacks (%v); use the proxy mechanism", err)
	}
	_ = runCmd(ctx, nil, "tc", "qdisc", "del", "dev", "lo", "root")
	return nil
}

func (n *iptablesNet) Describe() string {
	where := "in the host's network namespace"
	if n.netns {
		where = "inside a private network namespace"
	}
	return fmt.Sprintf("kernel packet drops: iptables DROP rules on the masters' loopback addresses in chain %s, %s", n.chain, where)
}

func (n *iptablesNet) Supports(k Kind) error {
	if k == KindDelay {
		return n.netem
	}
	return nil
}

// rules returns the iptables-restore input that makes the chain hold
// exactly the rules for f.
func (n *iptablesNet) rules(f NetFaults) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*filter\n:%s - [0:0]\n", n.chain) // declaring the chain flushes it
	for _, l := range f.Cut {
		fmt.Fprintf(&b, "-A %s -s %s -d %s -j DROP\n", n.chain, n.ips[l.From], n.ips[l.To])
	}
	if f.Loss > 0 {
		for i := range n.ips {
			for j := range n.ips {
				if i != j {
					fmt.Fprintf(&b, "-A %s -s %s -d %s -m statistic --mode random --probability %.4f -j DROP\n", n.chain, n.ips[i], n.ips[j], f.Loss)
				}
			}
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

func (n *iptablesNet) Set(ctx context.Context, f NetFaults) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("the iptables chain was already removed")
	}
	for _, l := range f.Cut {
		if l.From < 0 || l.From >= len(n.ips) || l.To < 0 || l.To >= len(n.ips) {
			return fmt.Errorf("link %d→%d names no master", l.From, l.To)
		}
	}
	if err := runCmd(ctx, strings.NewReader(n.rules(f)), "iptables-restore", "-w", "--noflush"); err != nil {
		return fmt.Errorf("install iptables rules: %w", err)
	}
	switch {
	case f.Delay > 0:
		if n.netem != nil {
			return n.netem
		}
		args := []string{"qdisc", "replace", "dev", "lo", "root", "netem", "delay", ms(f.Delay)}
		if f.Jitter > 0 {
			args = append(args, ms(f.Jitter))
		}
		if err := runCmd(ctx, nil, "tc", args...); err != nil {
			return fmt.Errorf("install netem delay: %w", err)
		}
		n.delay = true
	case n.delay:
		if err := runCmd(ctx, nil, "tc", "qdisc", "del", "dev", "lo", "root"); err != nil {
			return fmt.Errorf("remove netem delay: %w", err)
		}
		n.delay = false
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%dms", d.Milliseconds()) }

// Close removes exactly what newIptablesNet and Set added: the netem
// qdisc, the jump from OUTPUT, and the chain. Each step runs even if an
// earlier one failed; the error lists the commands to run by hand.
func (n *iptablesNet) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	if n.delay {
		if err := runCmd(ctx, nil, "tc", "qdisc", "del", "dev", "lo", "root"); err != nil {
			errs = append(errs, err)
		}
	}
	for _, args := range [][]string{{"-w", "-D", "OUTPUT", "-j", n.chain}, {"-w", "-F", n.chain}, {"-w", "-X", n.chain}} {
		if err := runCmd(ctx, nil, "iptables", args...); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove iptables chain %s: %w; remove it by hand: iptables -D OUTPUT -j %[1]s; iptables -F %[1]s; iptables -X %[1]s", n.chain, errors.Join(errs...))
	}
	return nil
}

// runCmd runs a command and returns its combined output in the error.
func runCmd(ctx context.Context, stdin *strings.Reader, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
