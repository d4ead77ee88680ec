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
	b = appendSwarmLimits(b, c.Limits)
	b = binary.AppendUvarint(b, c.MaxRate)
	b = binary.AppendUvarint(b, uint64(len(c.Announces)))
	for i := range c.Announces {
		p := &c.Announces[i]
		b = appendAnnounceRecord(b, &p.Announce)
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
	c.Limits = r.swarmLimits()
	c.MaxRate = r.uvarint()
	n, b, err := r.records(privAnnounceSize, "PrivateAnnounceBatch")
	if err != nil {
		return PrivateAnnounceBatch{}, err
	}
	if n > 0 {
		c.Announces = make([]PrivateAnnounce, n)
	}
	for i := range c.Announces {
		p := &c.Announces[i]
		e := b[i*privAnnounceSize : (i+1)*privAnnounceSize]
		if err := decodeAnnounceRecord(&p.Announce, e, i); err != nil {
			return PrivateAnnounceBatch{}, err
		}
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
