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
