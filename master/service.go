package master

import (
	"time"

	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/rand/v2"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/transport"
)

func (m *Master) registerHandlers() {
	s := m.rpc
	transport.Handle(s, client.MethodPeerJoin, m.handlePeerJoin)
	transport.Handle(s, client.MethodPeerLeave, m.handlePeerLeave)
	transport.Handle(s, client.MethodRegister, m.handleRegister)
	transport.Handle(s, client.MethodUnregister, m.handleUnregister)
	transport.Handle(s, client.MethodHeartbeat, m.handleHeartbeat)
	transport.Handle(s, client.MethodLookup, m.handleLookup)
	transport.Handle(s, client.MethodSearch, m.handleSearch)
	transport.Handle(s, client.MethodPeers, m.handlePeers)
	transport.Handle(s, client.MethodFind, m.handleFind)
	transport.Handle(s, client.MethodStatus, m.handleStatus)
	transport.Handle(s, client.MethodMemberJoin, m.handleMemberJoin)
	transport.Handle(s, client.MethodMemberRemove, m.handleMemberRemove)
	transport.Handle(s, client.MethodTransferLeader, m.handleTransferLeader)
	transport.Handle(s, client.MethodSnapshot, m.handleSnapshot)
	transport.Handle(s, client.MethodBackupOpen, m.handleBackupOpen)
	transport.Handle(s, client.MethodBackupRead, m.handleBackupRead)
	transport.Handle(s, client.MethodBackupClose, m.handleBackupClose)
	transport.Handle(s, client.MethodTrackerAnnounce, m.handleTrackerAnnounce)
	transport.Handle(s, client.MethodTrackerAnnounceBatch, m.handleTrackerAnnounceBatch)
	transport.Handle(s, client.MethodTrackerRenew, m.handleTrackerRenew)
	transport.Handle(s, client.MethodTrackerPolicy, m.handleTrackerPolicy)
	transport.Handle(s, client.MethodTrackerList, m.handleTrackerList)
	transport.Handle(s, MethodRevoke, m.handleRevoke)
	transport.Handle(s, MethodRevocations, m.handleRevocations)
	m.registerPrivateHandlers()
	m.registerRendezvous(s)
}

// writeCommand routes a peer write to the leader and applies it there.
// build makes the command once the header has been checked.
func writeCommand[Req any](m *Master, ctx context.Context, method string, req *Req, hdr *client.WriteHeader, build func(tok fsm.Token) (fsm.Command, error)) (*client.WriteReply, error) {
	peer := fsm.PeerID(hdr.PeerID)
	if err := peer.Validate(); err != nil {
		return nil, err
	}
	if hdr.RequestID == 0 {
		return nil, fmt.Errorf("%w: request ID must be non-zero", fsm.ErrInvalid)
	}
	tok, err := authorizePeer(ctx, hdr.PeerID, hdr.Key, hdr.Forwarded)
	if err != nil {
		return nil, err
	}
	cmd, err := build(tok)
	if err != nil {
		return nil, err
	}
	data, err := fsm.Encode(cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", fsm.ErrInvalid, err)
	}
	if len(data) > m.cfg.MaxCommandBytes {
		return nil, fmt.Errorf("%w: the request makes a %d-byte log entry, over the %d-byte limit of this cluster; send fewer files per call", ErrQuota, len(data), m.cfg.MaxCommandBytes)
	}
	_, isJoin := cmd.(fsm.JoinPeer)
	if isJoin && !hdr.Forwarded {
		if err := m.joins.admit(transport.CallerFrom(ctx).Addr, peer, m.goneFromIndex); err != nil {
			return nil, err
		}
	}
	return route(m, ctx, method, req, &hdr.Forwarded, func(ctx context.Context) (*client.WriteReply, error) {
		// The leader authorizes before it proposes, so a refused write
		// never costs a replicated, fsynced log entry; the FSM checks the
		// token again when it applies the entry.
		if !isJoin {
			if err := m.fsm.Authorize(peer, tok); err != nil {
				return nil, err
			}
		}
		if err := m.checkFileQuota(peer, cmd); err != nil {
			return nil, err
		}
		// A request is a sign of life: renew the lease before the write
		// applies, so the expiry loop can never see a just-joined peer
		// without a lease. Only authorized peers (or a join) get here.
		m.leases.touch(peer, time.Now())
		resp, idx, err := m.batcher.submit(ctx, data)
		if err != nil {
			return nil, err
		}
		if resp.Err != nil {
			return nil, resp.Err
		}
		return &client.WriteReply{Index: idx, Duplicate: resp.Duplicate}, nil
	})
}

func (m *Master) handlePeerJoin(ctx context.Context, req *client.PeerJoinRequest) (*client.WriteReply, error) {
	return writeCommand(m, ctx, client.MethodPeerJoin, req, &req.WriteHeader, func(tok fsm.Token) (fsm.Command, error) {
		return fsm.JoinPeer{Peer: fsm.PeerID(req.PeerID), Token: tok, Addr: req.Addr, RequestID: req.RequestID, Time: m.clock.next()}, nil
	})
}

func (m *Master) handlePeerLeave(ctx context.Context, req *client.PeerLeaveRequest) (*client.WriteReply, error) {
	return writeCommand(m, ctx, client.MethodPeerLeave, req, &req.WriteHeader, func(tok fsm.Token) (fsm.Command, error) {
		return fsm.LeavePeer{Peer: fsm.PeerID(req.PeerID), Token: tok, RequestID: req.RequestID}, nil
	})
}

func (m *Master) handleRegister(ctx context.Context, req *client.RegisterRequest) (*client.WriteReply, error) {
	return writeCommand(m, ctx, client.MethodRegister, req, &req.WriteHeader, func(tok fsm.Token) (fsm.Command, error) {
		if len(req.Files) == 0 {
			return nil, fmt.Errorf("%w: register needs at least one file", fsm.ErrInvalid)
		}
		files := make([]fsm.FileMeta, len(req.Files))
		for i, f := range req.Files {
			files[i] = fsm.FileMeta{ID: fsm.FileID(f.ID), Name: f.Name, Size: f.Size, PieceSize: f.PieceSize}
		}
		return fsm.RegisterFiles{Peer: fsm.PeerID(req.PeerID), Token: tok, RequestID: req.RequestID, Files: files}, nil
	})
}

func (m *Master) handleUnregister(ctx context.Context, req *client.UnregisterRequest) (*client.WriteReply, error) {
	return writeCommand(m, ctx, client.MethodUnregister, req, &req.WriteHeader, func(tok fsm.Token) (fsm.Command, error) {
		if len(req.Files) == 0 {
			return nil, fmt.Errorf("%w: unregister needs at least one file", fsm.ErrInvalid)
		}
		ids := make([]fsm.FileID, len(req.Files))
		for i, f := range req.Files {
			ids[i] = fsm.FileID(f)
		}
		return fsm.UnregisterFiles{Peer: fsm.PeerID(req.PeerID), Token: tok, RequestID: req.RequestID, Files: ids}, nil
	})
}

// handleHeartbeat renews a peer's lease on the leader. Heartbeats are soft
// state: they never enter the log.
func (m *Master) handleHeartbeat(ctx context.Context, req *client.HeartbeatRequest) (*client.HeartbeatReply, error) {
	peer := fsm.PeerID(req.PeerID)
	if err := peer.Validate(); err != nil {
		return nil, err
	}
	tok, err := authorizePeer(ctx, req.PeerID, req.Key, req.Forwarded)
	if err != nil {
		return nil, err
	}
	return route(m, ctx, client.MethodHeartbeat, req, &req.Forwarded, func(ctx context.Context) (*client.HeartbeatReply, error) {
		if err := m.fsm.Authorize(peer, tok); err != nil {
			return nil, err
		}
		m.leases.touch(peer, time.Now())
		return &client.HeartbeatReply{LeaseMillis: m.cfg.PeerLease.Milliseconds()}, nil
	})
}

func (m *Master) handleLookup(ctx context.Context, req *client.LookupRequest) (*client.LookupReply, error) {
	id := fsm.FileID(req.FileID)
	if err := id.Validate(); err != nil {
		return nil, err
	}
	return routeRead(m, ctx, client.MethodLookup, req, &req.ReadHeader, func() (*client.LookupReply, error) {
		idx := m.fsm.AppliedIndex()
		info, holders, ok := m.fsm.Lookup(id)
		out := &client.LookupReply{Found: ok, Index: idx}
		if ok {
			out.File = fileSummary(info)
			if len(holders) > MaxLookupHolders {
				// A random page, so that nobody can keep a file's real
				// holders off every page by joining many peers.
				rand.Shuffle(len(holders), func(i, j int) { holders[i], holders[j] = holders[j], holders[i] })
				holders = holders[:MaxLookupHolders]
			}
			out.Holders = make([]client.HolderEntry, len(holders))
			for i, h := range holders {
				out.Holders[i] = client.HolderEntry{PeerID: string(h.Peer), Addr: h.Addr, Name: h.Name}
			}
		}
		return out, nil
	})
}

// MaxLookupHolders is the most holders one lookup reply lists; a file
// with more gets a random sample (File.Holders still counts them all).
const MaxLookupHolders = 200

func fileSummary(f fsm.FileInfo) client.FileSummary {
	return client.FileSummary{
		FileEntry: client.FileEntry{ID: string(f.ID), Name: f.Name, Size: f.Size, PieceSize: f.PieceSize},
		Holders:   f.Holders,
	}
}

// handleSearch serves one page of a name search. The page's cursor
// (SearchRequest.After, SearchReply.Next) is the (name, ID) of the last
// file of the previous page, encoded by encodeCursor: any master can
// continue a page another made, since the cursor names a position in the
// order rather than a server-side state.
func (m *Master) handleSearch(ctx context.Context, req *client.SearchRequest) (*client.SearchReply, error) {
	after, err := decodeCursor(req.After)
	if err != nil {
		return nil, err
	}
	return routeRead(m, ctx, client.MethodSearch, req, &req.ReadHeader, func() (*client.SearchReply, error) {
		idx := m.fsm.AppliedIndex()
		page := m.fsm.SearchAfter(req.Query, after, req.Limit)
		out := &client.SearchReply{Files: make([]client.FileSummary, len(page.Files)), Total: page.Total, Skipped: page.Skipped, Index: idx}
		for i, f := range page.Files {
			out.Files[i] = fileSummary(f)
		}
		if page.More {
			out.Next = encodeCursor(page.Next())
		}
		return out, nil
	})
}

// encodeCursor makes the opaque SearchReply.Next for c: base64url (no
// padding) of the file ID's 32 bytes followed by the name.
func encodeCursor(c fsm.SearchCursor) string {
	id, _ := hex.DecodeString(string(c.ID)) // valid: it names an indexed file
	return base64.RawURLEncoding.EncodeToString(append(id, c.Name...))
}

// decodeCursor reverses encodeCursor; "" is the zero cursor. Anything
// else it did not make is an error wrapping fsm.ErrInvalid.
func decodeCursor(s string) (fsm.SearchCursor, error) {
	if s == "" {
		return fsm.SearchCursor{}, nil
	}
	const idBytes = fsm.FileIDLen / 2
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < idBytes {
		return fsm.SearchCursor{}, fmt.Errorf("%w: search cursor %.40q is not one a search printed; pass the next-page value exactly as given, or start again without it", fsm.ErrInvalid, s)
	}
	return fsm.SearchCursor{ID: fsm.FileID(hex.EncodeToString(b[:idBytes])), Name: string(b[idBytes:])}, nil
}

// handleFind lists the files whose ID starts with a prefix, so that users
// can name a file by the first digits of its ID.
func (m *Master) handleFind(ctx context.Context, req *client.FindRequest) (*client.FindReply, error) {
	if err := fsm.ValidateIDPrefix(req.Prefix); err != nil {
		return nil, err
	}
	return routeRead(m, ctx, client.MethodFind, req, &req.ReadHeader, func() (*client.FindReply, error) {
		idx := m.fsm.AppliedIndex()
		files, total := m.fsm.FilesWithPrefix(req.Prefix, req.Limit)
		out := &client.FindReply{Files: make([]client.FileSummary, len(files)), Total: total, Index: idx}
		for i, f := range files {
			out.Files[i] = fileSummary(f)
		}
		return out, nil
	})
}

func (m *Master) handlePeers(ctx context.Context, req *client.PeersRequest) (*client.PeersReply, error) {
	return routeRead(m, ctx, client.MethodPeers, req, &req.ReadHeader, func() (*client.PeersReply, error) {
		idx := m.fsm.AppliedIndex()
		peers := m.fsm.Peers()
		out := &client.PeersReply{Peers: make([]client.PeerSummary, len(peers)), Index: idx}
		for i, p := range peers {
			out.Peers[i] = client.PeerSummary{ID: string(p.ID), Addr: p.Addr, JoinedAt: p.JoinedAt, Files: p.Files}
		}
		return out, nil
	})
}

// goneFromIndex reports whether a peer is no longer in the local index.
func (m *Master) goneFromIndex(p fsm.PeerID) bool {
	_, ok := m.fsm.Peer(p)
	return !ok
}

// checkFileQuota refuses a registration that would take a peer past
// MaxFilesPerPeer. It counts every file of the request as new, so it may
// refuse a re-registration that would fit; the error says what to do.
func (m *Master) checkFileQuota(peer fsm.PeerID, cmd fsm.Command) error {
	reg, ok := cmd.(fsm.RegisterFiles)
	if !ok || m.cfg.MaxFilesPerPeer < 0 {
		return nil
	}
	info, _ := m.fsm.Peer(peer)
	if info.Files+len(reg.Files) > m.cfg.MaxFilesPerPeer {
		return fmt.Errorf("%w: peer %s holds %d files and registers %d more, over this cluster's limit of %d files per peer", ErrQuota, peer, info.Files, len(reg.Files), m.cfg.MaxFilesPerPeer)
	}
	return nil
}
