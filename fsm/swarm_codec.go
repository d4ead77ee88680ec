package fsm

import (
	"encoding/binary"
	"fmt"
)

// AnnounceBatch body encoding (after the type and version bytes), written
// by hand because it is the tracker's hottest command and reflection cost
// a tenth of the leader's CPU:
//
//	time      varint
//	limits    5 × uvarint (MaxPeers, MaxSwarms, PerAddr, Per64, Per48)
//	count     uvarint, at most MaxAnnouncesPerBatch
//	count × announceSize bytes:
//	    info-hash 20, peer 20, ip 16, port 2 big-endian, key 4 big-endian,
//	    flags 1 (1 has key, 2 seeder), event 1
//
// Every varint is minimal and nothing may follow the last announce, so a
// batch has exactly one encoding.
const announceSize = 20 + 20 + 16 + 2 + 4 + 1 + 1

const (
	batchHasKey = 1 << iota
	batchSeeder
	batchFlagsMask = batchHasKey | batchSeeder
)

// appendAnnounceBatch validates c and appends its body.
func appendAnnounceBatch(b []byte, c AnnounceBatch) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	b = binary.AppendVarint(b, c.Time)
	b = appendSwarmLimits(b, c.Limits)
	b = binary.AppendUvarint(b, uint64(len(c.Announces)))
	for i := range c.Announces {
		b = appendAnnounceRecord(b, &c.Announces[i])
	}
	return b, nil
}

// appendSwarmLimits appends the limits field of AnnounceBatch and
// PrivateAnnounceBatch: 5 uvarints, MaxPeers, MaxSwarms, PerAddr, Per64,
// Per48. batchReader.swarmLimits reads it.
func appendSwarmLimits(b []byte, l SwarmLimits) []byte {
	for _, v := range [...]uint32{l.MaxPeers, l.MaxSwarms, l.PerAddr, l.Per64, l.Per48} {
		b = binary.AppendUvarint(b, uint64(v))
	}
	return b
}

// appendAnnounceRecord appends a's announceSize-byte record, the unit of
// AnnounceBatch and the head of PrivateAnnounceBatch's; decodeAnnounceRecord
// reads it. a.Time is not in it: a batch has one time.
func appendAnnounceRecord(b []byte, a *Announce) []byte {
	b = append(b, a.InfoHash[:]...)
	b = append(b, a.Peer[:]...)
	b = append(b, a.IP[:]...)
	b = binary.BigEndian.AppendUint16(b, a.Port)
	b = binary.BigEndian.AppendUint32(b, a.Key)
	var fl byte
	if a.HasKey {
		fl |= batchHasKey
	}
	if a.Seeder {
		fl |= batchSeeder
	}
	return append(b, fl, byte(a.Event))
}

// decodeAnnounceRecord fills a from p, a record appendAnnounceRecord wrote
// (p holds at least announceSize bytes). It refuses unknown flag bits; i
// is the record's place in its batch, for the error.
func decodeAnnounceRecord(a *Announce, p []byte, i int) error {
	copy(a.InfoHash[:], p[0:20])
	copy(a.Peer[:], p[20:40])
	copy(a.IP[:], p[40:56])
	a.Port = binary.BigEndian.Uint16(p[56:58])
	a.Key = binary.BigEndian.Uint32(p[58:62])
	fl := p[62]
	if fl&^batchFlagsMask != 0 {
		return fmt.Errorf("%w: announce %d of a batch has unknown flags %#x", ErrInvalid, i, fl)
	}
	a.HasKey, a.Seeder = fl&batchHasKey != 0, fl&batchSeeder != 0
	a.Event = SwarmEvent(p[63])
	return nil
}

// batchReader reads minimal varints with a sticky error.
type batchReader struct {
	b   []byte
	err error
}

func (r *batchReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: AnnounceBatch body: "+format, append([]any{ErrInvalid}, args...)...)
	}
}

func (r *batchReader) uvarint() uint64 { return r.minimalUvarint("uvarint") }

// varint reads a minimal zig-zag varint. binary.Varint is the zig-zag
// decoding of binary.Uvarint over the same bytes, so a varint is minimal
// exactly when that uvarint is.
func (r *batchReader) varint() int64 {
	ux := r.minimalUvarint("varint")
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

// minimalUvarint owns the batch codecs' rule that every varint takes its
// shortest form, so a batch has one encoding; what names the field's kind
// in the error.
func (r *batchReader) minimalUvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
		r.fail("bad %s", what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *batchReader) u32() uint32 {
	v := r.uvarint()
	if v > 1<<32-1 {
		r.fail("limit %d over 32 bits", v)
	}
	return uint32(v)
}

// swarmLimits reads what appendSwarmLimits wrote.
func (r *batchReader) swarmLimits() SwarmLimits {
	return SwarmLimits{MaxPeers: r.u32(), MaxSwarms: r.u32(), PerAddr: r.u32(), Per64: r.u32(), Per48: r.u32()}
}

// records reads a batch's announce count and returns it with the records
// that follow, each size bytes: at most MaxAnnouncesPerBatch, and exactly
// the bytes that remain. cmd names the command in the error.
func (r *batchReader) records(size uint64, cmd string) (n uint64, recs []byte, err error) {
	n = r.uvarint()
	if r.err != nil {
		return 0, nil, r.err
	}
	if n > MaxAnnouncesPerBatch {
		return 0, nil, fmt.Errorf("%w: %d announces in one batch, limit %d", ErrInvalid, n, MaxAnnouncesPerBatch)
	}
	if uint64(len(r.b)) != n*size {
		return 0, nil, fmt.Errorf("%w: %s body: %d bytes for %d announces, want %d", ErrInvalid, cmd, len(r.b), n, n*size)
	}
	return n, r.b, nil
}

// decodeAnnounceBatch parses a body written by appendAnnounceBatch and
// validates the command. It never panics.
func decodeAnnounceBatch(body []byte) (AnnounceBatch, error) {
	r := &batchReader{b: body}
	var c AnnounceBatch
	c.Time = r.varint()
	c.Limits = r.swarmLimits()
	n, b, err := r.records(announceSize, "AnnounceBatch")
	if err != nil {
		return AnnounceBatch{}, err
	}
	if n > 0 {
		c.Announces = make([]Announce, n)
	}
	for i := range c.Announces {
		if err := decodeAnnounceRecord(&c.Announces[i], b[i*announceSize:(i+1)*announceSize], i); err != nil {
			return AnnounceBatch{}, err
		}
	}
	if err := c.Validate(); err != nil {
		return AnnounceBatch{}, err
	}
	return c, nil
}

// applyAnnounceBatch applies each announce of c in order.
func (f *FSM) applyAnnounceBatch(c AnnounceBatch) Response {
	res := make([]Response, len(c.Announces))
	for i, a := range c.Announces {
		a.Time = c.Time
		res[i] = f.openAnnounce(a, &c.Limits)
	}
	return Response{Results: res}
}
