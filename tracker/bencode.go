package tracker

import (
	"bytes"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// Bencode (BEP 3) in two halves.
//
// Encoding is append-style and reflection-free: AppendBencodeInt,
// AppendBencodeString and friends append one value to a byte slice, so a
// reply is built in one pooled buffer without allocating. A dictionary is
// written by the caller as 'd', its keys in ascending byte order each
// followed by its value, then 'e'; the caller is responsible for the order.
// EncodeBencode encodes a decoded Value tree (sorting dictionary keys).
//
// Decoding is strict: DecodeBencode accepts only canonical bencode, so
// that decoding and re-encoding gives back the same bytes — which is what
// makes an info-hash computed from a decoded info dictionary correct.

// Limits of DecodeBencode.
const (
	// MaxBencodeDepth is the deepest nesting of lists and dictionaries
	// DecodeBencode accepts; real metainfo needs about 5.
	MaxBencodeDepth = 32
	// MaxBencodeSize is the largest input DecodeBencode accepts, in bytes.
	MaxBencodeSize = 16 << 20
)

// Errors DecodeBencode returns, wrapped with the offset where the input
// went wrong.
var (
	// ErrBencodeSyntax means the input is not canonical bencode: a bad
	// byte, a leading zero, "-0", unsorted or repeated dictionary keys, a
	// truncated value, or trailing bytes.
	ErrBencodeSyntax = errors.New("bencode: malformed input")
	// ErrBencodeTooDeep means lists and dictionaries nest deeper than
	// MaxBencodeDepth.
	ErrBencodeTooDeep = errors.New("bencode: nested too deeply")
	// ErrBencodeTooLarge means the input is longer than MaxBencodeSize or a
	// string claims more bytes than the input holds.
	ErrBencodeTooLarge = errors.New("bencode: too large")
)

// AppendBencodeInt appends i as a bencode integer.
func AppendBencodeInt(b []byte, i int64) []byte {
	b = append(b, 'i')
	b = strconv.AppendInt(b, i, 10)
	return append(b, 'e')
}

// AppendBencodeString appends s as a bencode byte string.
func AppendBencodeString(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	return append(b, s...)
}

// AppendBencodeBytes appends p as a bencode byte string.
func AppendBencodeBytes(b []byte, p []byte) []byte {
	b = strconv.AppendInt(b, int64(len(p)), 10)
	b = append(b, ':')
	return append(b, p...)
}

// AppendBencodeFailure appends the whole reply a tracker sends to refuse a
// request: d14:failure reason<len>:<reason>e.
func AppendBencodeFailure(b []byte, reason string) []byte {
	b = append(b, "d14:failure reason"...)
	b = AppendBencodeString(b, reason)
	return append(b, 'e')
}

// EncodeBencode appends the encoding of v, a tree of the types
// DecodeBencode returns (int64, string, []any, map[string]any; int and
// []byte are accepted too). Dictionary keys are written in ascending byte
// order. Any other type is an error.
func EncodeBencode(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case int64:
		return AppendBencodeInt(b, v), nil
	case int:
		return AppendBencodeInt(b, int64(v)), nil
	case string:
		return AppendBencodeString(b, v), nil
	case []byte:
		return AppendBencodeBytes(b, v), nil
	case []any:
		b = append(b, 'l')
		for _, e := range v {
			var err error
			if b, err = EncodeBencode(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, 'e'), nil
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, 'd')
		for _, k := range keys {
			b = AppendBencodeString(b, k)
			var err error
			if b, err = EncodeBencode(b, v[k]); err != nil {
				return nil, err
			}
		}
		return append(b, 'e'), nil
	default:
		return nil, fmt.Errorf("bencode: cannot encode a %T", v)
	}
}

// DecodeBencode decodes exactly one canonical bencode value filling all of
// data, as a tree of:
//
//		int64           an integer
//		string          a byte string (any bytes, not necessarily UTF-8)
//		[]any           a list
//		map[string]any  a dictionary
//
//	 Errors wrap ErrBencodeSyntax, ErrBencodeTooDeep or
//
// ErrBencodeTooLarge. It never panics, whatever data holds.
func DecodeBencode(data []byte) (any, error) {
	if len(data) > MaxBencodeSize {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrBencodeTooLarge, len(data), MaxBencodeSize)
	}
	d := bdecoder{data: data}
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if d.pos != len(data) {
		return nil, d.fail(ErrBencodeSyntax, "trailing bytes after the value")
	}
	return v, nil
}

type bdecoder struct {
	data []byte
	pos  int
}

func (d *bdecoder) fail(kind error, what string) error {
	return fmt.Errorf("%w at byte %d: %s", kind, d.pos, what)
}

func (d *bdecoder) value(depth int) (any, error) {
	if d.pos >= len(d.data) {
		return nil, d.fail(ErrBencodeSyntax, "unexpected end of input")
	}
	switch c := d.data[d.pos]; {
	case c == 'i':
		d.pos++
		n, err := d.integer('e')
		return n, err
	case c >= '0' && c <= '9':
		s, err := d.str()
		return string(s), err
	case c == 'l':
		if depth >= MaxBencodeDepth {
			return nil, d.fail(ErrBencodeTooDeep, "list")
		}
		d.pos++
		list := []any{}
		for {
			if d.pos >= len(d.data) {
				return nil, d.fail(ErrBencodeSyntax, "unterminated list")
			}
			if d.data[d.pos] == 'e' {
				d.pos++
				return list, nil
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
	case c == 'd':
		if depth >= MaxBencodeDepth {
			return nil, d.fail(ErrBencodeTooDeep, "dictionary")
		}
		d.pos++
		dict := map[string]any{}
		var prev []byte
		first := true
		for {
			if d.pos >= len(d.data) {
				return nil, d.fail(ErrBencodeSyntax, "unterminated dictionary")
			}
			if d.data[d.pos] == 'e' {
				d.pos++
				return dict, nil
			}
			if c := d.data[d.pos]; c < '0' || c > '9' {
				return nil, d.fail(ErrBencodeSyntax, "dictionary key is not a string")
			}
			k, err := d.str()
			if err != nil {
				return nil, err
			}
			if !first && bytes.Compare(prev, k) >= 0 {
				return nil, d.fail(ErrBencodeSyntax, "dictionary keys not in strictly ascending order")
			}
			first, prev = false, k
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			dict[string(k)] = v
		}
	default:
		return nil, d.fail(ErrBencodeSyntax, fmt.Sprintf("unexpected byte %q", c))
	}
}

// integer reads a canonical decimal up to the terminator: no leading
// zeros, no "-0", no empty digits, within int64.
func (d *bdecoder) integer(term byte) (int64, error) {
	start := d.pos
	end := bytes.IndexByte(d.data[start:], term)
	if end < 0 {
		return 0, d.fail(ErrBencodeSyntax, "unterminated integer")
	}
	digits := d.data[start : start+end]
	neg := len(digits) > 0 && digits[0] == '-'
	body := digits
	if neg {
		body = digits[1:]
	}
	if len(body) == 0 {
		return 0, d.fail(ErrBencodeSyntax, "integer without digits")
	}
	for _, c := range body {
		if c < '0' || c > '9' {
			return 0, d.fail(ErrBencodeSyntax, "non-digit in integer")
		}
	}
	if body[0] == '0' && (len(body) > 1 || neg) {
		return 0, d.fail(ErrBencodeSyntax, "integer with a leading zero or -0")
	}
	n, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil {
		return 0, d.fail(ErrBencodeSyntax, "integer out of range")
	}
	d.pos = start + end + 1
	return n, nil
}

// str reads a length-prefixed byte string; the result aliases d.data.
func (d *bdecoder) str() ([]byte, error) {
	if d.data[d.pos] == '-' {
		return nil, d.fail(ErrBencodeSyntax, "negative string length")
	}
	n, err := d.integer(':')
	if err != nil {
		return nil, err
	}
	if n > int64(len(d.data)-d.pos) {
		return nil, d.fail(ErrBencodeTooLarge, fmt.Sprintf("string of %d bytes runs past the end", n))
	}
	s := d.data[d.pos : d.pos+int(n)]
	d.pos += int(n)
	return s, nil
}

// TorrentSpec describes a single-file v1 torrent for MakeTorrent.
type TorrentSpec struct {
	// Name is the file's name, the info dictionary's "name". It must not be
	// empty and must not contain '/'.
	Name string
	// PieceLength is the piece size in bytes: a power of two of at least
	// 16 KiB. Zero means 256 KiB.
	PieceLength int
	// Announce lists tracker URLs in tiers (BEP 12): each inner slice is
	// one tier, tried in order; a client shuffles the URLs within a tier.
	// The first URL of the first tier is also written as "announce" for
	// clients without BEP 12. It may be nil (a trackerless torrent).
	Announce [][]string
	// Private sets the info dictionary's "private" flag (BEP 27), which
	// tells clients not to use DHT or PEX for this torrent.
	Private bool
}

// ErrBadTorrentSpec is returned by MakeTorrent for a spec it cannot build.
var ErrBadTorrentSpec = errors.New("tracker: bad torrent spec")

// MakeTorrent reads all of content and returns a v1 single-file .torrent
// (BEP 3 metainfo) for it, and its info-hash: the SHA-1 of the bencoded
// info dictionary, which is what clients put in info_hash when they
// announce it.
//
// The info dictionary holds length, name, piece length, pieces and, if
// spec.Private, private=1. The output is deterministic for a given content
// and spec (no creation date, no created-by), so tests can compare
// info-hashes across runs. A bad spec returns an error wrapping
// ErrBadTorrentSpec; a read error from content is returned wrapped.
//
// Example, for a test that gives a real client a torrent for a file:
//
//	f, _ := os.Open(path)
//	meta, ih, err := tracker.MakeTorrent(f, tracker.TorrentSpec{
//		Name:     "data.bin",
//		Announce: [][]string{{"http://127.0.0.1:7070/announce", "udp://127.0.0.1:7070"}},
//	})
//	// write meta to data.bin.torrent; ih is the swarm's InfoHash
func MakeTorrent(content io.Reader, spec TorrentSpec) ([]byte, InfoHash, error) {
	if spec.Name == "" || bytes.ContainsRune([]byte(spec.Name), '/') || spec.Name == "." || spec.Name == ".." {
		return nil, InfoHash{}, fmt.Errorf("%w: name %q must be a plain non-empty file name", ErrBadTorrentSpec, spec.Name)
	}
	pl := spec.PieceLength
	if pl == 0 {
		pl = 256 << 10
	}
	if pl < 16<<10 || pl&(pl-1) != 0 {
		return nil, InfoHash{}, fmt.Errorf("%w: piece length %d is not a power of two of at least 16384", ErrBadTorrentSpec, pl)
	}
	for i, tier := range spec.Announce {
		if len(tier) == 0 {
			return nil, InfoHash{}, fmt.Errorf("%w: announce tier %d is empty", ErrBadTorrentSpec, i)
		}
	}
	var pieces []byte
	var length int64
	buf := make([]byte, pl)
	for {
		n, err := io.ReadFull(content, buf)
		if n > 0 {
			sum := sha1.Sum(buf[:n])
			pieces = append(pieces, sum[:]...)
			length += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return nil, InfoHash{}, fmt.Errorf("read torrent content: %w", err)
		}
	}
	// Keys in ascending order: length, name, piece length, pieces, private.
	info := []byte{'d'}
	info = AppendBencodeString(info, "length")
	info = AppendBencodeInt(info, length)
	info = AppendBencodeString(info, "name")
	info = AppendBencodeString(info, spec.Name)
	info = AppendBencodeString(info, "piece length")
	info = AppendBencodeInt(info, int64(pl))
	info = AppendBencodeString(info, "pieces")
	info = AppendBencodeBytes(info, pieces)
	if spec.Private {
		info = AppendBencodeString(info, "private")
		info = AppendBencodeInt(info, 1)
	}
	info = append(info, 'e')
	ih := InfoHash(sha1.Sum(info))

	// Keys in ascending order: announce, announce-list, info.
	out := []byte{'d'}
	if len(spec.Announce) > 0 {
		out = AppendBencodeString(out, "announce")
		out = AppendBencodeString(out, spec.Announce[0][0])
		out = AppendBencodeString(out, "announce-list")
		out = append(out, 'l')
		for _, tier := range spec.Announce {
			out = append(out, 'l')
			for _, u := range tier {
				out = AppendBencodeString(out, u)
			}
			out = append(out, 'e')
		}
		out = append(out, 'e')
	}
	out = AppendBencodeString(out, "info")
	out = append(out, info...)
	out = append(out, 'e')
	return out, ih, nil
}

// TorrentInfoHash returns the v1 info-hash of a .torrent file: the SHA-1
// of its bencoded info dictionary. The file must be canonical bencode (as
// every real torrent maker writes); otherwise the error wraps
// ErrBencodeSyntax (or another DecodeBencode error).
func TorrentInfoHash(torrent []byte) (InfoHash, error) {
	v, err := DecodeBencode(torrent)
	if err != nil {
		return InfoHash{}, err
	}
	top, ok := v.(map[string]any)
	if !ok {
		return InfoHash{}, fmt.Errorf("%w: a torrent is a dictionary", ErrBencodeSyntax)
	}
	info, ok := top["info"].(map[string]any)
	if !ok {
		return InfoHash{}, fmt.Errorf("%w: the torrent has no info dictionary", ErrBencodeSyntax)
	}
	// Canonical input re-encodes to the same bytes.
	enc, err := EncodeBencode(nil, info)
	if err != nil {
		return InfoHash{}, err
	}
	return InfoHash(sha1.Sum(enc)), nil
}
