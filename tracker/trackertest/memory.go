// Package trackertest holds an in-memory tracker.Backend for tests and for
// benchmark baselines: the swarm semantics the master implements over Raft,
// without Raft.
package trackertest

import (
	"context"
	"net/netip"
	"sync"

	"fileshare/tracker"
)

// MemoryBackend is a tracker.Backend holding swarms in memory. It is safe
// for concurrent use; the zero value is empty and ready.
//
// Semantics, the ones the Backend contract asks for:
//   - a peer is known by info-hash and peer_id; an announce adds it or
//     updates its address and seeding state (left == 0 means seeder);
//   - a stopped event removes it and gets no peers;
//   - a completed event counts once per peer in Downloaded;
//   - a peer that sent a key keeps its peer_id only from the same IP or
//     with the same key (so a stranger cannot move someone's entry);
//   - the peer list never holds the requester, holds at most NumWant
//     peers, in the order they joined, and a seeder gets every leecher
//     before any seeder.
//
// Peers never expire: a test that wants one gone announces stopped.
type MemoryBackend struct {
	mu     sync.Mutex
	swarms map[tracker.InfoHash]*swarm
}

type swarm struct {
	members    []*member // in join order
	byID       map[tracker.PeerID]*member
	seeders    int
	downloaded int
}

type member struct {
	id        tracker.PeerID
	addr      netip.AddrPort
	seeder    bool
	completed bool
	key       uint32
	hasKey    bool
}

// Announce applies req and returns the swarm's counts and peers.
func (m *MemoryBackend) Announce(ctx context.Context, req *tracker.AnnounceRequest) (*tracker.AnnounceReply, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.swarms == nil {
		m.swarms = make(map[tracker.InfoHash]*swarm)
	}
	s := m.swarms[req.InfoHash]
	if s == nil {
		if req.Event == tracker.EventStopped {
			return &tracker.AnnounceReply{}, nil
		}
		s = &swarm{byID: make(map[tracker.PeerID]*member)}
		m.swarms[req.InfoHash] = s
	}
	me := s.byID[req.PeerID]
	if me != nil && me.hasKey && me.addr.Addr() != req.Addr.Addr() && (!req.HasKey || req.Key != me.key) {
		return nil, tracker.Refuse("this peer_id is announced from another address with a different key")
	}
	if req.Event == tracker.EventStopped {
		if me != nil {
			s.remove(me)
		}
		return &tracker.AnnounceReply{Complete: s.seeders, Incomplete: len(s.members) - s.seeders}, nil
	}
	if me == nil {
		me = &member{id: req.PeerID}
		s.members = append(s.members, me)
		s.byID[req.PeerID] = me
	}
	me.addr = req.Addr
	if req.HasKey {
		me.key, me.hasKey = req.Key, true
	}
	seeder := req.Left == 0
	if seeder != me.seeder {
		if seeder {
			s.seeders++
		} else {
			s.seeders--
		}
		me.seeder = seeder
	}
	if req.Event == tracker.EventCompleted && !me.completed {
		me.completed = true
		s.downloaded++
	}
	reply := &tracker.AnnounceReply{Complete: s.seeders, Incomplete: len(s.members) - s.seeders}
	want := min(req.NumWant, len(s.members)-1)
	if want <= 0 {
		return reply, nil
	}
	reply.Peers = make([]tracker.Peer, 0, want)
	add := func(leechersOnly, seedersOnly bool) {
		for _, p := range s.members {
			if len(reply.Peers) == want {
				return
			}
			if p == me || (leechersOnly && p.seeder) || (seedersOnly && !p.seeder) {
				continue
			}
			reply.Peers = append(reply.Peers, tracker.Peer{ID: p.id, Addr: p.addr})
		}
	}
	if me.seeder {
		add(true, false)
		add(false, true)
	} else {
		add(false, false)
	}
	return reply, nil
}

func (s *swarm) remove(me *member) {
	delete(s.byID, me.id)
	for i, p := range s.members {
		if p == me {
			s.members = append(s.members[:i], s.members[i+1:]...)
			break
		}
	}
	if me.seeder {
		s.seeders--
	}
}

// Scrape returns each swarm's counts; an unknown swarm is all zeros. A
// swarm, and its Downloaded count, stays known after its last peer leaves.
func (m *MemoryBackend) Scrape(ctx context.Context, hashes []tracker.InfoHash) ([]tracker.ScrapeEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]tracker.ScrapeEntry, len(hashes))
	for i, h := range hashes {
		if s := m.swarms[h]; s != nil {
			out[i] = tracker.ScrapeEntry{Complete: s.seeders, Incomplete: len(s.members) - s.seeders, Downloaded: s.downloaded}
		}
	}
	return out, nil
}
