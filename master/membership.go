package master

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/client"
	"fileshare/transport"
)

// Membership errors, testable across RPC.
var (
	// ErrIDClash means another member already uses the ID at another address.
	ErrIDClash = transport.NewError("id_clash", "a member with this ID already exists at another address")
	// ErrAddrClash means another member already uses the address.
	ErrAddrClash = transport.NewError("addr_clash", "another member already uses this address")
	// ErrUnknownMember means no member has the given ID.
	ErrUnknownMember = transport.NewError("unknown_member", "no member with this ID")
	// ErrJoinFailed means --join could not reach a cluster that accepted us.
	ErrJoinFailed = errors.New("could not join the cluster")
	// ErrRemoved means this master's data dir holds the state of a
	// cluster that has since removed this master (fileshare cluster
	// remove, or dead-master cleanup): New refuses to run from it.
	ErrRemoved = errors.New("this master was removed from the cluster")
)

// Removed is closed when this master learns that it is no longer in the
// cluster's configuration. From then on it serves nothing useful (raft
// ignores it, so does every leader); the owner should Close it and, to add
// it back, wipe its data dir and start it with --join. Safe to call from
// any goroutine.
func (m *Master) Removed() <-chan struct{} { return m.removed }

// removalCheckEvery is how often a master checks whether it was removed,
// and removalStrikes how many checks in a row must say so: a leader's
// newest configuration may not be committed yet, and a second look one
// interval later sees either the committed removal or a configuration that
// includes this master again.
const (
	removalCheckEvery = time.Second
	removalStrikes    = 2
)

// watchRemoval closes m.removed once removedFromCluster has said so
// removalStrikes times in a row. Owned by m (m.wg); it ends when m.ctx
// ends or it has closed m.removed.
func (m *Master) watchRemoval() {
	t := time.NewTicker(removalCheckEvery)
	defer t.Stop()
	strikes := 0
	for nextTick(m.ctx, t) {
		by, removed := m.removedFromCluster(m.ctx)
		if !removed {
			strikes = 0
			continue
		}
		if strikes++; strikes >= removalStrikes {
			m.logger.Error("this master was removed from the cluster configuration and stops serving; to add it back, wipe its data dir and have it join the cluster again",
				"id", m.cfg.ID, "seen_by", by, "data_dir", m.cfg.DataDir)
			close(m.removed)
			return
		}
	}
}

// removedFromCluster reports whether this master looks removed from the
// configuration, and who says so: raft itself (a leader that removed
// itself shuts its raft down), its own newest configuration, or the
// leader, asked with the Status RPC when this master has not heard from a
// leader recently (a removed follower usually never receives the entry
// that removes it: the leader stops replicating to it at once). Only a
// leader's answer counts: a follower's configuration may be stale. It
// reports false whenever it cannot tell.
func (m *Master) removedFromCluster(ctx context.Context) (by string, removed bool) {
	if m.raft.State() == raft.Shutdown {
		return m.cfg.ID, ctx.Err() == nil
	}
	servers, err := m.configuration()
	if err != nil {
		return "", false
	}
	targets := map[string]bool{}
	for _, s := range servers {
		targets[string(s.Address)] = true
	}
	if len(servers) > 0 && !slices.ContainsFunc(servers, func(s raft.Server) bool { return string(s.ID) == m.cfg.ID }) {
		return m.cfg.ID, true
	}
	if c := m.lastLeaderContact(); c >= 0 && time.Duration(c)*time.Millisecond < 3*m.cfg.HeartbeatTimeout {
		return "", false // a leader replicates to this master: it is a member
	}
	for _, a := range m.cfg.Join {
		targets[a] = true
	}
	delete(targets, m.advertise)
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for addr := range targets {
		// Owned by this call, which waits for it; ctx bounds it.
		wg.Go(func() {
			var st client.Status
			if err := m.client.Call(ctx, addr, client.MethodStatus, &client.StatusRequest{}, &st); err != nil {
				return
			}
			if st.State != client.StateLeader || len(st.Members) == 0 {
				return
			}
			if !slices.ContainsFunc(st.Members, func(mem client.Member) bool { return mem.ID == m.cfg.ID }) {
				mu.Lock()
				by, removed = st.ID, true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return by, removed
}

// checkNotRemoved runs in New on a master that restarts from existing
// state: it fails with ErrRemoved if the cluster has removed this master,
// instead of running (and, with --join, silently ignoring --join) on the
// data of a membership it no longer has.
func (m *Master) checkNotRemoved(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	by, removed := m.removedFromCluster(ctx)
	if !removed {
		if len(m.cfg.Join) > 0 {
			m.logger.Info("this master already has raft state, so its join addresses are not needed and are ignored", "data_dir", m.cfg.DataDir)
		}
		return nil
	}
	return fieldErr(ErrRemoved, "DataDir", "the data dir %s belongs to a cluster that removed master %s (%s says so); wipe the data dir (or give an empty {DataDir}) and start it with {Join} to add it again",
		m.cfg.DataDir, m.cfg.ID, by)
}

// join asks the cluster, through any address in cfg.Join, to add this
// master as a voter, retrying until it succeeds, JoinTimeout passes, or
// ctx (the caller of New) ends.
func (m *Master) join(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, m.cfg.JoinTimeout)
	defer cancel()
	backoff := 100 * time.Millisecond
	var lastErr error
	for {
		for _, addr := range m.cfg.Join {
			if addr == m.advertise {
				continue
			}
			cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
			err := m.client.Call(cctx, addr, client.MethodMemberJoin, &client.MemberJoinRequest{ID: m.cfg.ID, Addr: m.advertise}, nil)
			ccancel()
			if err == nil {
				m.logger.Info("joined cluster", "via", addr)
				return nil
			}
			if errors.Is(err, ErrIDClash) || errors.Is(err, ErrAddrClash) {
				return fieldErr(ErrJoinFailed, "ID", "through %s: %v; choose another {ID} or {Listen}, or remove the old member with 'fileshare cluster remove'", addr, err)
			}
			lastErr = &callError{doing: "asking to join through", err: err}
			m.logger.Warn("join attempt failed; retrying", "err", lastErr)
		}
		select {
		case <-ctx.Done():
			if err := parent.Err(); err != nil {
				return fmt.Errorf("%w: stopped before the cluster accepted this master: %w", ErrJoinFailed, err)
			}
			if lastErr == nil {
				lastErr = errors.New("no address in {Join} other than this master's own")
			}
			return fieldErr(ErrJoinFailed, "Join", "within %v (%v); check that a master listens at %v", m.cfg.JoinTimeout, lastErr, m.cfg.Join)
		case <-time.After(jitter(backoff)):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (m *Master) configuration() ([]raft.Server, error) {
	f := m.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, m.raftError(err)
	}
	return f.Configuration().Servers, nil
}

func (m *Master) handleMemberJoin(ctx context.Context, req *client.MemberJoinRequest) (*client.Empty, error) {
	if err := authorizeJoin(transport.CallerFrom(ctx), req); err != nil {
		return nil, err
	}
	if err := validID(req.ID); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMember, err)
	}
	if err := checkDialable(req.Addr); err != nil {
		return nil, fmt.Errorf("%w: address %q %v", ErrBadMember, req.Addr, err)
	}
	return route(m, ctx, client.MethodMemberJoin, req, &req.Forwarded, func(ctx context.Context) (*client.Empty, error) {
		servers, err := m.configuration()
		if err != nil {
			return nil, err
		}
		for _, s := range servers {
			switch {
			case string(s.ID) == req.ID && string(s.Address) == req.Addr:
				return &client.Empty{}, nil // already a member: joining is idempotent
			case string(s.ID) == req.ID:
				return nil, fmt.Errorf("%w: %s is already a member at %s", ErrIDClash, req.ID, s.Address)
			case string(s.Address) == req.Addr:
				return nil, fmt.Errorf("%w: %s already uses %s", ErrAddrClash, s.ID, req.Addr)
			}
		}
		if err := m.addJoiner(req.ID, req.Addr); err != nil {
			return nil, m.raftError(err)
		}
		// The new member's rights start now, not at the next poll: it
		// relays its peers' writes to this leader as soon as it runs.
		m.gate.refresh(ctx)
		m.logger.Info("added member as non-voter; it becomes a voter once stable", "id", req.ID, "addr", req.Addr, "stabilization", m.cfg.ServerStabilizationTime)
		return &client.Empty{}, nil
	})
}

// authorizeJoin decides whether c may ask to add master req.ID. An admin
// may add any master; a master only itself, whether or not it is a member
// (a master that is not one may do nothing else); a relayed request is
// believed only from a member, and only for what its original caller, as
// the relay recorded it in req.Origin, may ask. It sets req.Origin for the
// relay.
func authorizeJoin(c transport.Caller, req *client.MemberJoinRequest) error {
	if req.Forwarded {
		if !c.Insecure && (c.Role != transport.RoleMaster || !c.Allows(transport.RoleMaster)) {
			return fmt.Errorf("%w: only a member of this cluster may relay a join; the caller is %s %q", transport.ErrForbidden, c.Role, c.Name)
		}
		return checkJoinOrigin(req.Origin, req.ID)
	}
	switch {
	case c.Insecure:
		req.Origin = "insecure"
	case c.Role == transport.RoleMaster:
		if c.Name != req.ID {
			return fmt.Errorf("%w: master %s may join only as itself, not as %s", transport.ErrForbidden, c.Name, req.ID)
		}
		req.Origin = "master/" + c.Name
	case c.Allows(transport.RoleAdmin):
		req.Origin = "admin/" + c.Name
	default:
		return transport.Require(transport.WithCaller(context.Background(), c), transport.RoleAdmin)
	}
	return nil
}

// checkJoinOrigin checks a relayed join against who originally asked.
func checkJoinOrigin(origin, id string) error {
	role, name, _ := strings.Cut(origin, "/")
	switch role {
	case "admin", "insecure":
		return nil
	case "master":
		if name == id {
			return nil
		}
		return fmt.Errorf("%w: master %s may join only as itself, not as %s (relayed)", transport.ErrForbidden, name, id)
	}
	return fmt.Errorf("%w: a relayed join must say who asked for it; upgrade the relaying master", transport.ErrForbidden)
}

// ErrBadMember means a membership request named an invalid ID or address.
var ErrBadMember = transport.NewError("bad_member", "invalid member ID or address")

func (m *Master) handleMemberRemove(ctx context.Context, req *client.MemberRemoveRequest) (*client.Empty, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	return route(m, ctx, client.MethodMemberRemove, req, &req.Forwarded, func(ctx context.Context) (*client.Empty, error) {
		servers, err := m.configuration()
		if err != nil {
			return nil, err
		}
		found := false
		for _, s := range servers {
			if string(s.ID) == req.ID {
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("%w: %q", ErrUnknownMember, req.ID)
		}
		if err := m.raft.RemoveServer(raft.ServerID(req.ID), 0, m.cfg.ApplyTimeout).Error(); err != nil {
			return nil, m.raftError(err)
		}
		m.gate.refresh(ctx) // its connections here close now, not at the next poll
		m.logger.Info("removed member", "id", req.ID)
		return &client.Empty{}, nil
	})
}

func (m *Master) handleTransferLeader(ctx context.Context, req *client.TransferLeaderRequest) (*client.TransferLeaderReply, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	return route(m, ctx, client.MethodTransferLeader, req, &req.Forwarded, func(ctx context.Context) (*client.TransferLeaderReply, error) {
		var f raft.Future
		if req.ID == "" {
			f = m.raft.LeadershipTransfer()
		} else {
			servers, err := m.configuration()
			if err != nil {
				return nil, err
			}
			var target *raft.Server
			for i := range servers {
				if string(servers[i].ID) == req.ID {
					target = &servers[i]
				}
			}
			if target == nil {
				return nil, fmt.Errorf("%w: %q", ErrUnknownMember, req.ID)
			}
			if req.ID == m.cfg.ID {
				return &client.TransferLeaderReply{LeaderID: m.cfg.ID, LeaderAddr: m.advertise}, nil
			}
			f = m.raft.LeadershipTransferToServer(target.ID, target.Address)
		}
		if err := f.Error(); err != nil {
			return nil, fmt.Errorf("leadership transfer failed: %w", m.raftError(err))
		}
		// Wait until a new leader is known, so the reply names it.
		for {
			id, addr := m.Leader()
			if id != "" && id != m.cfg.ID {
				return &client.TransferLeaderReply{LeaderID: id, LeaderAddr: addr}, nil
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: leadership left this master but no new leader is known yet", transport.ErrNoLeader)
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
}
