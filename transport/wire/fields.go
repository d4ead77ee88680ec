package wire

import "strconv"

// Fields runs a struct's field list: the one description of the struct's
// encoding that both its encoder and its decoder follow, so the two cannot
// disagree. A field list is a function that calls one Fields method (or
// Struct, List, OmitList) per field, in the order the reflective codec
// writes them: by name, with an embedded struct's fields among the others
// as if they were the struct's own. It takes its Fields by value and
// returns it, so the Fields stays on the stack (one passed by pointer
// through a function value would escape to the heap: an allocation per
// struct):
//
//	func (m *Reply) wireFields(f wire.Fields) wire.Fields {
//		f.Bool("Found", &m.Found)
//		f.Uint64("Index", &m.Index)
//		f.OmitString("Leader", &m.Leader)
//		return f
//	}
//
// AppendStruct and DecodeStruct run it. Each method writes its field's key
// and value, or, reading, stores the value into the field if the key just
// read is its own; the Omit forms are fields tagged omitempty, left out of
// the encoding (and of the map's count) when zero. Reading accepts the
// keys in any order, repeated (the last one wins), or missing (the field
// keeps its value); a key that names no field fails the read.
//
// Only AppendStruct, DecodeStruct, Struct and List make a Fields.
type Fields struct {
	mode mode
	n    int    // counting, writing: the fields written; reading: the keys left
	b    []byte // writing: the output
	r    Reader // reading

	// Reading: key was read and no field has taken it yet (pending), and
	// whether some field took a key during this run of the list.
	key     []byte
	pending bool
	took    bool
}

type mode uint8

const (
	counting mode = iota
	writing
	reading
)

// AppendStruct appends m's encoding to b: a map of the fields that its
// field list writes.
func AppendStruct[T any](b []byte, m *T, fields func(*T, Fields) Fields) []byte {
	// The list runs once: it counts the fields as it writes them after a
	// one-byte fixmap header, which the count then completes. A struct of
	// 16 fields or more (none yet) takes a second run, to count first.
	at := len(b)
	f := fields(m, Fields{mode: writing, b: append(b, 0x80)})
	if f.n < 16 {
		f.b[at] |= byte(f.n)
		return f.b
	}
	n := fields(m, Fields{mode: counting}).n
	return fields(m, Fields{mode: writing, b: AppendMapHeader(b[:at], n)}).b
}

// DecodeStruct decodes b, a map, into m by its field list. On failure it
// leaves m zero and returns an error wrapping ErrFallback (the contract of
// Decoder.DecodeWire).
func DecodeStruct[T any](b []byte, m *T, fields func(*T, Fields) Fields) error {
	if r := readStruct(NewReader(b), m, fields); r.err != nil {
		var zero T
		*m = zero
		return r.err
	}
	return nil
}

// readStruct reads a map from r into m and returns r advanced past it.
// Each run of the field list takes the keys that come in its order (one
// run, for the sorted keys every encoder writes); a run that takes none
// has met a key that names no field.
//
// Keys far out of order would take one run each; after maxRuns the read
// fails and the reflective decoder, one pass in any order, takes the
// input: a crafted frame cannot make the fast path quadratic.
func readStruct[T any](r Reader, m *T, fields func(*T, Fields) Fields) Reader {
	f := Fields{mode: reading, r: r}
	runs := 0
	for f.n = f.r.MapHeader(); f.n > 0 && f.r.err == nil; runs++ {
		f.took = false
		if f = fields(m, f); !f.took || runs == maxRuns {
			f.r.Fail()
		}
	}
	return f.r
}

// maxRuns bounds the runs of a field list over one map's keys (see
// readStruct): sorted keys take one.
const maxRuns = 4

// field owns the key of each field: it reports whether the caller is to
// write or read the field's value now. Counting, it counts the field
// unless omit and returns false; writing, it appends key unless omit;
// reading, it reads the next key if none is pending and takes it if it is
// key (omit does not matter: an omitted field may still be sent).
func (f *Fields) field(key string, omit bool) bool {
	switch f.mode {
	case counting:
		if !omit {
			f.n++
		}
		return false
	case writing:
		if omit {
			return false
		}
		f.n++
		f.b = AppendString(f.b, key)
		return true
	}
	if f.n == 0 || f.r.err != nil {
		return false
	}
	if !f.pending {
		f.key, f.pending = f.r.RawString(), true
	}
	if string(f.key) != key {
		return false
	}
	f.pending, f.took = false, true
	f.n--
	return true
}

// Bool is a bool field.
func (f *Fields) Bool(key string, p *bool) { f.bool(key, p, false) }

// OmitBool is a bool field tagged omitempty: left out when false.
func (f *Fields) OmitBool(key string, p *bool) { f.bool(key, p, !*p) }

func (f *Fields) bool(key string, p *bool, omit bool) {
	switch {
	case !f.field(key, omit):
	case f.mode == reading:
		*p = f.r.Bool()
	default:
		f.b = AppendBool(f.b, *p)
	}
}

// String is a string field, written as a str; it reads a str or a bin.
func (f *Fields) String(key string, p *string) { f.string(key, p, false) }

// OmitString is a string field tagged omitempty: left out when empty.
func (f *Fields) OmitString(key string, p *string) { f.string(key, p, *p == "") }

func (f *Fields) string(key string, p *string, omit bool) {
	switch {
	case !f.field(key, omit):
	case f.mode == reading:
		*p = f.r.String()
	default:
		f.b = AppendString(f.b, *p)
	}
}

// Bytes is a []byte field, written as a bin, or nil if nil; it reads
// into a fresh slice, nil as nil.
func (f *Fields) Bytes(key string, p *[]byte) { f.bytes(key, p, false) }

// OmitBytes is a []byte field tagged omitempty: left out when empty.
func (f *Fields) OmitBytes(key string, p *[]byte) { f.bytes(key, p, len(*p) == 0) }

func (f *Fields) bytes(key string, p *[]byte, omit bool) {
	switch {
	case !f.field(key, omit):
	case f.mode == reading:
		*p = f.r.Bytes()
	default:
		f.b = AppendBytes(f.b, *p)
	}
}

// Array is a byte-array field (pass a[:]), written as a bin; reading
// takes a str or bin of exactly len(a) bytes.
func (f *Fields) Array(key string, a []byte) {
	switch {
	case !f.field(key, false):
	case f.mode == reading:
		f.r.Array(a)
	default:
		f.b = AppendBytes(f.b, a)
	}
}

// Uint8 is a uint8 field; it reads any integer that fits.
func (f *Fields) Uint8(key string, p *uint8) {
	if v, ok := f.uint(key, uint64(*p), 8); ok {
		*p = uint8(v)
	}
}

// Uint16 is a uint16 field; it reads any integer that fits.
func (f *Fields) Uint16(key string, p *uint16) {
	if v, ok := f.uint(key, uint64(*p), 16); ok {
		*p = uint16(v)
	}
}

// Uint32 is a uint32 field; it reads any integer that fits.
func (f *Fields) Uint32(key string, p *uint32) {
	if v, ok := f.uint(key, uint64(*p), 32); ok {
		*p = uint32(v)
	}
}

// Uint64 is a uint64 field; it reads any non-negative integer.
func (f *Fields) Uint64(key string, p *uint64) {
	if v, ok := f.uint(key, *p, 64); ok {
		*p = v
	}
}

// Int is an int field; it reads any integer that fits.
func (f *Fields) Int(key string, p *int) {
	if v, ok := f.int(key, int64(*p), strconv.IntSize); ok {
		*p = int(v)
	}
}

// Int64 is an int64 field; it reads any integer that fits.
func (f *Fields) Int64(key string, p *int64) {
	if v, ok := f.int(key, *p, 64); ok {
		*p = v
	}
}

// uint is an unsigned integer field of bits bits whose value is v:
// writing, it appends v in its smallest form; reading, it returns the
// value read, from any width that fits, and ok.
func (f *Fields) uint(key string, v uint64, bits int) (read uint64, ok bool) {
	switch {
	case !f.field(key, false):
		return 0, false
	case f.mode == reading:
		return f.r.Uint(bits), true
	}
	f.b = AppendUint(f.b, v)
	return 0, false
}

// int is uint for a signed integer field.
func (f *Fields) int(key string, v int64, bits int) (read int64, ok bool) {
	switch {
	case !f.field(key, false):
		return 0, false
	case f.mode == reading:
		return f.r.Int(bits), true
	}
	f.b = AppendInt(f.b, v)
	return 0, false
}

// Struct is a struct field m, by its own field list; reading merges into
// m's present value, as the reflective codec does.
func Struct[T any](f *Fields, key string, m *T, fields func(*T, Fields) Fields) {
	switch {
	case !f.field(key, false):
	case f.mode == reading:
		f.r = readStruct(f.r, m, fields)
	default:
		f.b = AppendStruct(f.b, m, fields)
	}
}

// List is a field holding a slice of structs, each by the field list
// fields: written as msgpack nil when the slice is nil (what the
// reflective codec writes), else as an array. Reading, the array's count
// is checked against the bytes left, at least minElem bytes an element,
// before the slice is allocated: a frame cannot make a decode allocate
// more than a few times its size.
func List[T any](f *Fields, key string, p *[]T, minElem int, fields func(*T, Fields) Fields) {
	list(f, key, p, minElem, fields, false)
}

// OmitList is List for a field tagged omitempty: left out when empty.
func OmitList[T any](f *Fields, key string, p *[]T, minElem int, fields func(*T, Fields) Fields) {
	list(f, key, p, minElem, fields, len(*p) == 0)
}

func list[T any](f *Fields, key string, p *[]T, minElem int, fields func(*T, Fields) Fields, omit bool) {
	switch {
	case !f.field(key, omit):
	case f.mode == reading:
		*p = readList(&f.r, minElem, fields)
	case *p == nil:
		f.b = AppendNil(f.b)
	default:
		f.b = AppendArrayHeader(f.b, len(*p))
		for i := range *p {
			f.b = AppendStruct(f.b, &(*p)[i], fields)
		}
	}
}

// readList reads what list writes.
func readList[T any](r *Reader, minElem int, fields func(*T, Fields) Fields) []T {
	if r.PeekNil() {
		return nil
	}
	l := make([]T, r.ArrayHeader(minElem))
	for i := range l {
		*r = readStruct(*r, &l[i], fields)
	}
	return l
}
