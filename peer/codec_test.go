package peer

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"reflect"
	"testing"
)

func TestPieceRequestRoundTrip(t *testing.T) {
	for _, r := range []pieceRequest{
		{Op: opHashes, File: sha256.Sum256([]byte("x"))},
		{Op: opPiece, File: sha256.Sum256([]byte("y")), Index: 4095},
		{Op: opPiece, Index: 1<<32 - 1},
	} {
		b := r.appendTo(nil)
		if len(b) != requestLen {
			t.Fatalf("encoded request is %d bytes, want %d", len(b), requestLen)
		}
		got, err := decodeRequest(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", r, err)
		}
		if got != r {
			t.Fatalf("round trip: got %+v, want %+v", got, r)
		}
	}
}

func TestDecodeRequestRejectsMalformed(t *testing.T) {
	good := pieceRequest{Op: opPiece, Index: 3}.appendTo(nil)
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for name, b := range map[string][]byte{
		"short":             good[:10],
		"long":              append(bytes.Clone(good), 0),
		"wrong version":     mut(func(b []byte) []byte { b[0] = 9; return b }),
		"unknown op":        mut(func(b []byte) []byte { b[1] = 7; return b }),
		"hashes with index": pieceRequest{Op: opHashes, Index: 1}.appendTo(nil),
	} {
		if _, err := decodeRequest(b); !errors.Is(err, errBadMessage) {
			t.Errorf("%s: err = %v, want errBadMessage", name, err)
		}
	}
}

func TestRespHeaderRoundTripAndLimits(t *testing.T) {
	for _, h := range []respHeader{{statusOK, 16 << 20}, {statusNotFound, 10}, {statusBusy, 0}} {
		b := h.encode()
		got, err := decodeRespHeader(b[:])
		if err != nil || got != h {
			t.Fatalf("round trip %+v: got %+v, %v", h, got, err)
		}
	}
	for name, h := range map[string]respHeader{
		"unknown status":        {Status: 99},
		"error message too big": {Status: statusError, Len: maxErrorMessage + 1},
	} {
		b := h.encode()
		if _, err := decodeRespHeader(b[:]); !errors.Is(err, errBadMessage) {
			t.Errorf("%s: err = %v, want errBadMessage", name, err)
		}
	}
	long := errorResponse(statusError, string(bytes.Repeat([]byte("é"), 2*maxErrorMessage)))
	h, err := decodeRespHeader(long[:respHeaderLen])
	if err != nil || int(h.Len) != len(long)-respHeaderLen || h.Len > maxErrorMessage {
		t.Fatalf("a long error message is not cut to the limit: header %+v, %d bytes, err %v", h, len(long), err)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(pieceRequest{Op: opPiece, Index: 7}.appendTo(nil))
	f.Add(pieceRequest{Op: opHashes}.appendTo(nil))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRequest(b)
		if err != nil {
			return
		}
		if again := r.appendTo(nil); !bytes.Equal(again, b) {
			t.Fatalf("decode/encode changed the request: %x -> %x", b, again)
		}
	})
}

func FuzzDecodeRespHeader(f *testing.F) {
	for _, h := range []respHeader{{statusOK, 1 << 18}, {statusNotFound, 12}} {
		b := h.encode()
		f.Add(b[:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeRespHeader(b)
		if err != nil {
			return
		}
		if h.Status != statusOK && h.Len > maxErrorMessage {
			t.Fatalf("accepted an error message of %d bytes", h.Len)
		}
		if enc := h.encode(); !bytes.Equal(enc[:], b) {
			t.Fatalf("decode/encode changed the header: %x -> %x", b, enc)
		}
	})
}

func TestResumeStateRoundTrip(t *testing.T) {
	id := sha256.Sum256([]byte("file"))
	for _, tc := range []struct {
		size, ps int64
		set      []int
	}{
		{0, 1 << 18, nil},
		{1 << 18, 1 << 18, []int{0}},
		{10<<18 + 5, 1 << 18, []int{0, 3, 10}},
		{64 << 20, 1 << 18, []int{0, 100, 255}},
	} {
		s := newResumeState(id, tc.size, tc.ps)
		for _, i := range tc.set {
			s.set(i)
		}
		got, err := decodeResumeState(s.encode())
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Fatalf("round trip: got %+v, want %+v", got, s)
		}
		if got.count() != len(tc.set) {
			t.Fatalf("count = %d, want %d", got.count(), len(tc.set))
		}
		for _, i := range tc.set {
			if !got.has(i) {
				t.Fatalf("piece %d lost in the round trip", i)
			}
		}
	}
}

func TestDecodeResumeStateRejectsDamage(t *testing.T) {
	s := newResumeState(sha256.Sum256([]byte("f")), 3<<18, 1<<18)
	s.set(1)
	good := s.encode()
	flip := bytes.Clone(good)
	flip[len(flip)-6] ^= 1
	pastEnd := newResumeState(s.ID, 3<<18, 1<<18)
	pastEnd.Bitmap[0] = 0xff // bits for pieces 3..7 of a 3-piece file
	badPS := newResumeState(s.ID, 3<<18, 1<<18)
	badPS.PieceSize = 1000
	for name, b := range map[string][]byte{
		"empty":               nil,
		"truncated":           good[:len(good)-1],
		"flipped bit":         flip,
		"bits past last":      pastEnd.encode(),
		"invalid piece size":  badPS.encode(),
		"wrong magic":         append([]byte("XXXX"), good[4:]...),
		"trailing byte added": append(bytes.Clone(good), 0),
	} {
		if _, err := decodeResumeState(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func FuzzDecodeResumeState(f *testing.F) {
	s := newResumeState(sha256.Sum256([]byte("f")), 10<<18, 1<<18)
	s.set(2)
	f.Add(s.encode())
	f.Add(newResumeState(s.ID, 0, 1<<14).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeResumeState(b)
		if err != nil {
			return
		}
		if st.Pieces != PieceCount(st.Size, st.PieceSize) || len(st.Bitmap) != (st.Pieces+7)/8 {
			t.Fatalf("accepted an inconsistent state: %+v", st)
		}
		if !bytes.Equal(st.encode(), b) {
			t.Fatal("decode/encode changed the state")
		}
	})
}

func TestHashCacheRoundTripAndValidation(t *testing.T) {
	entries := map[string]cacheEntry{
		"a.txt":     {Path: "a.txt", Size: 3, ModTime: 42, PieceSize: 1 << 18, Hashes: make([]byte, 32)},
		"dir/b.bin": {Path: "dir/b.bin", Size: 1<<18 + 1, ModTime: -1, PieceSize: 1 << 18, Hashes: bytes.Repeat([]byte{7}, 64)},
	}
	b, err := encodeHashCache(entries)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeHashCache(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, entries) {
		t.Fatalf("round trip: got %+v, want %+v", got, entries)
	}
	for name, e := range map[string]cacheEntry{
		"parent path":        {Path: "../x", Size: 0, PieceSize: 1 << 18, Hashes: make([]byte, 32)},
		"absolute path":      {Path: "/etc/passwd", Size: 0, PieceSize: 1 << 18, Hashes: make([]byte, 32)},
		"bad piece size":     {Path: "x", Size: 0, PieceSize: 1000, Hashes: make([]byte, 32)},
		"short hash list":    {Path: "x", Size: 1<<18 + 1, PieceSize: 1 << 18, Hashes: make([]byte, 32)},
		"negative size":      {Path: "x", Size: -1, PieceSize: 1 << 18, Hashes: make([]byte, 32)},
		"hash list too long": {Path: "x", Size: 1, PieceSize: 1 << 18, Hashes: make([]byte, 33)},
	} {
		b, err := encodeHashCache(map[string]cacheEntry{e.Path: e})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeHashCache(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	if _, err := decodeHashCache([]byte("not msgpack at all")); err == nil {
		t.Error("garbage decoded without error")
	}
}

func FuzzDecodeHashCache(f *testing.F) {
	b, _ := encodeHashCache(map[string]cacheEntry{"a": {Path: "a", Size: 5, PieceSize: 1 << 18, Hashes: make([]byte, 32)}})
	f.Add(b)
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeHashCache(b)
		if err != nil {
			return
		}
		again, err := encodeHashCache(m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		m2, err := decodeHashCache(again)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the cache: %v", err)
		}
	})
}

func FuzzDecodeKey(f *testing.F) {
	good, _ := encodeKey(testKey("fuzz"))
	f.Add(good)
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := decodeKey(b)
		if err != nil {
			return
		}
		if len(k) != ed25519.PrivateKeySize {
			t.Fatalf("accepted a key of %d bytes", len(k))
		}
	})
}
