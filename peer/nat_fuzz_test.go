package peer

import (
	"bytes"
	"testing"

	"fileshare/client"
)

// The reversal preface decoder accepts exactly version 1 and a full
// token, never panics, and round-trips what serveReversed writes.
func FuzzReversePreface(f *testing.F) {
	f.Add(append([]byte{reverseVersion}, bytes.Repeat([]byte{7}, client.RendezvousToken)...))
	f.Add([]byte{2, 1, 2})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := readReversePreface(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(b) < reversePrefaceLen || b[0] != reverseVersion || !bytes.Equal(tok[:], b[1:reversePrefaceLen]) {
			t.Fatalf("accepted %x as token %x", b, tok)
		}
	})
}
