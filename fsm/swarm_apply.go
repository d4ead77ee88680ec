package fsm

import (
	"sync/atomic"
)

// Applying the tracker's commands to the swarms.

// openAnnounce applies an announce that carries no passkey (Announce,
// AnnounceBatch): refused in private mode. A master that has not applied
// the mode yet (just joined, or still replaying its log) judges an
// announce as open and relays it so; the index it reaches decides.
func (f *FSM) openAnnounce(c Announce, lim *SwarmLimits) Response {
	if f.st.policy.mode == TrackerPrivate {
		return Response{Err: errNoPasskey()}
	}
	return f.announce(c, lim)
}

// announce applies c; lim, if not nil, are the limits a record created or
// moved by c must stay within (see AnnounceBatch).
func (f *FSM) announce(c Announce, lim *SwarmLimits) Response {
	s := &f.st
	ih := c.InfoHash
	if !s.policy.allowed(ih) {
		return Response{Err: errNotTracked(ih)}
	}
	sw := s.swarm(ih)
	i := -1
	if sw != nil {
		i = sw.lookup(c.Peer, c.IP, c.HasKey, c.Key)
	}
	if c.Event == SwarmStopped {
		if i >= 0 {
			sw = s.mutSwarm(ih, sw)
			ip := sw.recs[i].ip
			f.removeRec(ih, sw, i)
			f.emptied(ih, sw, ip, c.Time)
		}
		return Response{}
	}
	moving := i >= 0 && sw.recs[i].ip != c.IP
	if i < 0 || moving {
		if err := s.checkLimits(lim, c.IP, i < 0, sw == nil); err != nil {
			return Response{Err: err}
		}
	}
	seeder := c.Seeder || c.Event == SwarmCompleted
	if sw == nil {
		sw = &swarm{gen: s.gen}
		s.swarmShardMut(ih).m[ih] = sw
		s.nSwarms++
		f.add(f.swarmHash(ih, sw))
	} else {
		sw = s.mutSwarm(ih, sw)
	}
	if sw.emptied != 0 || sw.charge != ([16]byte{}) {
		// An empty swarm gets a record again: it no longer holds its
		// last address's quota.
		f.sub(f.swarmHash(ih, sw))
		if sw.charge != ([16]byte{}) {
			s.ipAdd(sw.charge, -1)
		}
		sw.emptied, sw.charge = 0, [16]byte{}
		f.add(f.swarmHash(ih, sw))
	}
	count := false
	if i < 0 {
		r := swarmRec{changed: c.Time, peer: c.Peer, ip: c.IP, port: c.Port}
		if c.HasKey {
			r.key, r.flags = c.Key, recHasKey
		}
		if seeder {
			r.flags |= recSeeder
		}
		i = sw.insert(r)
		s.ipAdd(c.IP, 1)
		s.nSwarmRecs++
	} else {
		r := &sw.recs[i]
		f.sub(f.h.swarmRec(ih, r))
		// A completion counts once per record, and only for a record
		// that was downloading: a client cannot add to the count by
		// announcing completed for a record it has just created.
		count = c.Event == SwarmCompleted && r.flags&(recSeeder|recCounted) == 0
		if count {
			r.flags |= recCounted
		}
		if moving {
			s.ipAdd(r.ip, -1)
			s.ipAdd(c.IP, 1)
			sw.move(i, c.IP)
		}
		r.port, r.changed = c.Port, c.Time
		if c.HasKey && r.flags&recHasKey == 0 {
			r.key = c.Key
			r.flags |= recHasKey
		}
		i = sw.setSeeder(i, seeder)
	}
	r := &sw.recs[i]
	atomic.StoreUint32(&r.seen, ceilSecs(c.Time))
	f.add(f.h.swarmRec(ih, r))
	if count {
		f.sub(f.swarmHash(ih, sw))
		sw.downloaded++
		f.add(f.swarmHash(ih, sw))
	}
	return Response{}
}

// AnnounceChanges reports what applying c now would do: change is false
// if it would leave the state as it is (a stopped for a record that does
// not exist, a started or completed that repeats what the record holds);
// err is the error it would fail with, limits checked against lim (nil:
// none). The leader answers an announce that changes nothing without
// proposing it. In private mode a SwarmStarted always changes the state:
// it starts the record's books anew.
func (f *FSM) AnnounceChanges(c Announce, lim *SwarmLimits) (change bool, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := &f.st
	if !s.policy.allowed(c.InfoHash) {
		return false, errNotTracked(c.InfoHash)
	}
	sw := s.swarm(c.InfoHash)
	i := -1
	if sw != nil {
		i = sw.lookup(c.Peer, c.IP, c.HasKey, c.Key)
	}
	if c.Event == SwarmStopped {
		return i >= 0, nil
	}
	if i < 0 {
		return true, s.checkLimits(lim, c.IP, true, sw == nil)
	}
	r := &sw.recs[i]
	if r.ip != c.IP {
		return true, s.checkLimits(lim, c.IP, false, false)
	}
	seeder := c.Seeder || c.Event == SwarmCompleted
	switch {
	case r.port != c.Port, (r.flags&recSeeder != 0) != seeder,
		c.HasKey && r.flags&recHasKey == 0,
		c.Event == SwarmCompleted && r.flags&(recSeeder|recCounted) == 0,
		c.Event == SwarmStarted && s.policy.mode == TrackerPrivate:
		return true, nil
	}
	return false, nil
}

// removeRec deletes slot i of the mutable swarm sw.
func (f *FSM) removeRec(ih InfoHash, sw *swarm, i int) {
	r := &sw.recs[i]
	f.dropAcct(ih, sw, i)
	f.sub(f.h.swarmRec(ih, r))
	f.st.ipAdd(r.ip, -1)
	f.st.nSwarmRecs--
	sw.remove(i)
}

// emptied is called after a record at ip left the mutable swarm sw at
// time t. A swarm left without records ends, unless it has counted
// completions: then it stays, so scrapes keep its count, until the leader
// expires it (ExpireSwarmPeers.Swarms), and meanwhile holds one unit of
// ip's quota, so nobody piles up empty swarms for free.
func (f *FSM) emptied(ih InfoHash, sw *swarm, ip [16]byte, t int64) {
	if len(sw.recs) != 0 {
		return
	}
	if sw.downloaded == 0 {
		f.sub(f.swarmHash(ih, sw))
		delete(f.st.swarmShardMut(ih).m, ih)
		f.st.nSwarms--
		return
	}
	f.sub(f.swarmHash(ih, sw))
	sw.emptied, sw.charge = max(t, 1), ip
	f.st.ipAdd(ip, 1)
	f.add(f.swarmHash(ih, sw))
}

// dropSwarm deletes a swarm with all its records. It only reads the swarm,
// which may be shared with a snapshot.
func (f *FSM) dropSwarm(ih InfoHash) {
	s := &f.st
	sw := s.swarm(ih)
	if sw == nil {
		return
	}
	for i := range sw.recs {
		r := &sw.recs[i]
		f.dropAcct(ih, sw, i)
		f.sub(f.h.swarmRec(ih, r))
		s.ipAdd(r.ip, -1)
	}
	if sw.charge != ([16]byte{}) {
		s.ipAdd(sw.charge, -1)
	}
	s.nSwarmRecs -= len(sw.recs)
	f.sub(f.swarmHash(ih, sw))
	delete(s.swarmShardMut(ih).m, ih)
	s.nSwarms--
}

func (f *FSM) expireSwarmPeers(c ExpireSwarmPeers) Response {
	s := &f.st
	n := 0
	for _, e := range c.Entries {
		sw := s.swarm(e.InfoHash)
		if sw == nil {
			continue
		}
		var i int
		if e.IP == ([16]byte{}) {
			i = sw.findPeer(e.Peer) // an entry proposed before records had addresses in their key
		} else {
			i = sw.find(e.Peer, e.IP)
		}
		if i < 0 || sw.recs[i].changed > c.Time {
			continue
		}
		sw = s.mutSwarm(e.InfoHash, sw)
		ip := sw.recs[i].ip
		f.removeRec(e.InfoHash, sw, i)
		f.emptied(e.InfoHash, sw, ip, c.Time)
		n++
	}
	for _, ih := range c.Swarms {
		if sw := s.swarm(ih); sw != nil && len(sw.recs) == 0 && sw.emptied <= c.Time {
			f.dropSwarm(ih)
			n++
		}
	}
	return Response{ExpiredSwarmPeers: n}
}

func (f *FSM) setConnIDSecret(c SetConnIDSecret) Response {
	s := &f.st
	var newest int64
	if len(s.connIDs) > 0 {
		newest = s.connIDs[0].time
	}
	if c.After != newest {
		return Response{Duplicate: true}
	}
	s.lastTime = max(s.lastTime, c.Time)
	for i := range s.connIDs {
		f.sub(f.h.connID(i, &s.connIDs[i]))
	}
	next := []connIDSecret{{time: c.Time, secret: [ConnIDSecretSize]byte(c.Secret)}}
	next = append(next, s.connIDs[:min(len(s.connIDs), maxConnIDSecrets-1)]...)
	s.connIDs = next
	for i := range s.connIDs {
		f.add(f.h.connID(i, &s.connIDs[i]))
	}
	return Response{}
}

// maxConnIDSecrets is how many connection-ID secrets the FSM keeps: the
// next one, the one to sign with, and the one before.
const maxConnIDSecrets = 3

// ConnIDSecrets returns the UDP connection-ID secrets, the one to sign
// with first, and the Time the newest was set (0 if there is none).
//
// The newest secret is not signed with until the next one arrives: every
// master accepts it for a whole rotation before any master signs with it,
// so a master that applies a rotation a little late never refuses an ID
// another master signed. With one secret it is the one to sign with; with
// two or three, the second newest signs, and the others (the next one,
// and the previous one, for the IDs issued just before the rotation) are
// accepted. The slices are copies.
func (f *FSM) ConnIDSecrets() (secrets [][]byte, newest int64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	c := f.st.connIDs
	order := []int{0}
	switch len(c) {
	case 0:
		return nil, 0
	case 2:
		order = []int{1, 0}
	case 3:
		order = []int{1, 0, 2}
	}
	for _, i := range order {
		secrets = append(secrets, append([]byte(nil), c[i].secret[:]...))
	}
	return secrets, c[0].time
}

// policyMove puts ih in set into (whose digest records are tagged
// intoTag) and takes it out of set from (tagged fromTag).
func (f *FSM) policyMove(ih InfoHash, into map[InfoHash]struct{}, intoTag byte, from map[InfoHash]struct{}, fromTag byte) {
	if _, ok := into[ih]; !ok {
		into[ih] = struct{}{}
		f.add(f.h.policyHash(intoTag, ih))
	}
	if _, ok := from[ih]; ok {
		delete(from, ih)
		f.sub(f.h.policyHash(fromTag, ih))
	}
}

func (f *FSM) trackerPolicy(c TrackerPolicy) Response {
	s := &f.st
	if s.policy.reqs.seen(c.RequestID) {
		return Response{Duplicate: true}
	}
	p := s.mutPolicy()
	for _, ih := range c.Allow {
		f.policyMove(ih, p.allow, recAllow, p.deny, recDeny)
	}
	for _, ih := range c.Deny {
		f.policyMove(ih, p.deny, recDeny, p.allow, recAllow)
		f.dropSwarm(ih)
	}
	if c.SetMode && c.Mode != p.mode {
		if p.mode != TrackerOpen {
			f.sub(f.h.policyMode(p.mode))
		}
		p.mode = c.Mode
		if p.mode != TrackerOpen {
			f.add(f.h.policyMode(p.mode))
		}
		if p.mode != TrackerOpen {
			var drop []InfoHash
			for _, sh := range s.swarms {
				for ih := range sh.m {
					if !p.allowed(ih) {
						drop = append(drop, ih)
					}
				}
			}
			for _, ih := range drop {
				f.dropSwarm(ih)
			}
		}
	}
	p.reqs.remember(f, recPolicyReq, c.RequestID)
	return Response{}
}
