package jepsenlike

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"time"
)

// NetMode chooses how network faults are injected.
type NetMode string

const (
	// NetAuto uses the kernel (NetIptables) when running as root with the
	// iptables command available, and proxies otherwise.
	NetAuto NetMode = "auto"
	// NetIptables drops packets in the kernel with iptables rules on the
	// masters' loopback addresses (and delays them with tc netem where the
	// kernel has it). Needs root.
	NetIptables NetMode = "iptables"
	// NetProxy puts a userspace TCP proxy in front of every master and
	// stalls, delays or holds back the bytes of a cut link. Needs nothing.
	NetProxy NetMode = "proxy"
	// netNone is used when no network fault was asked for.
	netNone NetMode = "none"
)

// ErrNeedsRoot means the kernel mechanism was asked for without the
// privileges or tools it needs.
var ErrNeedsRoot = errors.New("the iptables mechanism needs root and the iptables and iptables-restore commands (apt-get install iptables); without them use the proxy mechanism")

// ResolveNet turns auto into a concrete mechanism and checks that an
// explicit choice can work. why explains the choice in plain words.
func ResolveNet(mode NetMode) (resolved NetMode, why string, err error) {
	switch mode {
	case "", NetAuto:
		if os.Geteuid() != 0 {
			return NetProxy, "not running as root, so network faults use userspace proxies", nil
		}
		if !iptablesInstalled() {
			return NetProxy, "running as root but the iptables command is missing (apt-get install iptables), so network faults use userspace proxies", nil
		}
		return NetIptables, "running as root with iptables, so network faults drop packets in the kernel", nil
	case NetIptables:
		if os.Geteuid() != 0 || !iptablesInstalled() {
			return "", "", ErrNeedsRoot
		}
		return NetIptables, "iptables: packets are dropped in the kernel", nil
	case NetProxy:
		return NetProxy, "proxy: network faults use userspace proxies", nil
	}
	return "", "", configErr("Net", "{Net} %q: use auto, iptables or proxy", mode)
}

func iptablesInstalled() bool {
	for _, cmd := range []string{"iptables", "iptables-restore"} {
		if _, err := exec.LookPath(cmd); err != nil {
			return false
		}
	}
	return true
}

// NetFaults is the complete set of network faults in force at one time.
// The zero value is a healthy network.
type NetFaults struct {
	// Cut lists the directions of links that drop every packet.
	Cut []Link
	// Delay (plus up to Jitter more) is added to every packet between
	// masters.
	Delay, Jitter time.Duration
	// Loss is the fraction (0..1) of packets between masters dropped.
	Loss float64
}

func (f NetFaults) cut(from, to int) bool { return slices.Contains(f.Cut, Link{from, to}) }

// netInjector injects network faults between masters. Set replaces
// whatever faults were in force with f (so Set(ctx, NetFaults{}) heals
// everything). Close heals and releases every rule, proxy and goroutine;
// it is safe to call more than once. Methods are called from one
// goroutine at a time (the nemesis, then the teardown).
type netInjector interface {
	Set(ctx context.Context, f NetFaults) error
	Close() error
	// Supports reports whether kind can be injected, and if not why.
	Supports(kind Kind) error
	// Describe says what the mechanism is, for the report.
	Describe() string
}

// noNet is the injector used when no network fault was asked for.
type noNet struct{}

func (noNet) Set(_ context.Context, f NetFaults) error {
	if len(f.Cut) > 0 || f.Delay > 0 || f.Loss > 0 {
		return errors.New("no network fault mechanism is set up")
	}
	return nil
}
func (noNet) Close() error          { return nil }
func (noNet) Supports(k Kind) error { return fmt.Errorf("%s needs a network fault mechanism", k) }
func (noNet) Describe() string      { return "none (no network faults were asked for)" }
