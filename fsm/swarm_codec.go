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
	l := c.Limits
	for _, v := range [...]uint32{l.MaxPeers, l.MaxSwarms, l.PerAddr, l.Per64, l.Per48} {
		b = binary.AppendUvarint(b, uint64(v))
	}
	b = binary.AppendUvarint(b, uint64(len(c.Announces)))
	for i := range c.Announces {
		a := &c.Announces[i]
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
		b = append(b, fl, byte(a.Event))
	}
	return b, nil
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

func (r *batchReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
		r.fail("bad uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *batchReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 || n != len(binary.AppendVarint(nil, v)) {
		r.fail("bad varint")
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

// decodeAnnounceBatch parses a body written by appendAnnounceBatch and
// validates the command. It never panics.
func decodeAnnounceBatch(body []byte) (AnnounceBatch, error) {
	r := &batchReader{b: body}
	var c AnnounceBatch
	c.Time = r.varint()
	c.Limits = SwarmLimits{MaxPeers: r.u32(), MaxSwarms: r.u32(), PerAddr: r.u32(), Per64: r.u32(), Per48: r.u32()}
	n := r.uvarint()
	if r.err != nil {
		return AnnounceBatch{}, r.err
	}
	if n > MaxAnnouncesPerBatch {
		return AnnounceBatch{}, fmt.Errorf("%w: %d announces in one batch, limit %d", ErrInvalid, n, MaxAnnouncesPerBatch)
	}
	if uint64(len(r.b)) != n*announceSize {
		return AnnounceBatch{}, fmt.Errorf("%w: AnnounceBatch body: %d bytes for %d announces, want %d", ErrInvalid, len(r.b), n, n*announceSize)
	}
	if n > 0 {
		c.Announces = make([]Announce, n)
	}
	b := r.b
	for i := range c.Announces {
		a := &c.Announces[i]
		p := b[i*announceSize : (i+1)*announceSize]
		copy(a.InfoHash[:], p[0:20])
		copy(a.Peer[:], p[20:40])
		copy(a.IP[:], p[40:56])
		a.Port = binary.BigEndian.Uint16(p[56:58])
		a.Key = binary.BigEndian.Uint32(p[58:62])
		fl := p[62]
		if fl&^batchFlagsMask != 0 {
			return AnnounceBatch{}, fmt.Errorf("%w: announce %d of a batch has unknown flags %#x", ErrInvalid, i, fl)
		}
		a.HasKey, a.Seeder = fl&batchHasKey != 0, fl&batchSeeder != 0
		a.Event = SwarmEvent(p[63])
	}
	if err := c.Validate(); err != nil {
		return AnnounceBatch{}, err
	}
	return c, nil
}

// applyAnnounceBatch applies each announce of c in order.
func (f *FSM) applyAnnounceBatch(c AnnounceBatch) Response {
	f.st.lastTime = max(f.st.lastTime, c.Time)
	res := make([]Response, len(c.Announces))
	for i, a := range c.Announces {
		a.Time = c.Time
		res[i] = f.openAnnounce(a, &c.Limits)
	}
	return Response{Results: res}
}
