package fsm

import (
	"crypto/sha256"
	"encoding/binary"
)

// Record tags of the private state hashed into the digest.
const (
	recMember  = 'm' // id, name, passkey, revoked, created
	recBook    = 'b' // member id, info-hash, book
	recFactors = 'f' // info-hash, upload and download percent
	recPrefix  = 'p' // allow (1) or deny (0), prefix
	recPrivReq = 'q' // a remembered private admin request: seq, id
	recAcctTag = 'U' // info-hash, peer, member, baseline counters
	recLedger  = 'L' // a ledger entry
)

func (h *hasher) member(m *member) [32]byte {
	b := append(h.buf[:0], recMember)
	b = binary.BigEndian.AppendUint32(b, m.id)
	b = appendStr(b, m.name)
	b = append(b, m.key[:]...)
	if m.revoked {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(m.created))
	h.buf = b
	return sha256.Sum256(b)
}

func appendBook(b []byte, d *Book) []byte {
	for _, v := range [...]uint64{d.Uploaded, d.Downloaded, d.RawUploaded, d.RawDownloaded, d.SeedNanos, d.Completed, d.Suspicious} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func (h *hasher) book(id uint32, ih InfoHash, d *Book) [32]byte {
	b := append(h.buf[:0], recBook)
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(b, ih[:]...)
	b = appendBook(b, d)
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) factors(ih InfoHash, fp factorPair) [32]byte {
	b := append(h.buf[:0], recFactors)
	b = append(b, ih[:]...)
	b = binary.BigEndian.AppendUint32(b, fp.up)
	b = binary.BigEndian.AppendUint32(b, fp.down)
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) prefix(allow bool, x string) [32]byte {
	b := append(h.buf[:0], recPrefix, 0)
	if allow {
		b[1] = 1
	}
	b = appendStr(b, x)
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) acct(ih InfoHash, peer SwarmPeerID, a *recAcct) [32]byte {
	b := append(h.buf[:0], recAcctTag)
	b = append(b, ih[:]...)
	b = append(b, peer[:]...)
	b = binary.BigEndian.AppendUint32(b, a.member)
	b = binary.BigEndian.AppendUint64(b, a.up)
	b = binary.BigEndian.AppendUint64(b, a.down)
	for pe := a.prev; pe != nil; pe = pe.older {
		b = binary.BigEndian.AppendUint64(b, pe.up)
		b = binary.BigEndian.AppendUint64(b, pe.down)
		b = binary.BigEndian.AppendUint64(b, uint64(pe.changed))
		b = binary.BigEndian.AppendUint64(b, uint64(pe.reset))
	}
	h.buf = b
	return sha256.Sum256(b)
}

func (h *hasher) ledger(e *ledgerRec) [32]byte {
	b := append(h.buf[:0], recLedger)
	b = binary.BigEndian.AppendUint64(b, e.index)
	b = binary.BigEndian.AppendUint32(b, e.pos)
	b = binary.BigEndian.AppendUint32(b, e.member)
	b = append(b, e.ih[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.time))
	b = appendBook(b, &e.d)
	h.buf = b
	return sha256.Sum256(b)
}

// recomputePrivate adds every private record of s to sum.
func (h *hasher) recomputePrivate(s *state, sum *sum256) {
	p := s.priv
	for _, m := range p.members {
		sum.add(h.member(m))
		for i := range m.books {
			b := m.books[i].book()
			sum.add(h.book(m.id, m.books[i].ih, &b))
		}
	}
	for ih, fp := range p.factors.m {
		sum.add(h.factors(ih, fp))
	}
	p.eachPrefix(func(allow bool, x string) { sum.add(h.prefix(allow, x)) })
	p.reqs.each(func(seq, req uint64) { sum.add(h.req(recPrivReq, seq, req)) })
	for _, sh := range s.swarms {
		for ih, sw := range sh.m {
			for i := range sw.acct {
				if sw.acct[i].member != 0 {
					sum.add(h.acct(ih, sw.recs[i].peer, &sw.acct[i]))
				}
			}
		}
	}
	for i := range p.ledger.n {
		sum.add(h.ledger(p.ledger.at(i)))
	}
}
