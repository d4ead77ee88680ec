package fsm

import (
	"encoding/binary"
	"fmt"
)

// PrivateAnnounceBatch body encoding (after the type and version bytes),
// hand-written like AnnounceBatch's:
//
//	time      varint
//	limits    5 × uvarint (MaxPeers, MaxSwarms, PerAddr, Per64, Per48)
//	maxRate   uvarint
//	count     uvarint, at most MaxAnnouncesPerBatch
//	count × privAnnounceSize bytes: an announce as in AnnounceBatch
//	    (event 2 is SwarmStarted, 4 is SwarmCredit), then passkey 16,
//	    uploaded 8, downloaded 8, at 8, big-endian
//
// Every varint is minimal and nothing may follow the last announce.
const privAnnounceSize = announceSize + PasskeySize + 8 + 8 + 8

// EncodePrivateAnnounceBatch is Encode for a PrivateAnnounceBatch.
func EncodePrivateAnnounceBatch(c PrivateAnnounceBatch) ([]byte, error) { return Encode(c) }

func appendPrivateAnnounceBatch(b []byte, c PrivateAnnounceBatch) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	b = binary.AppendVarint(b, c.Time)
	l := c.Limits
	for _, v := range [...]uint32{l.MaxPeers, l.MaxSwarms, l.PerAddr, l.Per64, l.Per48} {
		b = binary.AppendUvarint(b, uint64(v))
	}
	b = binary.AppendUvarint(b, c.MaxRate)
	b = binary.AppendUvarint(b, uint64(len(c.Announces)))
	for i := range c.Announces {
		p := &c.Announces[i]
		a := &p.Announce
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
		b = append(b, p.Passkey[:]...)
		b = binary.BigEndian.AppendUint64(b, p.Uploaded)
		b = binary.BigEndian.AppendUint64(b, p.Downloaded)
		b = binary.BigEndian.AppendUint64(b, uint64(p.At))
	}
	if len(b) > MaxCommandSize {
		return nil, fmt.Errorf("%w: encoded private announce batch is %d bytes, limit %d", ErrInvalid, len(b), MaxCommandSize)
	}
	return b, nil
}

// decodePrivateAnnounceBatch parses a body written by
// appendPrivateAnnounceBatch and validates the command. It never panics.
func decodePrivateAnnounceBatch(body []byte) (PrivateAnnounceBatch, error) {
	r := &batchReader{b: body}
	var c PrivateAnnounceBatch
	c.Time = r.varint()
	c.Limits = SwarmLimits{MaxPeers: r.u32(), MaxSwarms: r.u32(), PerAddr: r.u32(), Per64: r.u32(), Per48: r.u32()}
	c.MaxRate = r.uvarint()
	n := r.uvarint()
	if r.err != nil {
		return PrivateAnnounceBatch{}, r.err
	}
	if n > MaxAnnouncesPerBatch {
		return PrivateAnnounceBatch{}, fmt.Errorf("%w: %d announces in one batch, limit %d", ErrInvalid, n, MaxAnnouncesPerBatch)
	}
	if uint64(len(r.b)) != n*privAnnounceSize {
		return PrivateAnnounceBatch{}, fmt.Errorf("%w: PrivateAnnounceBatch body: %d bytes for %d announces, want %d", ErrInvalid, len(r.b), n, n*privAnnounceSize)
	}
	if n > 0 {
		c.Announces = make([]PrivateAnnounce, n)
	}
	b := r.b
	for i := range c.Announces {
		p := &c.Announces[i]
		a := &p.Announce
		e := b[i*privAnnounceSize : (i+1)*privAnnounceSize]
		copy(a.InfoHash[:], e[0:20])
		copy(a.Peer[:], e[20:40])
		copy(a.IP[:], e[40:56])
		a.Port = binary.BigEndian.Uint16(e[56:58])
		a.Key = binary.BigEndian.Uint32(e[58:62])
		fl := e[62]
		if fl&^batchFlagsMask != 0 {
			return PrivateAnnounceBatch{}, fmt.Errorf("%w: announce %d of a batch has unknown flags %#x", ErrInvalid, i, fl)
		}
		a.HasKey, a.Seeder = fl&batchHasKey != 0, fl&batchSeeder != 0
		a.Event = SwarmEvent(e[63])
		e = e[announceSize:]
		copy(p.Passkey[:], e[:PasskeySize])
		e = e[PasskeySize:]
		p.Uploaded = binary.BigEndian.Uint64(e[0:8])
		p.Downloaded = binary.BigEndian.Uint64(e[8:16])
		p.At = int64(binary.BigEndian.Uint64(e[16:24]))
	}
	if err := c.Validate(); err != nil {
		return PrivateAnnounceBatch{}, err
	}
	return c, nil
}
