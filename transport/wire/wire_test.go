package wire

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

// Every msgpack integer form reads back to its value, whichever width
// wrote it, and a value that does not fit the asked-for width fails.
func TestIntegersOfEveryWidth(t *testing.T) {
	for _, v := range []int64{0, 1, 127, 128, 255, 256, math.MaxInt16, math.MaxInt16 + 1, math.MaxUint16 + 1, math.MaxInt32, math.MaxInt32 + 1, math.MaxInt64,
		-1, -32, -33, -128, -129, math.MinInt16, math.MinInt16 - 1, math.MinInt32, math.MinInt32 - 1, math.MinInt64} {
		r := NewReader(AppendInt(nil, v))
		if got := r.Int(64); got != v || r.Err() != nil {
			t.Errorf("Int(AppendInt(%d)) = %d, %v", v, got, r.Err())
		}
		if v >= 0 {
			r = NewReader(AppendUint(nil, uint64(v)))
			if got := r.Int(64); got != v || r.Err() != nil {
				t.Errorf("Int(AppendUint(%d)) = %d, %v", v, got, r.Err())
			}
			r = NewReader(AppendInt(nil, v))
			if got := r.Uint(64); got != uint64(v) || r.Err() != nil {
				t.Errorf("Uint(AppendInt(%d)) = %d, %v", v, got, r.Err())
			}
		} else {
			r = NewReader(AppendInt(nil, v))
			if got := r.Uint(64); got != 0 || !errors.Is(r.Err(), ErrFallback) {
				t.Errorf("Uint(AppendInt(%d)) = %d, %v; want ErrFallback", v, got, r.Err())
			}
		}
		fits := v >= math.MinInt16 && v <= math.MaxInt16
		r = NewReader(AppendInt(nil, v))
		if got := r.Int(16); (r.Err() == nil) != fits || fits && got != v {
			t.Errorf("Int16(AppendInt(%d)) = %d, %v; fits: %v", v, got, r.Err(), fits)
		}
	}
	r := NewReader(AppendUint(nil, math.MaxUint64))
	if r.Int(64); r.Err() == nil {
		t.Error("MaxUint64 read as an int64")
	}
	r = NewReader(AppendUint(nil, 256))
	if r.Uint(8); r.Err() == nil {
		t.Error("256 read as a uint8")
	}
}

// A length that announces more than the input holds fails at once, so
// nobody allocates for bytes that never came.
func TestHostileLengthsFail(t *testing.T) {
	for name, b := range map[string][]byte{
		"map32":   {0xdf, 0xff, 0xff, 0xff, 0xff},
		"array32": {0xdd, 0x7f, 0xff, 0xff, 0xff, 0x80},
		"array16": {0xdc, 0x00, 0x10, 0x80},
		"str32":   {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'},
		"bin8":    {0xc4, 0x05, 'a'},
	} {
		r := NewReader(b)
		switch name {
		case "map32":
			r.MapHeader()
		case "array32", "array16":
			r.ArrayHeader(1)
		default:
			r.RawString()
		}
		if !errors.Is(r.Err(), ErrFallback) {
			t.Errorf("%s %x: err %v, want ErrFallback", name, b, r.Err())
		}
	}
}

// Strings and byte slices survive a round trip at every size class; a nil
// slice stays nil and an empty one empty.
func TestStringsAndBytes(t *testing.T) {
	for _, n := range []int{0, 1, 31, 32, 255, 256, 65535, 65536} {
		s := string(make([]byte, n))
		r := NewReader(AppendBytes(AppendString(nil, s), []byte(s)))
		if got := r.String(); got != s {
			t.Errorf("string of %d bytes came back as %d", n, len(got))
		}
		if got := r.Bytes(); string(got) != s || got == nil {
			t.Errorf("bytes of %d came back as %d (nil: %v)", n, len(got), got == nil)
		}
		if r.Err() != nil {
			t.Fatal(r.Err())
		}
	}
	r := NewReader(AppendBytes(nil, nil))
	if got := r.Bytes(); got != nil || r.Err() != nil {
		t.Errorf("nil bytes came back as %v, %v", got, r.Err())
	}
}

// A Reader never panics and never reads past its input, whatever it is
// asked to read from whatever bytes.
func FuzzReader(f *testing.F) {
	f.Add([]byte{0x82, 0xa1, 'a', 0xcd, 0x01, 0x00, 0xa1, 'b', 0xc4, 0x02, 1, 2}, []byte{0, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, b, ops []byte) {
		r := NewReader(b)
		var dst [4]byte
		for _, op := range ops {
			switch op % 10 {
			case 0:
				r.MapHeader()
			case 1:
				r.ArrayHeader(int(op / 10))
			case 2:
				r.RawString()
			case 3:
				r.Bytes()
			case 4:
				r.Int(int(op/10)%64 + 1)
			case 5:
				r.Uint(int(op/10)%64 + 1)
			case 6:
				r.Bool()
			case 7:
				r.PeekNil()
			case 8:
				r.Array(dst[:])
			case 9:
				_ = r.String()
			}
		}
		if r.Err() != nil && !errors.Is(r.Err(), ErrFallback) {
			t.Fatalf("error %v does not wrap ErrFallback", r.Err())
		}
	})
}

// TestContainerHeadersAtEveryBoundary pins the bytes of map and array headers
// where the encoding changes form, since both share one encoder.
func TestContainerHeadersAtEveryBoundary(t *testing.T) {
	for _, tc := range []struct {
		n              int
		mapHdr, arrHdr []byte
	}{
		{0, []byte{0x80}, []byte{0x90}},
		{15, []byte{0x8f}, []byte{0x9f}},
		{16, []byte{0xde, 0x00, 0x10}, []byte{0xdc, 0x00, 0x10}},
		{65535, []byte{0xde, 0xff, 0xff}, []byte{0xdc, 0xff, 0xff}},
		{65536, []byte{0xdf, 0x00, 0x01, 0x00, 0x00}, []byte{0xdd, 0x00, 0x01, 0x00, 0x00}},
	} {
		if got := AppendMapHeader(nil, tc.n); !bytes.Equal(got, tc.mapHdr) {
			t.Errorf("AppendMapHeader(%d) = % x, want % x", tc.n, got, tc.mapHdr)
		}
		if got := AppendArrayHeader(nil, tc.n); !bytes.Equal(got, tc.arrHdr) {
			t.Errorf("AppendArrayHeader(%d) = % x, want % x", tc.n, got, tc.arrHdr)
		}
	}
}
