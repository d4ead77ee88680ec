// Package wire is the reflection-free msgpack codec of FileShare's hot RPC
// messages: append-style encoders, a strict, allocation-light reader, and
// Fields, which runs a struct's one field list as its encoder or decoder.
//
// The bytes are those the reflective codec (go-msgpack/v2 as configured in
// transport: WriteExt, RawToString, structs as maps with their fields —
// embedded ones flattened — sorted by name) writes for the same value, so a
// master with this codec and one without exchange identical frames during a
// rolling upgrade, and no frame version is needed. Each integer takes
// go-msgpack's smallest form: a signed value one of positive/negative
// fixint, int8/16/32/64; an unsigned one fixint, uint8/16/32/64.
//
// The reader accepts every encoding of a value that msgpack allows (any
// integer width, str or bin for a string, keys in any order) but nothing
// odd: an unknown key, a nil where a value belongs, a float, an array
// length that does not fit. On such input a message's DecodeWire fails with
// ErrFallback and leaves the message zero, and transport.Unmarshal hands
// the bytes to the reflective decoder, which stays the arbiter of what is
// acceptable. So the fast path can only ever accept more quickly, never
// accept differently.
package wire

import (
	"encoding/binary"
	"errors"
	"math"
)

// ErrFallback means the reader met input outside its fast path: the
// caller should decode the same bytes with the reflective codec.
var ErrFallback = errors.New("wire: input outside the fast path")

// Encoder is implemented by a message with a hand-written encoder.
// AppendWire appends the message's msgpack encoding to b and returns the
// extended slice; it never fails.
type Encoder interface {
	AppendWire(b []byte) []byte
}

// Decoder is implemented by a message with a hand-written decoder.
// DecodeWire decodes b into the message; on any error it leaves the
// message zero and returns an error wrapping ErrFallback. The message
// keeps no reference to b.
type Decoder interface {
	DecodeWire(b []byte) error
}

// AppendNil appends msgpack nil.
func AppendNil(b []byte) []byte { return append(b, 0xc0) }

// AppendBool appends a bool.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

// AppendMapHeader appends the header of a map of n entries.
func AppendMapHeader(b []byte, n int) []byte { return appendHeader(b, n, 0x80, 0xde, 0xdf) }

// AppendArrayHeader appends the header of an array of n elements.
func AppendArrayHeader(b []byte, n int) []byte { return appendHeader(b, n, 0x90, 0xdc, 0xdd) }

// appendHeader appends a msgpack map or array header for n items: the fix
// form (fix|n) below 16, else the 16- or 32-bit form led by c16 or c32.
func appendHeader(b []byte, n int, fix, c16, c32 byte) []byte {
	switch {
	case n < 16:
		return append(b, fix|byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(b, c16), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, c32), uint32(n))
}

// FieldCount returns the entry count of a struct's map: always, the fields
// written whatever their value, plus one for each true in set, the
// omitempty fields that have a value (the reflective codec leaves the
// others out).
func FieldCount(always int, set ...bool) int {
	n := always
	for _, s := range set {
		if s {
			n++
		}
	}
	return n
}

// AppendNonEmpty appends the map entry key: s, or nothing if s is empty:
// a string field tagged omitempty. FieldCount counts it as s != "".
func AppendNonEmpty(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return AppendString(AppendString(b, key), s)
}

// AppendString appends s as a msgpack str.
func AppendString(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n < 256:
		b = append(b, 0xd9, byte(n))
	case n < 1<<16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

// AppendBytes appends v as a msgpack bin, or nil if v is nil.
func AppendBytes(b []byte, v []byte) []byte {
	if v == nil {
		return AppendNil(b)
	}
	return append(AppendBinHeader(b, len(v)), v...)
}

// AppendBinHeader appends the header of a bin of n bytes.
func AppendBinHeader(b []byte, n int) []byte {
	switch {
	case n < 256:
		return append(b, 0xc4, byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(b, 0xc5), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
}

// AppendUint appends an unsigned integer in its smallest form.
func AppendUint(b []byte, v uint64) []byte {
	switch {
	case v <= math.MaxInt8:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
}

// AppendInt appends a signed integer in go-msgpack's smallest form.
func AppendInt(b []byte, v int64) []byte {
	switch {
	case v > math.MaxInt8:
		switch {
		case v <= math.MaxInt16:
			return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(v))
		case v <= math.MaxInt32:
			return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
		}
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
	case v >= -32:
		return append(b, byte(v))
	case v >= math.MinInt8:
		return append(b, 0xd0, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
}

// Reader decodes msgpack values from a byte slice. Its error is sticky:
// after the first failure every method returns a zero value, and Err
// reports the failure. A Reader never panics, and never allocates more
// than the input holds.
type Reader struct {
	b   []byte
	err error
}

// NewReader returns a Reader of b. It aliases b.
func NewReader(b []byte) Reader { return Reader{b: b} }

// Err returns the first failure, wrapping ErrFallback, or nil.
func (r *Reader) Err() error { return r.err }

// Fail records a failure (the first one sticks).
func (r *Reader) Fail() {
	if r.err == nil {
		r.err = ErrFallback
	}
	r.b = nil
}

func (r *Reader) next(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.Fail()
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *Reader) byte1() byte {
	p := r.next(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (r *Reader) len16() int { p := r.next(2); return int(be16(p)) }
func (r *Reader) len32() int {
	p := r.next(4)
	n := be32(p)
	if uint64(n) > uint64(len(r.b)) { // cannot fit: refuse before anyone allocates
		r.Fail()
		return 0
	}
	return int(n)
}

func be16(p []byte) uint16 {
	if len(p) < 2 {
		return 0
	}
	return binary.BigEndian.Uint16(p)
}

func be32(p []byte) uint32 {
	if len(p) < 4 {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func be64(p []byte) uint64 {
	if len(p) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

// PeekNil reports whether the next value is nil, and consumes it if so.
func (r *Reader) PeekNil() bool {
	if r.err == nil && len(r.b) > 0 && r.b[0] == 0xc0 {
		r.b = r.b[1:]
		return true
	}
	return false
}

// MapHeader reads a map header and returns its entry count.
func (r *Reader) MapHeader() int {
	c := r.byte1()
	switch {
	case c&0xf0 == 0x80:
		return int(c & 0x0f)
	case c == 0xde:
		return r.len16()
	case c == 0xdf:
		return r.len32()
	}
	r.Fail()
	return 0
}

// ArrayHeader reads an array header and returns its element count. The
// count is checked against the bytes left, at least minElem (at least 1)
// per element, so a hostile count cannot make a caller allocate.
func (r *Reader) ArrayHeader(minElem int) int {
	c := r.byte1()
	n := 0
	switch {
	case c&0xf0 == 0x90:
		n = int(c & 0x0f)
	case c == 0xdc:
		n = r.len16()
	case c == 0xdd:
		n = r.len32()
	default:
		r.Fail()
		return 0
	}
	if n > len(r.b)/max(minElem, 1) {
		r.Fail()
		return 0
	}
	return n
}

// RawString reads a str or bin and returns its bytes, aliasing the input.
func (r *Reader) RawString() []byte {
	c := r.byte1()
	n := 0
	switch {
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xd9 || c == 0xc4:
		n = int(r.byte1())
	case c == 0xda || c == 0xc5:
		n = r.len16()
	case c == 0xdb || c == 0xc6:
		n = r.len32()
	default:
		r.Fail()
		return nil
	}
	return r.next(n)
}

// String reads a str or bin as a string.
func (r *Reader) String() string { return string(r.RawString()) }

// Bytes reads a bin or str as a fresh []byte; nil reads as nil.
func (r *Reader) Bytes() []byte {
	if r.PeekNil() {
		return nil
	}
	p := r.RawString()
	if r.err != nil {
		return nil
	}
	return append(make([]byte, 0, len(p)), p...)
}

// Array reads a bin or str of exactly len(dst) bytes into dst.
func (r *Reader) Array(dst []byte) {
	p := r.RawString()
	if len(p) != len(dst) {
		r.Fail()
		return
	}
	copy(dst, p)
}

// Bool reads a bool.
func (r *Reader) Bool() bool {
	switch r.byte1() {
	case 0xc3:
		return true
	case 0xc2:
		return false
	}
	r.Fail()
	return false
}

// Int reads an integer of any msgpack width that fits in bits signed bits.
func (r *Reader) Int(bits int) int64 {
	u, signed := r.integer()
	v := int64(u)
	switch {
	case !signed && u > math.MaxInt64,
		bits < 64 && (v < -(1<<(bits-1)) || v > 1<<(bits-1)-1):
		r.Fail()
		return 0
	case r.err != nil:
		return 0
	}
	return v
}

// Uint reads a non-negative integer of any msgpack width that fits in
// bits unsigned bits.
func (r *Reader) Uint(bits int) uint64 {
	u, signed := r.integer()
	switch {
	case signed && int64(u) < 0,
		bits < 64 && u>>bits != 0:
		r.Fail()
		return 0
	case r.err != nil:
		return 0
	}
	return u
}

// integer owns the msgpack integer formats that Int and Uint share: it
// reads an integer of any width, signed or not, and returns its 64 bits
// and whether its format was a signed one (negative fixint, int8 to
// int64), whose bits are two's complement. Positive fixint and uint8 to
// uint64 are unsigned. Int and Uint each accept a value of either kind that
// fits them.
func (r *Reader) integer() (u uint64, signed bool) {
	c := r.byte1()
	switch {
	case c <= 0x7f:
		return uint64(c), false
	case c >= 0xe0:
		return uint64(int8(c)), true
	case c == 0xcc:
		return uint64(r.byte1()), false
	case c == 0xcd:
		return uint64(be16(r.next(2))), false
	case c == 0xce:
		return uint64(be32(r.next(4))), false
	case c == 0xcf:
		return be64(r.next(8)), false
	case c == 0xd0:
		return uint64(int8(r.byte1())), true
	case c == 0xd1:
		return uint64(int16(be16(r.next(2)))), true
	case c == 0xd2:
		return uint64(int32(be32(r.next(4)))), true
	case c == 0xd3:
		return be64(r.next(8)), true
	}
	r.Fail()
	return 0, false
}
