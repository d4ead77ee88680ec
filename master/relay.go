package master

import (
	"context"
	"slices"
	"time"

	"fileshare/client"
	"fileshare/relay"
	"fileshare/transport"
)

// DefaultRelayBudget is Config.RelayBudget's default: masters relay
// nothing unless their operator gives them a budget.
const DefaultRelayBudget = 0

// relayRatePerCircuit is the bandwidth a master's relay allows per
// circuit of its budget (all circuits share RelayBudget times this):
// a master's bandwidth belongs to the cluster, so its relay is a slow
// last resort.
const relayRatePerCircuit = 2 << 20

// startRelay serves relay circuits on the cluster port if the master has
// a relay budget. The server's goroutines are in m.wg; its circuits close
// when m.ctx ends.
func (m *Master) startRelay() {
	if m.cfg.RelayBudget <= 0 {
		return
	}
	srv := relay.NewServer(relay.Limits{MaxCircuits: m.cfg.RelayBudget, Rate: int64(m.cfg.RelayBudget) * relayRatePerCircuit}, m.logger)
	ln := m.mux.Listener(transport.StreamRelay)
	m.wg.Go(func() { srv.Serve(ln) })
	m.wg.Go(func() {
		<-m.ctx.Done()
		ln.Close()
		srv.Close()
	})
	m.logger.Info("relaying circuits for peers behind NATs", "budget", m.cfg.RelayBudget, "bytes_per_second", int64(m.cfg.RelayBudget)*relayRatePerCircuit)
}

// localRelays lists the relays this master knows of itself: itself if it
// has a budget, and the relay peers whose push channel is open here.
func (m *Master) localRelays() []client.RelayInfo {
	var out []client.RelayInfo
	if m.cfg.RelayBudget > 0 {
		out = append(out, client.RelayInfo{Addr: m.advertise})
	}
	now := time.Now()
	r := m.rdv
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, b := range r.boxes {
		if len(out) >= client.MaxRelays {
			break
		}
		if b.nat.Relay && b.nat.Reachable && b.nat.Addr != "" && b.open(now) {
			out = append(out, client.RelayInfo{Addr: b.nat.Addr, PeerID: id})
		}
	}
	return out
}

// relays lists what every reachable member knows (localRelays), relay
// peers first.
func (m *Master) relays(ctx context.Context) []client.RelayInfo {
	out := m.localRelays()
	servers, err := m.configuration()
	if err != nil {
		return out
	}
	results := make(chan []client.RelayInfo, len(servers))
	asked := 0
	for _, s := range servers {
		if string(s.ID) == m.cfg.ID {
			continue
		}
		asked++
		go func(addr string) {
			actx, cancel := context.WithTimeout(ctx, deliverTimeout)
			defer cancel()
			var r client.RelaysReply
			if m.client.Call(actx, addr, client.MethodRelays, &client.RelaysRequest{Forwarded: true}, &r) != nil {
				r.Relays = nil
			}
			results <- r.Relays
		}(string(s.Address))
	}
	for range asked {
		for _, r := range <-results {
			if len(out) < client.MaxRelays && !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	// Peers that offer to relay come first: a master's bandwidth is the
	// cluster's, kept for when no peer relay is left.
	slices.SortStableFunc(out, func(a, b client.RelayInfo) int {
		switch {
		case a.PeerID != "" && b.PeerID == "":
			return -1
		case a.PeerID == "" && b.PeerID != "":
			return 1
		}
		return 0
	})
	return out
}

// handleRelays lists relays: this master's own knowledge for a member
// asking (forwarded), everyone's for a peer.
func (m *Master) handleRelays(ctx context.Context, req *client.RelaysRequest) (*client.RelaysReply, error) {
	if req.Forwarded {
		c := transport.CallerFrom(ctx)
		if !(c.Insecure || (c.Role == transport.RoleMaster && c.Allows(transport.RoleMaster))) {
			return nil, transport.Require(ctx, transport.RoleMaster)
		}
		return &client.RelaysReply{Relays: m.localRelays()}, nil
	}
	return &client.RelaysReply{Relays: m.relays(ctx)}, nil
}

// knownRelay reports whether addr (with relay peer ID id, "" for a
// master) is a relay the cluster knows: a holder is only ever sent to
// one, never to an address of the asker's choosing.
func (m *Master) knownRelay(ctx context.Context, addr, id string) bool {
	return slices.Contains(m.relays(ctx), client.RelayInfo{Addr: addr, PeerID: id})
}
