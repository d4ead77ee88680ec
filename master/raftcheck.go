package master

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
)

// A Raft stream is tied to the certificate that opened it: every Raft RPC
// read from an accepted stream must name, in its header, the member the
// certificate names (ID) at that member's address in the configuration
// (Addr). Otherwise one member could speak for another (claim to be the
// leader the others follow, or vote as someone else). hashicorp/raft's
// NetworkTransport decodes the RPCs itself and tells nobody which
// connection an RPC came from, so the check reads the stream as it passes:
// rpcReader follows the msgpack framing of the bytes raft reads (one type
// byte, one msgpack map, and for InstallSnapshot the snapshot's Size raw
// bytes) without copying them, pulls out the header's ID and Addr, and
// fails the read that completes an RPC whose header does not match, so
// raft never decodes it (and closes the stream).

// errRaftHeader closes a Raft stream whose RPC claims another identity.
var errRaftHeader = errors.New("raft rpc header does not match the certificate of its stream")

// rpcInstallSnapshot is the type byte of raft's InstallSnapshot RPC, which
// the snapshot's bytes follow.
const rpcInstallSnapshot = 2

// maxCapture bounds the header fields rpcReader keeps.
const maxCapture = 512

// rpcReader follows one Raft stream. feed is called with the bytes in the
// order raft reads them.
type rpcReader struct {
	check func(id, addr string) error

	expectType bool
	rpcType    byte
	raw        int64 // snapshot bytes left to pass

	hdr   []byte // the value header being read
	skip  int64  // payload bytes of a str/bin/ext left to pass
	cap   *[]byte
	stack []frame

	// the current RPC's top-level fields
	id, addr, key []byte
	size          int64
	capKey        bool // the str being read is a top-level key
	capInt        bool // the scalar being read is the top-level Size
}

type frame struct {
	items int  // values left (a map's keys and values both count)
	isMap bool // keys at even positions
}

func newRPCReader(check func(id, addr string) error) *rpcReader {
	return &rpcReader{check: check, expectType: true}
}

// feed follows b; a non-nil error means the stream must be closed.
func (p *rpcReader) feed(b []byte) error {
	for len(b) > 0 {
		switch {
		case p.raw > 0:
			n := min(p.raw, int64(len(b)))
			p.raw -= n
			b = b[n:]
			if p.raw == 0 {
				p.expectType = true
			}
		case p.skip > 0:
			n := min(p.skip, int64(len(b)))
			if p.cap != nil && len(*p.cap) < maxCapture {
				*p.cap = append(*p.cap, b[:min(n, int64(maxCapture-len(*p.cap)))]...)
			}
			p.skip -= n
			b = b[n:]
			if p.skip == 0 {
				if err := p.bytesDone(); err != nil {
					return err
				}
			}
		case p.expectType:
			p.rpcType = b[0]
			b = b[1:]
			p.expectType = false
			p.id, p.addr, p.size = nil, nil, 0
			p.stack = p.stack[:0]
		default:
			p.hdr = append(p.hdr, b[0])
			b = b[1:]
			need, err := headerLen(p.hdr[0])
			if err != nil {
				return err
			}
			if len(p.hdr) < need {
				continue
			}
			if err := p.value(); err != nil {
				return err
			}
		}
	}
	return nil
}

// headerLen is how many bytes the header of a msgpack value starting with
// c takes (its type byte, lengths, ext type, and fixed-size scalars).
func headerLen(c byte) (int, error) {
	switch {
	case c <= 0x7f, c >= 0xe0, c >= 0x80 && c <= 0xbf, c == 0xc0, c == 0xc2, c == 0xc3:
		return 1, nil
	}
	switch c {
	case 0xcc, 0xd0, 0xc4, 0xd9: // uint8, int8, bin8, str8
		return 2, nil
	case 0xcd, 0xd1, 0xc5, 0xda, 0xdc, 0xde: // 16-bit values and lengths
		return 3, nil
	case 0xce, 0xd2, 0xca, 0xc6, 0xdb, 0xdd, 0xdf: // 32-bit
		return 5, nil
	case 0xcf, 0xd3, 0xcb: // 64-bit
		return 9, nil
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext: type byte
		return 2, nil
	case 0xc7: // ext8: len, type
		return 3, nil
	case 0xc8:
		return 4, nil
	case 0xc9:
		return 6, nil
	}
	return 0, fmt.Errorf("raft stream: byte %#x starts no msgpack value", c)
}

// value handles a complete value header in p.hdr.
func (p *rpcReader) value() error {
	h := p.hdr
	p.hdr = p.hdr[:0]
	c := h[0]
	be := binary.BigEndian
	var payload int64 = -1 // bytes of a str/bin/ext; -1: none
	var scalar int64
	switch {
	case c <= 0x7f:
		scalar = int64(c)
	case c >= 0xe0:
		scalar = int64(int8(c))
	case c >= 0xa0 && c <= 0xbf:
		payload = int64(c & 0x1f)
	case c >= 0x90 && c <= 0x9f:
		return p.open(int(c&0x0f), false)
	case c >= 0x80 && c <= 0x8f:
		return p.open(int(c&0x0f), true)
	}
	switch c {
	case 0xcc:
		scalar = int64(h[1])
	case 0xcd:
		scalar = int64(be.Uint16(h[1:]))
	case 0xce:
		scalar = int64(be.Uint32(h[1:]))
	case 0xcf:
		scalar = int64(be.Uint64(h[1:]))
	case 0xd0:
		scalar = int64(int8(h[1]))
	case 0xd1:
		scalar = int64(int16(be.Uint16(h[1:])))
	case 0xd2:
		scalar = int64(int32(be.Uint32(h[1:])))
	case 0xd3:
		scalar = int64(be.Uint64(h[1:]))
	case 0xc4, 0xd9:
		payload = int64(h[1])
	case 0xc5, 0xda:
		payload = int64(be.Uint16(h[1:]))
	case 0xc6, 0xdb:
		payload = int64(be.Uint32(h[1:]))
	case 0xdc:
		return p.open(int(be.Uint16(h[1:])), false)
	case 0xdd:
		return p.open(int(be.Uint32(h[1:])), false)
	case 0xde:
		return p.open(int(be.Uint16(h[1:])), true)
	case 0xdf:
		return p.open(int(be.Uint32(h[1:])), true)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		payload = 1 << (c - 0xd4)
	case 0xc7:
		payload = int64(h[1])
	case 0xc8:
		payload = int64(be.Uint16(h[1:]))
	case 0xc9:
		payload = int64(be.Uint32(h[1:]))
	}
	if payload >= 0 {
		p.startBytes(c, payload)
		if payload == 0 {
			return p.bytesDone()
		}
		p.skip = payload
		return nil
	}
	if p.atTop() && !p.isKey() && string(p.key) == "Size" {
		p.size = scalar
	}
	return p.done()
}

// atTop reports whether the next value is inside the RPC's top-level map.
func (p *rpcReader) atTop() bool { return len(p.stack) == 1 && p.stack[0].isMap }

// isKey reports whether the next value is a map key.
func (p *rpcReader) isKey() bool {
	if len(p.stack) == 0 {
		return false
	}
	f := p.stack[len(p.stack)-1]
	return f.isMap && f.items%2 == 0
}

// startBytes decides whether the str/bin/ext about to be read is kept.
func (p *rpcReader) startBytes(c byte, n int64) {
	p.cap = nil
	if !p.atTop() || c >= 0xc7 && c <= 0xc9 || c >= 0xd4 && c <= 0xd8 {
		return
	}
	switch {
	case p.isKey():
		p.key = p.key[:0]
		p.cap = &p.key
	case string(p.key) == "ID":
		p.id = []byte{}
		p.cap = &p.id
	case string(p.key) == "Addr":
		p.addr = []byte{}
		p.cap = &p.addr
	}
}

func (p *rpcReader) bytesDone() error {
	p.cap = nil
	return p.done()
}

func (p *rpcReader) open(n int, isMap bool) error {
	if isMap {
		n *= 2
	}
	if len(p.stack) > 64 {
		return errors.New("raft stream: msgpack nested too deep")
	}
	p.stack = append(p.stack, frame{items: n, isMap: isMap})
	if n == 0 {
		p.stack = p.stack[:len(p.stack)-1]
		return p.done()
	}
	return nil
}

// done records that one value ended, closing the containers it filled,
// and checks the RPC once its top-level value ends.
func (p *rpcReader) done() error {
	for len(p.stack) > 0 {
		f := &p.stack[len(p.stack)-1]
		f.items--
		if f.items > 0 {
			return nil
		}
		p.stack = p.stack[:len(p.stack)-1]
	}
	// The RPC's top-level value is complete.
	if err := p.check(string(p.id), string(p.addr)); err != nil {
		return err
	}
	if p.rpcType == rpcInstallSnapshot && p.size > 0 {
		p.raw = p.size
	} else {
		p.expectType = true
	}
	p.key = p.key[:0]
	return nil
}

// raftStream is an accepted Raft connection whose RPCs must carry the
// identity its certificate proved.
type raftStream struct {
	net.Conn
	mu  sync.Mutex
	p   *rpcReader
	err error
}

func (c *raftStream) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.mu.Lock()
		if c.err == nil {
			c.err = c.p.feed(b[:n])
		}
		perr := c.err
		c.mu.Unlock()
		if perr != nil {
			c.Conn.Close()
			return 0, perr
		}
	}
	return n, err
}
