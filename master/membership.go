package master

import (
	"context"
	"errors"
	"fmt"
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
)

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
				return fmt.Errorf("%w through %s: %v; choose another --id or --listen, or remove the old member with 'fileshare cluster remove'", ErrJoinFailed, addr, err)
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
				lastErr = errors.New("no --join address other than this master's own")
			}
			return fmt.Errorf("%w within %v (%v); check that a master listens at %v", ErrJoinFailed, m.cfg.JoinTimeout, lastErr, m.cfg.Join)
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
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	if c := transport.CallerFrom(ctx); c.Role == transport.RoleMaster && !req.Forwarded && c.Name != req.ID {
		return nil, fmt.Errorf("%w: master %s may join only as itself, not as %s", transport.ErrForbidden, c.Name, req.ID)
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
		if err := m.raft.AddVoter(raft.ServerID(req.ID), raft.ServerAddress(req.Addr), 0, m.cfg.ApplyTimeout).Error(); err != nil {
			return nil, m.raftError(err)
		}
		m.logger.Info("added member", "id", req.ID, "addr", req.Addr)
		return &client.Empty{}, nil
	})
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
