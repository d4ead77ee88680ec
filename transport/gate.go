package transport

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Gate decides, beyond what a certificate proves, what its holder may do
// now: whether its serial is revoked, whether the master it names is a
// member of the cluster. A certificate is proved once, at the handshake;
// membership and revocations change while connections stay open, so the
// Mux asks the Gate at the handshake, again for every open connection
// whenever Version changes (closing those that lost rights), and the RPC
// Server again before the next call of a connection. A master implements
// it; a node without one (a peer) trusts what certificates prove.
//
// Its methods are called from many goroutines at once and must not block.
type Gate interface {
	// Vet returns c as the node sees it now: with Member set if c names
	// a current member, with Outsider set if a CA-signed certificate
	// gives no rights now. An error refuses the caller outright (a
	// revoked certificate): its connections are closed.
	Vet(c Caller) (Caller, error)
	// Version changes whenever Vet might answer differently.
	Version() uint64
	// Reserved reports whether ip is the address of a current member,
	// whose connections may use the capacity the Mux keeps for members
	// before they have authenticated (MuxConfig.MaxMemberConns).
	Reserved(ip netip.Addr) bool
}

// ErrRevoked means the caller's certificate is on the cluster's deny
// list.
var ErrRevoked = NewError("revoked", "the certificate the caller presented is revoked")

// recheckEvery is how often the Mux looks whether its Gate or its CA
// changed, and re-checks open connections if so.
const recheckEvery = 250 * time.Millisecond

// errLostRights closes a connection whose identity no longer allows what
// it was admitted for.
var errLostRights = errors.New("its certificate no longer gives the rights it was admitted with")

// lostRights reports whether now allows less than was.
func lostRights(was, now Caller) bool {
	return now.Role < was.Role || (now.Outsider && !was.Outsider) || (was.Member && !now.Member)
}

// recheckLoop re-checks open connections whenever the Gate's version or
// the CA changes. Owned by m; it ends when m closes.
func (m *Mux) recheckLoop() {
	defer m.wg.Done()
	t := time.NewTicker(recheckEvery)
	defer t.Stop()
	gate, ca := m.gateVersion(), m.cfg.TLS.CAGeneration()
	for {
		select {
		case <-m.closed:
			return
		case <-t.C:
		}
		g, c := m.gateVersion(), m.cfg.TLS.CAGeneration()
		if g == gate && c == ca {
			continue
		}
		m.recheck(c != ca)
		gate, ca = g, c
	}
}

func (m *Mux) gateVersion() uint64 {
	if m.cfg.Gate == nil {
		return 0
	}
	return m.cfg.Gate.Version()
}

// vet classifies a presented chain with the CA as loaded now and asks the
// Gate about it.
func (m *Mux) vet(base Caller) (Caller, error) {
	if m.cfg.Gate == nil {
		return base, nil
	}
	return m.cfg.Gate.Vet(base)
}

// Recheck looks at every open connection the Mux handed out again, as if
// it were new: its certificate against the CA as loaded now, the Gate,
// and Authorize for its stream kind. It closes each one that is refused
// now or allows less than when it was admitted (a revoked certificate, a
// master removed from the cluster, a CA that no longer signs it). It
// returns how many it closed. The Mux calls it on its own when its Gate's
// version or its CA changes; a node may call it after any change of its
// own.
func (m *Mux) Recheck() int { return m.recheck(true) }

// recheck is Recheck; verifying certificate chains again (costly, one
// signature check each) is skipped unless the CA may have changed.
func (m *Mux) recheck(reverify bool) int {
	m.mu.Lock()
	conns := make([]*callerConn, 0, len(m.routed))
	for c := range m.routed {
		conns = append(conns, c)
	}
	m.mu.Unlock()
	closed := 0
	for _, c := range conns {
		if m.recheckOne(c, reverify) {
			closed++
		}
	}
	return closed
}

// recheckOne looks at one open connection again and closes it if it is
// refused now or allows less than when it was admitted; it reports
// whether it closed it.
func (m *Mux) recheckOne(c *callerConn, reverify bool) bool {
	base := c.base
	if reverify && m.cfg.TLS != nil && len(c.chain) > 0 {
		base = m.cfg.TLS.Classify(c.chain)
		base.Addr = c.base.Addr
	}
	now, err := m.vet(base)
	if err == nil && m.cfg.Authorize != nil {
		err = m.cfg.Authorize(c.kind, now)
	}
	if err == nil && lostRights(c.caller, now) {
		err = errLostRights
	}
	if err == nil {
		return false
	}
	m.logger.Warn("closing connection: its caller lost its rights", "remote", c.RemoteAddr(), "kind", c.kind, "caller", c.caller.Role.String(), "name", c.caller.Name, "serial", c.caller.Serial, "err", err)
	c.Close()
	return true
}

func (m *Mux) forget(c *callerConn) {
	m.mu.Lock()
	delete(m.routed, c)
	m.mu.Unlock()
}

// refusal says why the Gate refused a caller, for the log.
func refusal(c Caller, err error) error {
	return fmt.Errorf("%s %q (serial %s): %w", c.Role, c.Name, c.Serial, err)
}
