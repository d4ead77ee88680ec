package master

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/transport"
)

// The private tracker's administration: members, factors, client
// prefixes, books and the ledger (client/private.go). Writes run at the
// leader, which draws passkeys from crypto/rand and puts them in the
// command; reads run at the caller's read level.

func (m *Master) registerPrivateHandlers() {
	s := m.rpc
	transport.Handle(s, client.MethodTrackerUser, m.handleTrackerUser)
	transport.Handle(s, client.MethodTrackerUsers, m.handleTrackerUsers)
	transport.Handle(s, client.MethodTrackerBooks, m.handleTrackerBooks)
	transport.Handle(s, client.MethodTrackerTorrent, m.handleTrackerTorrent)
	transport.Handle(s, client.MethodTrackerClients, m.handleTrackerClients)
	transport.Handle(s, client.MethodTrackerLedger, m.handleTrackerLedger)
}

// proposeAdmin commits one private admin command at the leader.
func (m *Master) proposeAdmin(ctx context.Context, cmd fsm.Command) (uint64, error) {
	data, err := fsm.Encode(cmd)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", fsm.ErrInvalid, err)
	}
	resp, idx, err := m.batcher.submit(ctx, data)
	if err != nil {
		return 0, err
	}
	return idx, resp.Err
}

// checkedCommand is an admin command that can check its own fields
// before it is routed.
type checkedCommand interface {
	fsm.Command
	Validate() error
}

// routeAdmin serves an admin write whose command is complete before it
// reaches the leader: it refuses cmd if cmd.Validate does (with that
// error, without routing), else routes req to the leader (route), which
// commits cmd (proposeAdmin) and answers with reply(idx), idx being the
// command's log index; reply runs on the leader after cmd applied there.
// Commands with values drawn at the leader (handleTrackerUser's passkey)
// call route themselves.
func routeAdmin[Req, Resp any](m *Master, ctx context.Context, method string, req *Req, forwarded *bool, cmd checkedCommand, reply func(idx uint64) *Resp) (*Resp, error) {
	if err := cmd.Validate(); err != nil {
		return nil, err
	}
	return route(m, ctx, method, req, forwarded, func(ctx context.Context) (*Resp, error) {
		idx, err := m.proposeAdmin(ctx, cmd)
		if err != nil {
			return nil, err
		}
		return reply(idx), nil
	})
}

func memberReply(mi fsm.MemberInfo) *client.TrackerMember {
	return &client.TrackerMember{Name: mi.Name, Passkey: hex.EncodeToString(mi.Passkey[:]), Revoked: mi.Revoked, Created: mi.Created}
}

func (m *Master) handleTrackerUser(ctx context.Context, req *client.TrackerUserRequest) (*client.TrackerMember, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	var op fsm.MemberOp
	switch req.Op {
	case "add":
		op = fsm.MemberAdd
	case "rotate":
		op = fsm.MemberRotate
	case "revoke":
		op = fsm.MemberRevoke
	default:
		return nil, fmt.Errorf("%w: member operation %q: use add, rotate or revoke", fsm.ErrInvalid, req.Op)
	}
	if err := fsm.ValidMemberName(req.Name); err != nil {
		return nil, err
	}
	if req.RequestID == 0 {
		return nil, fmt.Errorf("%w: request ID must be non-zero", fsm.ErrInvalid)
	}
	return route(m, ctx, client.MethodTrackerUser, req, &req.Forwarded, func(ctx context.Context) (*client.TrackerMember, error) {
		cmd := fsm.TrackerMember{Op: op, Name: req.Name, RequestID: req.RequestID, Time: m.clock.next()}
		if op != fsm.MemberRevoke {
			cmd.Passkey = make([]byte, fsm.PasskeySize)
			rand.Read(cmd.Passkey)
		}
		idx, err := m.proposeAdmin(ctx, cmd)
		if err != nil {
			return nil, err
		}
		mi, ok := m.fsm.MemberBooks(req.Name)
		if !ok {
			return nil, fmt.Errorf("%w: member %s vanished after it was written", fsm.ErrUnknownMember, req.Name)
		}
		out := memberReply(mi)
		out.Index = idx
		return out, nil
	})
}

func booksReply(mi fsm.MemberInfo) client.TrackerBooks {
	b := client.TrackerBooks{
		Name: mi.Name, Revoked: mi.Revoked,
		Uploaded: mi.Total.Uploaded, Downloaded: mi.Total.Downloaded,
		RawUploaded: mi.Total.RawUploaded, RawDownloaded: mi.Total.RawDownloaded,
		Completed: mi.Total.Completed, Seeding: mi.Seeding, Leeching: mi.Leeching,
		SeedTimeS: mi.Total.SeedNanos / 1e9, Suspicious: mi.Total.Suspicious,
	}
	for _, t := range mi.Torrents {
		b.Torrents = append(b.Torrents, client.TrackerBookRow{
			InfoHash: t.InfoHash.String(), Uploaded: t.Book.Uploaded, Downloaded: t.Book.Downloaded,
			RawUploaded: t.Book.RawUploaded, RawDownloaded: t.Book.RawDownloaded, Completed: t.Book.Completed,
			SeedTimeS: t.Book.SeedNanos / 1e9, Suspicious: t.Book.Suspicious, Seeding: t.Seeding, Leeching: t.Leeching,
		})
	}
	return b
}

func (m *Master) handleTrackerUsers(ctx context.Context, req *client.TrackerUsersRequest) (*client.TrackerUsersReply, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	return routeRead(m, ctx, client.MethodTrackerUsers, req, &req.ReadHeader, func() (*client.TrackerUsersReply, error) {
		out := &client.TrackerUsersReply{Index: m.fsm.AppliedIndex()}
		for _, mi := range m.fsm.Members() {
			out.Members = append(out.Members, booksReply(mi))
		}
		return out, nil
	})
}

func (m *Master) handleTrackerBooks(ctx context.Context, req *client.TrackerBooksRequest) (*client.TrackerBooks, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	return routeRead(m, ctx, client.MethodTrackerBooks, req, &req.ReadHeader, func() (*client.TrackerBooks, error) {
		idx := m.fsm.AppliedIndex()
		mi, ok := m.fsm.MemberBooks(req.Name)
		if !ok {
			return nil, fmt.Errorf("%w: no member is named %.70q; list the members to check the name", fsm.ErrUnknownMember, req.Name)
		}
		out := booksReply(mi)
		out.Index = idx
		return &out, nil
	})
}

func (m *Master) handleTrackerTorrent(ctx context.Context, req *client.TrackerTorrentRequest) (*client.TrackerTorrentReply, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	ih, err := ParseInfoHash(req.InfoHash)
	if err != nil {
		return nil, err
	}
	cmd := fsm.TorrentFactors{InfoHash: ih, UploadPct: req.UploadFactorPct, DownloadPct: req.DownloadFactorPct, RequestID: req.RequestID}
	return routeAdmin(m, ctx, client.MethodTrackerTorrent, req, &req.Forwarded, cmd, func(idx uint64) *client.TrackerTorrentReply {
		up, down := m.fsm.TorrentFactorsOf(ih)
		return &client.TrackerTorrentReply{InfoHash: ih.String(), UploadFactorPct: up, DownloadFactorPct: down, Index: idx}
	})
}

func (m *Master) handleTrackerClients(ctx context.Context, req *client.TrackerClientsRequest) (*client.TrackerClientsReply, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	cmd := fsm.ClientPrefixes{Allow: req.Allow, Deny: req.Deny, RequestID: req.RequestID}
	return routeAdmin(m, ctx, client.MethodTrackerClients, req, &req.Forwarded, cmd, func(idx uint64) *client.TrackerClientsReply {
		allow, deny := m.fsm.ClientPrefixLists()
		return &client.TrackerClientsReply{Allow: allow, Deny: deny, Index: idx}
	})
}

func (m *Master) handleTrackerLedger(ctx context.Context, req *client.TrackerLedgerRequest) (*client.TrackerLedgerReply, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	limit := req.Limit
	if limit <= 0 || limit > client.MaxLedgerPage {
		limit = client.MaxLedgerPage
	}
	return routeRead(m, ctx, client.MethodTrackerLedger, req, &req.ReadHeader, func() (*client.TrackerLedgerReply, error) {
		idx := m.fsm.AppliedIndex()
		recs, oi, op, err := m.fsm.LedgerAfter(req.After.Index, req.After.Pos, limit)
		if err != nil {
			return nil, err
		}
		out := &client.TrackerLedgerReply{Next: req.After, Oldest: client.LedgerCursor{Index: oi, Pos: op}, Index: idx, Entries: make([]client.LedgerEntry, len(recs))}
		for i, r := range recs {
			out.Entries[i] = client.LedgerEntry{
				Cursor: client.LedgerCursor{Index: r.Index, Pos: r.Pos}, Time: r.Time, Member: r.Member, InfoHash: r.InfoHash.String(),
				Uploaded: r.Delta.Uploaded, Downloaded: r.Delta.Downloaded, RawUploaded: r.Delta.RawUploaded, RawDownloaded: r.Delta.RawDownloaded,
				SeedTimeS: r.Delta.SeedNanos / 1e9, Completed: r.Delta.Completed > 0, Suspicious: r.Delta.Suspicious > 0,
			}
			out.Next = out.Entries[i].Cursor
		}
		return out, nil
	})
}
