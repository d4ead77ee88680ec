package tracker_test

import (
	"bytes"
	"crypto/sha1"
	"errors"
	"strings"
	"testing"

	"fileshare/tracker"
)

// Canonical bencode decodes and re-encodes to the same bytes.
func TestBencodeRoundTrip(t *testing.T) {
	for _, in := range []string{
		"i0e", "i-7e", "i9223372036854775807e", "0:", "4:spam", "le", "de",
		"l4:spami42ee", "d3:bar4:spam3:fooi42ee", "d1:ad1:bl1:cee1:di1ee",
		"d4:\x00\xff\x01\x02li1ei2eee",
	} {
		v, err := tracker.DecodeBencode([]byte(in))
		if err != nil {
			t.Errorf("decode %q: %v", in, err)
			continue
		}
		out, err := tracker.EncodeBencode(nil, v)
		if err != nil || string(out) != in {
			t.Errorf("re-encode %q: got %q, %v", in, out, err)
		}
	}
}

// The decoder refuses everything that is not canonical, so an info-hash
// computed by re-encoding is the hash of the original bytes.
func TestBencodeStrict(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"", tracker.ErrBencodeSyntax},
		{"i01e", tracker.ErrBencodeSyntax},
		{"i-0e", tracker.ErrBencodeSyntax},
		{"ie", tracker.ErrBencodeSyntax},
		{"i1", tracker.ErrBencodeSyntax},
		{"i99999999999999999999e", tracker.ErrBencodeSyntax},
		{"01:a", tracker.ErrBencodeSyntax},
		{"-1:a", tracker.ErrBencodeSyntax},
		{"5:abc", tracker.ErrBencodeTooLarge},
		{"d1:bi1e1:ai2ee", tracker.ErrBencodeSyntax}, // unsorted
		{"d1:ai1e1:ai2ee", tracker.ErrBencodeSyntax}, // repeated
		{"di1ei2ee", tracker.ErrBencodeSyntax},       // integer key
		{"l", tracker.ErrBencodeSyntax},
		{"d1:a", tracker.ErrBencodeSyntax},
		{"i1ei2e", tracker.ErrBencodeSyntax}, // trailing
		{"x", tracker.ErrBencodeSyntax},
		{strings.Repeat("l", 40) + strings.Repeat("e", 40), tracker.ErrBencodeTooDeep},
	} {
		if _, err := tracker.DecodeBencode([]byte(tc.in)); !errors.Is(err, tc.want) {
			t.Errorf("decode %q: got %v, want %v", tc.in, err, tc.want)
		}
	}
}

// MakeTorrent writes a metainfo whose info-hash is the SHA-1 of its info
// dictionary, with every piece hashed and the tiers in order.
func TestMakeTorrent(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef"), 3000) // 48000 bytes: 2 full pieces and 1 short
	meta, ih, err := tracker.MakeTorrent(bytes.NewReader(content), tracker.TorrentSpec{
		Name:        "data.bin",
		PieceLength: 16 << 10,
		Announce:    [][]string{{"http://127.0.0.1:1/announce", "udp://127.0.0.1:1"}, {"http://127.0.0.2:1/announce"}},
		Private:     true,
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := tracker.TorrentInfoHash(meta)
	if err != nil || got != ih {
		t.Fatalf("TorrentInfoHash: got %x, %v; MakeTorrent said %x", got, err, ih)
	}
	v, err := tracker.DecodeBencode(meta)
	if err != nil {
		t.Fatal(err)
	}
	top := v.(map[string]any)
	if top["announce"] != "http://127.0.0.1:1/announce" {
		t.Errorf("announce: got %v", top["announce"])
	}
	tiers := top["announce-list"].([]any)
	if len(tiers) != 2 || len(tiers[0].([]any)) != 2 || tiers[1].([]any)[0] != "http://127.0.0.2:1/announce" {
		t.Errorf("announce-list: got %v", tiers)
	}
	info := top["info"].(map[string]any)
	if info["length"] != int64(len(content)) || info["name"] != "data.bin" || info["piece length"] != int64(16<<10) || info["private"] != int64(1) {
		t.Errorf("info: got %v", info)
	}
	pieces := info["pieces"].(string)
	var want []byte
	for off := 0; off < len(content); off += 16 << 10 {
		s := sha1.Sum(content[off:min(off+16<<10, len(content))])
		want = append(want, s[:]...)
	}
	if pieces != string(want) {
		t.Errorf("pieces: got %d bytes, want the %d bytes of 3 piece hashes", len(pieces), len(want))
	}
	enc, _ := tracker.EncodeBencode(nil, info)
	if sha1.Sum(enc) != ih {
		t.Error("info-hash is not the SHA-1 of the info dictionary")
	}
}

func TestMakeTorrentRefusesBadSpec(t *testing.T) {
	for _, spec := range []tracker.TorrentSpec{
		{Name: ""},
		{Name: "a/b"},
		{Name: "x", PieceLength: 1000},
		{Name: "x", PieceLength: 8 << 10},
		{Name: "x", Announce: [][]string{{}}},
	} {
		if _, _, err := tracker.MakeTorrent(strings.NewReader("x"), spec); !errors.Is(err, tracker.ErrBadTorrentSpec) {
			t.Errorf("spec %+v: got %v, want ErrBadTorrentSpec", spec, err)
		}
	}
}

// Whatever the input, the decoder does not panic, and what it accepts
// re-encodes to exactly the input.
func FuzzDecodeBencode(f *testing.F) {
	for _, s := range []string{"i42e", "4:spam", "l4:spami42ee", "d3:bar4:spam3:fooi42ee", "d1:ad1:bl1:cee1:di1ee", "i-0e", "d1:bi1e1:ai2ee"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := tracker.DecodeBencode(data)
		if err != nil {
			return
		}
		out, err := tracker.EncodeBencode(nil, v)
		if err != nil {
			t.Fatalf("re-encode of decoded %q: %v", data, err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("round trip: %q became %q", data, out)
		}
	})
}
