package master

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/tracker"
)

// The private tracker, end to end.
//
// A private announce is checked here before anything else (client
// prefixes, passkey: fsm.FSM.AdmitAnnounce, one read lock, no
// allocation), then takes the open tracker's path with the counters the
// client reported attached (privReport):
//   - a membership change travels to the leader as today and commits in
//     a PrivateAnnounceBatch, which also credits its counters;
//   - a started commits even on a record that exists (fsm.SwarmStarted),
//     so the counters of a restarted client reach the books in order;
//   - a re-announce stays soft: the master that hears it renews the lease
//     and queues its counters (creditQueue); a follower passes its queue
//     to the leader with its renewals once a second, and the leader
//     proposes everything queued as one PrivateAnnounceBatch of
//     SwarmCredit entries per second (up to 2,048 reports per entry).
//
// Because clients report cumulative counters and the replicated record
// holds the counters last credited, a report lost with a crashed master
// or a deposed leader is no lost money: the next report credits the
// growth. Nothing is credited twice: the baseline only moves forward, and
// a report heard before one already credited (At) is ignored.

// privReport is what a private announce adds to a membership change or
// a credit: the passkey, the counters, and when this master heard them.
type privReport struct {
	key      [fsm.PasskeySize]byte
	up, down uint64
	at       int64
}

func (p *privReport) bytes() []byte {
	if p == nil {
		return nil
	}
	b := make([]byte, 0, client.PrivReportSize)
	b = append(b, p.key[:]...)
	b = binary.BigEndian.AppendUint64(b, p.up)
	b = binary.BigEndian.AppendUint64(b, p.down)
	return binary.BigEndian.AppendUint64(b, uint64(p.at))
}

func privReportFrom(b []byte) (*privReport, error) {
	switch len(b) {
	case 0:
		return nil, nil
	case client.PrivReportSize:
	default:
		return nil, fmt.Errorf("%w: private report of %d bytes, want %d", fsm.ErrInvalid, len(b), client.PrivReportSize)
	}
	p := &privReport{up: binary.BigEndian.Uint64(b[16:]), down: binary.BigEndian.Uint64(b[24:]), at: int64(binary.BigEndian.Uint64(b[32:]))}
	copy(p.key[:], b[:16])
	return p, nil
}

func (p *privReport) announce(a fsm.Announce) fsm.PrivateAnnounce {
	a.Time = 0
	return fsm.PrivateAnnounce{Announce: a, Passkey: p.key, Uploaded: p.up, Downloaded: p.down, At: p.at}
}

// Refusals of the private tracker, worded for a BitTorrent client's user.
var errScrapeNoPasskey = tracker.Refuse("this tracker is private and the scrape URL carries no passkey; use the announce URL the site gave you, with /scrape in place of /announce")

var errMalformedPasskey = tracker.Refuse("the passkey in the announce URL is not 32 hex characters; download the torrent again from the site to get your personal announce URL")

// privateRefusal turns an fsm passkey or client refusal (possibly across
// a relay) into a failure reason: the fsm's words, without its sentinel's
// prefix.
func privateRefusal(err error) error {
	msg := err.Error()
	for _, s := range []error{fsm.ErrPasskey, fsm.ErrClientRefused} {
		msg = strings.TrimPrefix(msg, s.Error()+": ")
	}
	return tracker.Refuse(msg)
}

// admitAnnounce checks an announce against the client prefix lists and,
// in private mode, its passkey. private reports the mode.
func (m *Master) admitAnnounce(req *tracker.AnnounceRequest, pid *fsm.SwarmPeerID) (private bool, err error) {
	var key *[fsm.PasskeySize]byte
	if req.PasskeyStatus == tracker.PasskeyOK {
		key = (*[fsm.PasskeySize]byte)(&req.Passkey)
	}
	private, err = m.fsm.AdmitAnnounce(pid, key)
	switch {
	case err != nil && private && req.PasskeyStatus == tracker.PasskeyMalformed:
		return true, errMalformedPasskey
	case err != nil:
		return private, privateRefusal(err)
	}
	return private, nil
}

// privReportOf is req's report, or nil unless private.
func (m *Master) privReportOf(private bool, req *tracker.AnnounceRequest) *privReport {
	if !private {
		return nil
	}
	return &privReport{key: req.Passkey, up: req.Uploaded, down: req.Downloaded, at: m.clock.read()}
}

// splitPrivate separates the private announces of a batch.
func splitPrivate(batch []*pendingAnnounce) (open, private []*pendingAnnounce) {
	for _, p := range batch {
		if p.priv != nil {
			private = append(private, p)
		} else {
			open = append(open, p)
		}
	}
	return open, private
}

// commitPrivate proposes private membership changes as one
// PrivateAnnounceBatch and answers each with its own result.
func (m *Master) commitPrivate(ctx context.Context, changes []*pendingAnnounce, lim fsm.SwarmLimits) {
	cmd := fsm.PrivateAnnounceBatch{Limits: lim, MaxRate: uint64(m.cfg.Tracker.MaxRate)}
	// The reports of the changed records still queued for crediting go
	// first, in the same entry: they were heard before the change, and a
	// change that resets the counters (a client restarted) would make
	// them stale, losing their growth.
	for _, p := range changes {
		recs := m.credits.takeRecord(client.SwarmRef{InfoHash: p.a.InfoHash, Peer: p.a.Peer, IP: p.a.IP})
		if len(cmd.Announces)+len(recs)+len(changes) > fsm.MaxAnnouncesPerBatch {
			m.credits.putBack(recs) // no room: the next flush credits them
			continue
		}
		cmd.Announces = append(cmd.Announces, recs...)
	}
	queued := len(cmd.Announces)
	for _, p := range changes {
		cmd.Announces = append(cmd.Announces, p.priv.announce(p.a))
	}
	cmd.Time = m.clock.next()
	m.proposeChanges(ctx, cmd, changes, queued, func(err error) {
		if !errors.Is(err, fsm.ErrInvalid) {
			m.credits.putBack(cmd.Announces[:queued])
		}
	})
}

// creditQueue holds the unreported counters of each private swarm record
// this master heard, every report in the order heard (At). It does not
// coalesce a record's reports while there are few: two reports whose
// counters look like growth may sit on either side of a restart this
// master never heard of (the client's started went through another
// master), and only the leader's books can tell; crediting each keeps
// the growth before the restart. A record reports once per announce
// interval, so in practice a flush carries one report per record. It is
// bounded like renewQueue: past maxPendingRenewals new records are
// dropped (their next report credits them), and a record keeps at most
// maxQueuedReports reports (coalesced, then dropped, below).
type creditQueue struct {
	mu      sync.Mutex
	pending map[client.SwarmRef]*queuedCredits
	dropped uint64
}

// maxQueuedReports bounds the reports a record keeps in the queue: more
// arrive only when it announces faster than once a second, or while the
// flushes fail (no leader).
const maxQueuedReports = 8

// queuedCredits is one record's queue, in the order heard (At).
type queuedCredits struct {
	recs []fsm.PrivateAnnounce
}

func refOf(c *fsm.PrivateAnnounce) client.SwarmRef {
	return client.SwarmRef{InfoHash: c.InfoHash, Peer: c.Peer, IP: c.IP}
}

// lower reports whether a's counters are below b's: a reset between them.
func lower(a, b *fsm.PrivateAnnounce) bool {
	return a.Uploaded < b.Uploaded || a.Downloaded < b.Downloaded
}

func (q *creditQueue) put(c fsm.PrivateAnnounce) {
	k := refOf(&c)
	if q.pending == nil {
		q.pending = make(map[client.SwarmRef]*queuedCredits)
	}
	e, ok := q.pending[k]
	if !ok {
		if len(q.pending) >= maxPendingRenewals {
			q.dropped++
			return
		}
		q.pending[k] = &queuedCredits{recs: []fsm.PrivateAnnounce{c}}
		return
	}
	// Reports may arrive out of order (relayed by followers): insert in
	// order of At.
	i := len(e.recs)
	for i > 0 && e.recs[i-1].At >= c.At {
		if e.recs[i-1].At == c.At {
			return // a duplicate
		}
		i--
	}
	e.recs = slices.Insert(e.recs, i, c)
	if len(e.recs) > maxQueuedReports {
		e.recs = q.shed(e.recs)
	}
}

// shed removes one report from a record's full queue: the oldest one
// that the next one covers (the counters grew between them), which is
// right unless a restart this master never heard of lies between them;
// failing that (every report is a peak before a visible reset, or the
// first after one), the oldest, counted as dropped.
func (q *creditQueue) shed(rs []fsm.PrivateAnnounce) []fsm.PrivateAnnounce {
	for j := 0; j < len(rs)-1; j++ {
		peak := lower(&rs[j+1], &rs[j])
		start := j > 0 && lower(&rs[j], &rs[j-1])
		if !peak && !start {
			return slices.Delete(rs, j, j+1)
		}
	}
	q.dropped++
	return slices.Delete(rs, 0, 1)
}

// add queues a credit of the record a names.
func (q *creditQueue) add(a fsm.Announce, p *privReport) {
	a.Event = fsm.SwarmCredit
	c := p.announce(a)
	q.mu.Lock()
	defer q.mu.Unlock()
	q.put(c)
}

// addRelayed queues credits a follower passed on; malformed ones are
// dropped.
func (q *creditQueue) addRelayed(rs []client.TrackerAnnounceRequest) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range rs {
		a := announceOf(&rs[i])
		p, err := privReportFrom(rs[i].Priv)
		if err != nil || p == nil || a.Event != fsm.SwarmCredit {
			continue
		}
		c := p.announce(a)
		if (fsm.PrivateAnnounceBatch{Announces: []fsm.PrivateAnnounce{c}}).Validate() != nil {
			continue
		}
		q.put(c)
	}
}

// take empties the queue; each record's reports come out in order.
func (q *creditQueue) take() []fsm.PrivateAnnounce {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return nil
	}
	out := make([]fsm.PrivateAnnounce, 0, len(q.pending))
	for _, e := range q.pending {
		out = append(out, e.recs...)
	}
	clear(q.pending)
	return out
}

// takeRecord removes and returns the queued reports of one record, in
// order (nil if none).
func (q *creditQueue) takeRecord(k client.SwarmRef) []fsm.PrivateAnnounce {
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.pending[k]
	if !ok {
		return nil
	}
	delete(q.pending, k)
	return e.recs
}

// putBack re-queues credits whose proposal failed, before whatever
// arrived meanwhile (which is newer).
func (q *creditQueue) putBack(cs []fsm.PrivateAnnounce) {
	q.mu.Lock()
	defer q.mu.Unlock()
	newer := q.pending
	q.pending = nil
	for _, c := range cs {
		q.put(c)
	}
	for _, e := range newer {
		for _, c := range e.recs {
			q.put(c)
		}
	}
}

// passQueuedCredits runs before this master relays a private
// membership change of a record to the leader: it passes the record's
// queued reports on first, so the leader credits them before the change
// (commitPrivate). On the leader it does nothing: commitPrivate takes
// them from its own queue. A failure puts them back in the queue.
func (m *Master) passQueuedCredits(ctx context.Context, a *fsm.Announce) {
	if m.IsLeader() {
		return
	}
	cs := m.credits.takeRecord(client.SwarmRef{InfoHash: a.InfoHash, Peer: a.Peer, IP: a.IP})
	if len(cs) == 0 {
		return
	}
	if err := m.passCredits(ctx, cs); err != nil {
		m.credits.putBack(cs)
	}
}

// passCredits sends credits to the leader, renewBatch per call.
func (m *Master) passCredits(ctx context.Context, cs []fsm.PrivateAnnounce) error {
	_, addr := m.Leader()
	if addr == "" || addr == m.advertise {
		return errors.New("no leader to pass credits to")
	}
	for len(cs) > 0 {
		n := min(len(cs), renewBatch)
		req := &client.TrackerRenewRequest{Credits: make([]client.TrackerAnnounceRequest, n), Forwarded: true}
		for i := range n {
			c := &cs[i]
			req.Credits[i] = relayedOf(&c.Announce)
			req.Credits[i].Priv = (&privReport{key: c.Passkey, up: c.Uploaded, down: c.Downloaded, at: c.At}).bytes()
		}
		cctx, cancel := context.WithTimeout(ctx, forwardAttemptTimeout)
		err := m.client.Call(cctx, addr, client.MethodTrackerRenew, req, &struct{}{})
		cancel()
		if err != nil {
			return fmt.Errorf("passing %d private tracker reports to the leader %s: %w", len(cs), addr, err)
		}
		cs = cs[n:]
	}
	return nil
}

// flushCredits runs once a second (runRenewals): the leader proposes the
// queued credits, a follower passes them to the leader. A failure puts
// them back for the next second; a crash loses them, and the records'
// next reports credit what they held.
func (m *Master) flushCredits(ctx context.Context) {
	cs := m.credits.take()
	if len(cs) == 0 {
		return
	}
	if m.IsLeader() {
		if !m.leaderReady() {
			m.credits.putBack(cs)
			return
		}
		for len(cs) > 0 && ctx.Err() == nil {
			n := min(len(cs), fsm.MaxAnnouncesPerBatch)
			cmd := fsm.PrivateAnnounceBatch{Time: m.clock.next(), Limits: m.cfg.Tracker.swarmLimits(), MaxRate: uint64(m.cfg.Tracker.MaxRate), Announces: cs[:n]}
			data, err := fsm.Encode(cmd)
			if err == nil {
				var resp fsm.Response
				resp, _, err = m.batcher.submit(ctx, data)
				if err == nil {
					err = resp.Err
				}
			}
			if err != nil {
				m.logger.Debug("crediting private tracker reports failed; retrying in a second", "reports", len(cs), "err", err)
				if !errors.Is(err, fsm.ErrInvalid) {
					m.credits.putBack(cs)
				}
				return
			}
			cs = cs[n:]
		}
		return
	}
	if err := m.passCredits(ctx, cs); err != nil {
		m.logger.Debug("passing private tracker reports to the leader failed; retrying in a second", "err", err)
		m.credits.putBack(cs)
	}
}

var _ tracker.KeyedScraper = trackerBackend{}

// ScrapeKeyed implements tracker.KeyedScraper: in private mode a scrape
// needs a member's passkey, like an announce; otherwise it is Scrape.
func (b trackerBackend) ScrapeKeyed(ctx context.Context, hashes []tracker.InfoHash, key tracker.Passkey, status tracker.PasskeyStatus) ([]tracker.ScrapeEntry, error) {
	if b.m.fsm.TrackerModeNow() == fsm.TrackerPrivate {
		switch status {
		case tracker.PasskeyMalformed:
			return nil, errMalformedPasskey
		case tracker.PasskeyNone:
			return nil, errScrapeNoPasskey
		}
		if _, err := b.m.fsm.PasskeyMember(key); err != nil {
			return nil, privateRefusal(err)
		}
	}
	return b.Scrape(ctx, hashes)
}
