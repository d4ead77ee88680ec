package wire

import (
	"bytes"
	"testing"
)

// An omitempty string field is written, and counted in its map's header,
// exactly when it is not empty.
func TestOmitEmptyStringField(t *testing.T) {
	for _, tc := range []struct {
		s     string
		want  []byte
		count int // of a map with one other field
	}{
		{"", nil, 1},
		{"x", []byte{0xa1, 'k', 0xa1, 'x'}, 2},
	} {
		if got := AppendNonEmpty(nil, "k", tc.s); !bytes.Equal(got, tc.want) {
			t.Errorf("AppendNonEmpty(%q) = % x, want % x", tc.s, got, tc.want)
		}
		if got := FieldCount(1, tc.s != ""); got != tc.count {
			t.Errorf("FieldCount(1, %q != \"\") = %d, want %d", tc.s, got, tc.count)
		}
	}
	if got := FieldCount(2, true, false, true); got != 4 {
		t.Errorf("FieldCount(2, true, false, true) = %d, want 4", got)
	}
}

// fieldsMsg is a struct codec by field list, for the tests of Fields.
type fieldsMsg struct {
	A    uint64
	B    string
	Skip bool
}

func (m *fieldsMsg) wireFields(f Fields) Fields {
	f.Uint64("A", &m.A)
	f.String("B", &m.B)
	f.OmitBool("Skip", &m.Skip)
	return f
}

// A field list writes its fields in its order, omits an omitempty field
// that is zero, and reads its keys in any order, repeated (the last one
// wins) or missing; a key that names no field fails the read and leaves
// the message zero.
func TestFieldsReadAnyOrderRefuseUnknown(t *testing.T) {
	m := fieldsMsg{A: 7, B: "x"}
	want := []byte{0x82, 0xa1, 'A', 7, 0xa1, 'B', 0xa1, 'x'}
	if got := AppendStruct(nil, &m, (*fieldsMsg).wireFields); !bytes.Equal(got, want) {
		t.Fatalf("AppendStruct = % x, want % x", got, want)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want fieldsMsg
		ok   bool
	}{
		{"in order", want, m, true},
		{"reversed", []byte{0x83, 0xa4, 'S', 'k', 'i', 'p', 0xc3, 0xa1, 'B', 0xa1, 'y', 0xa1, 'A', 9}, fieldsMsg{9, "y", true}, true},
		{"repeated", []byte{0x83, 0xa1, 'B', 0xa1, 'y', 0xa1, 'A', 1, 0xa1, 'B', 0xa1, 'z'}, fieldsMsg{1, "z", false}, true},
		{"missing", []byte{0x81, 0xa1, 'B', 0xa1, 'y'}, fieldsMsg{B: "y"}, true},
		{"unknown", []byte{0x82, 0xa1, 'A', 1, 0xa1, 'C', 2}, fieldsMsg{}, false},
		{"short", []byte{0x82, 0xa1, 'A', 1}, fieldsMsg{}, false},
		// Four runs over the list (B, A; B, A; ...): taken. Five: left to
		// the reflective decoder.
		{"four runs", []byte{0x84, 0xa1, 'B', 0xa1, 'y', 0xa1, 'A', 1, 0xa1, 'A', 2, 0xa1, 'A', 3}, fieldsMsg{3, "y", false}, true},
		{"five runs", []byte{0x85, 0xa1, 'B', 0xa1, 'y', 0xa1, 'A', 1, 0xa1, 'A', 2, 0xa1, 'A', 3, 0xa1, 'A', 4}, fieldsMsg{}, false},
	} {
		var got fieldsMsg
		err := DecodeStruct(tc.in, &got, (*fieldsMsg).wireFields)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v, ok %v", tc.name, got, err, tc.want, tc.ok)
		}
	}
}
