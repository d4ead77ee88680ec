package master

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/tracker"
	"fileshare/transport"
)

// This file makes the master a tracker.Backend: the BitTorrent front-ends
// (HTTP and UDP, package tracker) call Announce and Scrape, and the master
// answers from its own index.
//
// What goes through the log and what does not:
//   - A membership change (a peer appears in a swarm, leaves it, completes,
//     changes address, port or seeder state) is proposed at the leader and
//     answered after it commits, so an acknowledged started survives the
//     loss of the master that took it, of the leader, and a restart of every
//     master. Changes travel in batches: a follower relays many per call
//     (MethodTrackerAnnounceBatch) and the leader packs every pending
//     change into one fsm.AnnounceBatch (trackerbatch.go). An explicit
//     event that changes nothing is answered by the leader without a log
//     entry.
//   - A re-announce that changes nothing is a lease renewal: the receiving
//     master marks the record seen in its own index, and a follower passes
//     renewals to the leader in batches (MethodTrackerRenew) once a second.
//     The leader proposes batched expiry (fsm.ExpireSwarmPeers) for records
//     it has not seen for PeerLifetime, and a new leader gives every record
//     a full lifetime before it expires any.
//   - Peer lists and scrapes are served stale, from the answering master's
//     index: a BitTorrent client only needs some live peers, and it never
//     has to know which master leads.
//   - A record is named by its peer_id and its address: a peer_id is the
//     client's own choice, seen by anyone in the swarm, so it is no lock
//     (fsm.Announce). Quotas travel in the command and the FSM enforces
//     them exactly.

// Refusals a BitTorrent client can see, worded for its user (who cannot
// change the tracker's settings, so they name none).
var (
	errNotTracked    = tracker.Refuse("this tracker does not track this torrent (it runs an allowlist; ask the operator to allow the info-hash)")
	errTrackerFull   = tracker.Refuse("the tracker is full; retry later")
	errTooManyFromIP = tracker.Refuse("too many swarm entries from your address or network; stop some torrents or retry later")
)

// trackerBackend is the master as a tracker.Backend, and as a
// tracker.ConnIDSecrets.
type trackerBackend struct{ m *Master }

var _ interface{ ConnIDSecrets() [][]byte } = trackerBackend{}

// Announce implements tracker.Backend.
func (b trackerBackend) Announce(ctx context.Context, req *tracker.AnnounceRequest) (*tracker.AnnounceReply, error) {
	m := b.m
	ih, pid := fsm.InfoHash(req.InfoHash), fsm.SwarmPeerID(req.PeerID)
	if !m.fsm.TrackerAllowed(ih) {
		return nil, errNotTracked
	}
	ip := req.Addr.Addr().Unmap().As16()
	seeder := req.Left == 0 || req.Event == tracker.EventCompleted
	v := m.fsm.SwarmViewAt(ih, pid, ip, req.HasKey, req.Key)
	cur := v.Record
	// An explicit event (started, completed, stopped) always goes to the
	// leader: this master's index may lag, and deciding from it would
	// answer a stopped for a peer whose started it has not applied yet
	// without removing the peer (or renew a peer the leader has already
	// removed). The harness's tracker workload caught exactly that under
	// partitions. The leader answers one that changes nothing without a
	// log entry. Only a regular re-announce is judged here: if this master
	// lists the peer unchanged it is a renewal, which is soft state anyway.
	private, err := m.admitAnnounce(req, &pid)
	if err != nil {
		return nil, err
	}
	// A change carries the client's passkey and counters whenever its URL
	// has a passkey, whatever this master's mode: one still catching up
	// (just joined, or replaying its log) may not know yet that the
	// tracker is private, and the leader's index decides. Without them
	// the leader refuses the change in private mode, and with them it
	// credits it; judged as open, the record would start with no baseline.
	keyed := private || req.PasskeyStatus == tracker.PasskeyOK
	change := req.Event != tracker.EventNone || !v.Present || cur.IP != ip ||
		cur.Port != req.Addr.Port() || cur.Seeder != seeder || req.HasKey && !cur.HasKey
	if change {
		ev := fsm.SwarmUpdate
		switch req.Event {
		case tracker.EventStopped:
			ev = fsm.SwarmStopped
		case tracker.EventCompleted:
			ev = fsm.SwarmCompleted
		case tracker.EventStarted:
			if keyed {
				ev = fsm.SwarmStarted
			}
		}
		a := fsm.Announce{
			InfoHash: ih, Peer: pid, IP: ip, Port: req.Addr.Port(),
			Key: req.Key, HasKey: req.HasKey, Event: ev, Seeder: seeder,
		}
		if private {
			m.passQueuedCredits(ctx, &a)
		}
		idx, err := m.relayAnnounce(ctx, a, m.privReportOf(keyed, req))
		if err != nil {
			return nil, err
		}
		v = m.fsm.SwarmViewAt(ih, pid, ip, req.HasKey, req.Key)
		if v.Applied < idx {
			// This master has not applied the change yet: count it as
			// committed, so a client sees its own completed.
			countAs(&v, ev != fsm.SwarmStopped, seeder)
		}
	} else if v.Present {
		m.renewSwarmPeer(ih, pid, ip)
		if private {
			a := fsm.Announce{InfoHash: ih, Peer: pid, IP: ip, Port: req.Addr.Port(), Key: req.Key, HasKey: req.HasKey, Event: fsm.SwarmCredit, Seeder: seeder}
			m.credits.add(a, m.privReportOf(true, req))
		}
	}
	out := &tracker.AnnounceReply{Complete: v.Complete, Incomplete: v.Incomplete}
	if req.Event == tracker.EventStopped || req.NumWant <= 0 {
		return out, nil
	}
	peers, _, _ := m.fsm.SwarmPeers(ih, pid, req.NumWant, seeder, rand.Uint64())
	out.Peers = make([]tracker.Peer, len(peers))
	for i, p := range peers {
		out.Peers[i] = tracker.Peer{ID: tracker.PeerID(p.Peer), Addr: netip.AddrPortFrom(netip.AddrFrom16(p.IP).Unmap(), p.Port)}
	}
	return out, nil
}

// countAs adjusts v's counts as if its record were present (or not) as a
// seeder (or leecher).
func countAs(v *fsm.SwarmView, present, seeder bool) {
	if v.Present {
		if v.Record.Seeder {
			v.Complete--
		} else {
			v.Incomplete--
		}
	}
	if present {
		if seeder {
			v.Complete++
		} else {
			v.Incomplete++
		}
	}
	v.Complete, v.Incomplete = max(v.Complete, 0), max(v.Incomplete, 0)
}

// Scrape implements tracker.Backend.
func (b trackerBackend) Scrape(_ context.Context, hashes []tracker.InfoHash) ([]tracker.ScrapeEntry, error) {
	out := make([]tracker.ScrapeEntry, len(hashes))
	for i, h := range hashes {
		c, inc, d := b.m.fsm.Scrape(fsm.InfoHash(h))
		out[i] = tracker.ScrapeEntry{Complete: c, Incomplete: inc, Downloaded: d}
	}
	return out, nil
}

// ConnIDSecrets implements tracker.ConnIDSecrets: the cluster's UDP
// connection-ID secrets, replicated through the log, so an ID one master
// issued is valid on every master and after a restart. It is called per
// packet, so it reads a copy refreshed at most once a second.
func (b trackerBackend) ConnIDSecrets() [][]byte { return b.m.trackers.connIDs.get(b.m.fsm) }

// relayAnnounce runs a membership change at the leader (this master, or
// the leader through a follower's batched relay) and returns the log index
// it committed at, or 0 if it changed nothing. Retryable failures (no
// leader yet, leadership moving, an unknown outcome) are retried until ctx
// ends: an announce may apply twice harmlessly. Refusals come back as
// tracker.Refusal (a stranger sees their words); other errors are
// internal.
func (m *Master) relayAnnounce(ctx context.Context, a fsm.Announce, priv *privReport) (uint64, error) {
	backoff := 5 * time.Millisecond
	for {
		var idx uint64
		var err error
		announcer, relay := m.announceQueues()
		switch {
		case !m.IsLeader():
			idx, err = relay.submit(ctx, a, priv)
		case !m.leaderReady():
			err = fmt.Errorf("%w: this master was just elected and is catching up", transport.ErrBusy)
		default:
			idx, err = announcer.submit(ctx, a, priv)
		}
		if err == nil || !transport.Retryable(err) {
			return idx, trackerError(err)
		}
		select {
		case <-ctx.Done():
			return 0, trackerError(err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// handleTrackerAnnounce serves one membership change relayed by a master
// that predates batched relays.
func (m *Master) handleTrackerAnnounce(ctx context.Context, req *client.TrackerAnnounceRequest) (*client.WriteReply, error) {
	if err := m.checkRelay(ctx, req.Forwarded); err != nil {
		return nil, err
	}
	a := announceOf(req)
	if err := a.Validate(); err != nil {
		return nil, err
	}
	announcer, _ := m.announceQueues()
	idx, err := announcer.submit(ctx, a, nil)
	if err != nil {
		return nil, err
	}
	out := &client.WriteReply{Index: idx}
	out.SetLeader(m.advertise)
	return out, nil
}

// handleTrackerAnnounceBatch serves membership changes relayed by a
// follower: each joins the leader's next AnnounceBatch, and the reply
// carries every outcome once the last is known.
func (m *Master) handleTrackerAnnounceBatch(ctx context.Context, req *client.TrackerAnnounceBatchRequest) (*client.TrackerAnnounceBatchReply, error) {
	if err := m.checkRelay(ctx, req.Forwarded); err != nil {
		return nil, err
	}
	if len(req.Announces) > client.MaxRelayedAnnounces {
		return nil, fmt.Errorf("%w: %d relayed announces in one call, over %d", fsm.ErrInvalid, len(req.Announces), client.MaxRelayedAnnounces)
	}
	out := &client.TrackerAnnounceBatchReply{Results: make([]client.TrackerAnnounceResult, len(req.Announces))}
	pending := make([]*pendingAnnounce, len(req.Announces))
	announcer, _ := m.announceQueues()
	for i := range req.Announces {
		a := announceOf(&req.Announces[i])
		priv, err := privReportFrom(req.Announces[i].Priv)
		if err == nil {
			err = validateRelayed(a, priv)
		}
		if err == nil {
			pending[i], err = announcer.enqueuePriv(ctx, a, priv)
		}
		if err != nil {
			out.Results[i] = resultOf(0, err)
		}
	}
	for i, p := range pending {
		if p != nil {
			out.Results[i] = resultOf(p.wait(ctx))
		}
	}
	out.SetLeader(m.advertise)
	return out, nil
}

// validateRelayed checks a relayed membership change: a private one may
// be a SwarmStarted, a credit is never one.
func validateRelayed(a fsm.Announce, priv *privReport) error {
	switch {
	case a.Event == fsm.SwarmCredit:
		return fmt.Errorf("%w: a private tracker report relayed as a membership change", fsm.ErrInvalid)
	case priv != nil:
		return a.ValidatePrivate()
	}
	return a.Validate()
}

// checkRelay admits a relayed announce: only masters may relay (the
// request vouches for a BitTorrent client's source address), and only to
// a leader that has caught up.
func (m *Master) checkRelay(ctx context.Context, forwarded bool) error {
	if err := transport.Require(ctx, transport.RoleMaster); err != nil {
		return err
	}
	if !forwarded {
		return fmt.Errorf("%w: a tracker announce must be relayed by a master", fsm.ErrInvalid)
	}
	if !m.IsLeader() {
		return m.notLeader()
	}
	if !m.leaderReady() {
		return fmt.Errorf("%w: this master was just elected and is catching up", transport.ErrBusy)
	}
	return nil
}

func announceOf(r *client.TrackerAnnounceRequest) fsm.Announce {
	return fsm.Announce{
		InfoHash: r.InfoHash, Peer: r.Peer, IP: r.IP, Port: r.Port, Key: r.Key, HasKey: r.HasKey,
		Event: fsm.SwarmEvent(r.Event), Seeder: r.Seeder,
	}
}

func relayedOf(a *fsm.Announce) client.TrackerAnnounceRequest {
	return client.TrackerAnnounceRequest{
		InfoHash: a.InfoHash, Peer: a.Peer, IP: a.IP, Port: a.Port, Key: a.Key, HasKey: a.HasKey,
		Event: uint8(a.Event), Seeder: a.Seeder,
	}
}

// resultOf is an announce's outcome as a relay reply carries it: a coded
// error keeps its code, so the follower's errors.Is still matches.
func resultOf(idx uint64, err error) client.TrackerAnnounceResult {
	if err == nil {
		return client.TrackerAnnounceResult{Index: idx}
	}
	code := transport.ErrInternal.Code()
	var c transport.Coded
	if errors.As(err, &c) {
		code = c.Code()
	}
	var nl *transport.NotLeaderError
	if errors.As(err, &nl) {
		code = transport.ErrNotLeader.Code()
	}
	return client.TrackerAnnounceResult{Code: code, Message: err.Error()}
}

// trackerError turns what the index says about an announce into words a
// BitTorrent client's user can act on; nil stays nil, and errors that are
// not the client's doing pass through (the front-end logs them and sends
// a generic reason). Sentinels match across the relay (they travel as
// codes), so a follower answers with the leader's real reason.
func trackerError(err error) error {
	var r *tracker.Refusal
	switch {
	case err == nil, errors.As(err, &r):
		return err
	case errors.Is(err, fsm.ErrNotTracked):
		return errNotTracked
	case errors.Is(err, fsm.ErrTrackerFull):
		return errTrackerFull
	case errors.Is(err, fsm.ErrSwarmQuota):
		return errTooManyFromIP
	case errors.Is(err, fsm.ErrPasskey), errors.Is(err, fsm.ErrClientRefused):
		return privateRefusal(err)
	case errors.Is(err, fsm.ErrInvalid):
		return tracker.Refuse("the announce is malformed: " + err.Error())
	}
	return err
}

// handleTrackerPolicy changes the tracker's replicated policy.
func (m *Master) handleTrackerPolicy(ctx context.Context, req *client.TrackerPolicyRequest) (*client.TrackerPolicyReply, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	cmd := fsm.TrackerPolicy{RequestID: req.RequestID}
	switch req.Mode {
	case "":
	case "open":
		cmd.SetMode, cmd.Mode = true, fsm.TrackerOpen
	case "allowlist":
		cmd.SetMode, cmd.Mode = true, fsm.TrackerAllowlist
	case "private":
		cmd.SetMode, cmd.Mode = true, fsm.TrackerPrivate
	default:
		return nil, fmt.Errorf("%w: tracker mode %q: use open, allowlist or private", fsm.ErrInvalid, req.Mode)
	}
	var err error
	if cmd.Allow, err = parseInfoHashes(req.Allow); err != nil {
		return nil, err
	}
	if cmd.Deny, err = parseInfoHashes(req.Deny); err != nil {
		return nil, err
	}
	data, err := fsm.Encode(cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", fsm.ErrInvalid, err)
	}
	return route(m, ctx, client.MethodTrackerPolicy, req, &req.Forwarded, func(ctx context.Context) (*client.TrackerPolicyReply, error) {
		resp, idx, err := m.batcher.submit(ctx, data)
		if err != nil {
			return nil, err
		}
		if resp.Err != nil {
			return nil, resp.Err
		}
		out := m.trackerPolicyReply()
		out.Index = idx
		return out, nil
	})
}

// handleTrackerList returns the tracker's policy.
func (m *Master) handleTrackerList(ctx context.Context, req *client.TrackerListRequest) (*client.TrackerPolicyReply, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	return routeRead(m, ctx, client.MethodTrackerList, req, &req.ReadHeader, func() (*client.TrackerPolicyReply, error) {
		out := m.trackerPolicyReply()
		out.Index = m.fsm.AppliedIndex()
		return out, nil
	})
}

func (m *Master) trackerPolicyReply() *client.TrackerPolicyReply {
	mode, allow, deny := m.fsm.TrackerPolicyState()
	out := &client.TrackerPolicyReply{Mode: "open", Allow: hexHashes(allow), Deny: hexHashes(deny)}
	if mode != fsm.TrackerOpen {
		out.Mode = mode.String()
	}
	out.Swarms, out.Peers = m.fsm.SwarmStats()
	return out
}

// ParseInfoHash parses 40 hex digits (either case) into an info-hash.
func ParseInfoHash(s string) (fsm.InfoHash, error) {
	var h fsm.InfoHash
	if len(s) != hex.EncodedLen(len(h)) {
		return h, fmt.Errorf("%w: info-hash %.50q is not 40 hex digits", fsm.ErrInvalid, s)
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("%w: info-hash %.50q is not 40 hex digits", fsm.ErrInvalid, s)
	}
	return h, nil
}

func parseInfoHashes(ss []string) ([]fsm.InfoHash, error) {
	out := make([]fsm.InfoHash, 0, len(ss))
	for _, s := range ss {
		h, err := ParseInfoHash(s)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

func hexHashes(hs []fsm.InfoHash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = hex.EncodeToString(h[:])
	}
	return out
}
