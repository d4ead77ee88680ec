package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

var errTruncated = errors.New("truncated msgpack")

// checkMsgpack reports whether b holds exactly one well-formed msgpack value
// whose containers nest at most maxDepth deep and hold at most maxLen
// elements (or key/value pairs) each. It allocates nothing and runs in time
// linear in len(b). Decode calls it before the codec so that hostile bytes
// cannot make the codec recurse deeply or size a slice from a forged length.
func checkMsgpack(b []byte, maxDepth, maxLen int) error {
	// remaining[d] counts the values still expected at depth d.
	var stack [16]uint64
	maxDepth = min(maxDepth, len(stack))
	remaining := stack[:1]
	remaining[0] = 1
	i := 0
	readN := func(n int) (uint64, error) {
		if len(b)-i < n {
			return 0, errTruncated
		}
		var v uint64
		switch n {
		case 1:
			v = uint64(b[i])
		case 2:
			v = uint64(binary.BigEndian.Uint16(b[i:]))
		case 4:
			v = uint64(binary.BigEndian.Uint32(b[i:]))
		}
		i += n
		return v, nil
	}
	for {
		for len(remaining) > 0 && remaining[len(remaining)-1] == 0 {
			remaining = remaining[:len(remaining)-1]
		}
		if len(remaining) == 0 {
			break
		}
		remaining[len(remaining)-1]--
		if i >= len(b) {
			return errTruncated
		}
		c := b[i]
		i++
		var (
			skip      uint64 // payload bytes to jump over
			lenBytes  int    // width of a length prefix that follows c
			extra     uint64 // bytes after the length prefix beyond its value (ext type byte)
			container bool
			pairs     bool
			n         uint64 // elements of a fixed-size container
		)
		switch {
		case c <= 0x7f || c >= 0xe0: // positive and negative fixint
		case c <= 0x8f:
			container, pairs, n = true, true, uint64(c&0x0f)
		case c <= 0x9f:
			container, n = true, uint64(c&0x0f)
		case c <= 0xbf:
			skip = uint64(c & 0x1f)
		default:
			switch c {
			case 0xc0, 0xc2, 0xc3: // nil, false, true
			case 0xc1:
				return fmt.Errorf("reserved msgpack byte 0xc1 at %d", i-1)
			case 0xc4, 0xd9: // bin8, str8
				lenBytes = 1
			case 0xc5, 0xda: // bin16, str16
				lenBytes = 2
			case 0xc6, 0xdb: // bin32, str32
				lenBytes = 4
			case 0xc7: // ext8
				lenBytes, extra = 1, 1
			case 0xc8: // ext16
				lenBytes, extra = 2, 1
			case 0xc9: // ext32
				lenBytes, extra = 4, 1
			case 0xca, 0xce, 0xd2: // float32, uint32, int32
				skip = 4
			case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
				skip = 8
			case 0xcc, 0xd0: // uint8, int8
				skip = 1
			case 0xcd, 0xd1: // uint16, int16
				skip = 2
			case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16
				skip = 1 + 1<<(c-0xd4)
			case 0xdc: // array16
				container, lenBytes = true, 2
			case 0xdd: // array32
				container, lenBytes = true, 4
			case 0xde: // map16
				container, pairs, lenBytes = true, true, 2
			case 0xdf: // map32
				container, pairs, lenBytes = true, true, 4
			}
		}
		if lenBytes > 0 {
			v, err := readN(lenBytes)
			if err != nil {
				return err
			}
			if container {
				n = v
			} else {
				skip = v + extra
			}
		}
		if container {
			if n > uint64(maxLen) {
				return fmt.Errorf("msgpack container of %d elements at %d, limit %d", n, i, maxLen)
			}
			if pairs {
				n *= 2
			}
			if n > 0 {
				if len(remaining) >= maxDepth {
					return fmt.Errorf("msgpack nested deeper than %d", maxDepth)
				}
				remaining = append(remaining, n)
			}
			continue
		}
		if skip > uint64(len(b)-i) {
			return errTruncated
		}
		i += int(skip)
	}
	if i != len(b) {
		return fmt.Errorf("%d trailing bytes after msgpack value", len(b)-i)
	}
	return nil
}
