package master

import (
	"errors"
	"testing"

	"fileshare/fsm"
)

// Serials are accepted as tools print them and stored in one form.
func TestNormalizeSerial(t *testing.T) {
	for in, want := range map[string]string{
		"0A:1B:2C":   "a1b2c",
		"0x00ff":     "ff",
		" DEADbeef ": "deadbeef",
		"0":          "0",
		"5C:3B:6E:A4:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF": "5c3b6ea400112233445566778899aabbccddeeff",
	} {
		got, err := NormalizeSerial(in)
		if err != nil || got != want {
			t.Errorf("NormalizeSerial(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "xyz", "-1", "12:zz", "1" + string(make([]byte, 50))} {
		if _, err := NormalizeSerial(bad); !errors.Is(err, fsm.ErrInvalid) {
			t.Errorf("NormalizeSerial(%q): got %v, want ErrInvalid", bad, err)
		}
	}
	long := "1234567890123456789012345678901234567890ab" // 21 bytes
	if _, err := NormalizeSerial(long); !errors.Is(err, fsm.ErrInvalid) {
		t.Errorf("a 21-byte serial: got %v, want ErrInvalid", err)
	}
}
