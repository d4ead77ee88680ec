package fsm

import (
	"crypto/sha256"
	"encoding/binary"
)

// Record tags of the swarm records hashed into the digest.
const (
	recSwarm     = 'S' // info-hash, downloaded
	recSwarmPeer = 'T' // info-hash, peer, ip, port, flags, key, changed
	recMode      = 'M' // tracker mode, only when not TrackerOpen
	recAllow     = 'A' // an allowed info-hash
	recDeny      = 'D' // a denied info-hash
	recPolicyReq = 'Q' // a remembered TrackerPolicy request: seq, id
	recConnID    = 'K' // a connection-ID secret: position, time, secret
)

func (h *hasher) connID(pos int, c *connIDSecret) [32]byte {
	b := append(h.buf[:0], recConnID, byte(pos))
	b = binary.BigEndian.AppendUint64(b, uint64(c.time))
	b = append(b, c.secret[:]...)
	h.buf = b
	return sha256.Sum256(b)
}

// swarm hashes a swarm's own fields. emptied and charge are appended only
// when set, so a swarm hashes as it did before they existed.
func (h *hasher) swarm(ih InfoHash, downloaded uint64, emptied int64, charge [16]byte) [32]byte {
	b := append(h.buf[:0], recSwarm)
	b = append(b, ih[:]...)
	b = binary.BigEndian.AppendUint64(b, downloaded)
	if emptied != 0 || charge != ([16]byte{}) {
		b = binary.BigEndian.AppendUint64(b, uint64(emptied))
		b = append(b, charge[:]...)
	}
	h.buf = b
	return sha256.Sum256(b)
}

// swarmRec hashes the replicated fields of r, read one by one (see seen).
func (h *hasher) swarmRec(ih InfoHash, r *swarmRec) [32]byte {
	b := append(h.buf[:0], recSwarmPeer)
	b = append(b, ih[:]...)
	b = append(b, r.peer[:]...)
	b = append(b, r.ip[:]...)
	b = binary.BigEndian.AppendUint16(b, r.port)
	b = append(b, r.flags)
	b = binary.BigEndian.AppendUint32(b, r.key)
	b = binary.BigEndian.AppendUint64(b, uint64(r.changed))
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) policyHash(tag byte, ih InfoHash) [32]byte {
	b := append(h.buf[:0], tag)
	b = append(b, ih[:]...)
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) policyMode(m TrackerMode) [32]byte {
	b := append(h.buf[:0], recMode, byte(m))
	h.buf = b
	return sha256.Sum256(b)
}

// recomputeSwarms adds every swarm and policy record of s to sum.
func (h *hasher) recomputeSwarms(s *state, sum *sum256) {
	for _, sh := range s.swarms {
		for ih, sw := range sh.m {
			sum.add(h.swarm(ih, sw.downloaded, sw.emptied, sw.charge))
			for i := range sw.recs {
				sum.add(h.swarmRec(ih, &sw.recs[i]))
			}
		}
	}
	p := s.policy
	if p.mode != TrackerOpen {
		sum.add(h.policyMode(p.mode))
	}
	for ih := range p.allow {
		sum.add(h.policyHash(recAllow, ih))
	}
	for ih := range p.deny {
		sum.add(h.policyHash(recDeny, ih))
	}
	p.reqs.each(func(seq, req uint64) { sum.add(h.req(recPolicyReq, seq, req)) })
	for i := range s.connIDs {
		sum.add(h.connID(i, &s.connIDs[i]))
	}
	h.recomputePrivate(s, sum)
}
