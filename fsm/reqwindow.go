package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// reqWindow remembers the request IDs of the newest DedupWindow admin
// commands of one kind (tracker policy, private tracker), so that a
// retried request is recognised and changes nothing. It is a ring:
// next counts the requests ever remembered, and request number seq
// (counting from 0) lives at reqs[seq%DedupWindow] while it is among the
// newest DedupWindow.
//
// Each remembered request is a record of the digest, tagged by the
// window's kind. A reqWindow is a value inside a copy-on-write struct:
// clone it when copying that struct.
type reqWindow struct {
	next uint64
	reqs []uint64
}

// seen reports whether req is remembered.
func (w *reqWindow) seen(req uint64) bool { return slices.Contains(w.reqs, req) }

// clone returns a window that shares nothing with w.
func (w *reqWindow) clone() reqWindow { return reqWindow{next: w.next, reqs: slices.Clone(w.reqs)} }

// remember adds req, forgetting the oldest when the window is full, and
// keeps f's digest in step (records tagged tag).
func (w *reqWindow) remember(f *FSM, tag byte, req uint64) {
	seq := w.next
	if uint64(len(w.reqs)) < DedupWindow {
		w.reqs = append(w.reqs, req)
	} else {
		i := seq % DedupWindow
		f.sub(f.h.req(tag, seq-DedupWindow, w.reqs[i]))
		w.reqs[i] = req
	}
	f.add(f.h.req(tag, seq, req))
	w.next++
}

// each calls fn with every remembered request and its number, oldest
// first.
func (w *reqWindow) each(fn func(seq, req uint64)) {
	n := uint64(len(w.reqs))
	for seq := w.next - n; seq < w.next; seq++ {
		fn(seq, w.reqs[seq%DedupWindow])
	}
}

// req is the digest record of request number seq of a window of kind
// tag.
func (h *hasher) req(tag byte, seq, req uint64) [32]byte {
	b := append(h.buf[:0], tag)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint64(b, req)
	h.buf = b
	return sha256.Sum256(b)
}

// The snapshot form of a window: next uvarint, n uvarint (= min(next,
// DedupWindow)), n × request ID uvarint, oldest first.

func (w *snapWriter) reqWindow(rw *reqWindow) {
	w.uvarint(rw.next)
	w.uvarint(uint64(len(rw.reqs)))
	rw.each(func(_, req uint64) { w.uvarint(req) })
}

// reqWindow reads a window of the requests of what (for errors),
// refusing a count that does not match next and a zero or repeated ID.
func (r *snapReader) reqWindow(what string) reqWindow {
	var w reqWindow
	w.next = r.uvarint()
	n := r.uvarint()
	if r.err == nil && n != min(w.next, DedupWindow) {
		r.corrupt("%s: %d remembered requests, want %d", what, n, min(w.next, DedupWindow))
	}
	if r.err != nil {
		return reqWindow{}
	}
	w.reqs = make([]uint64, n)
	for seq := w.next - n; seq < w.next && r.err == nil; seq++ {
		req := r.uvarint()
		if r.err == nil && (req == 0 || slices.Contains(w.reqs, req)) {
			r.corrupt("%s: request id %d zero or repeated", what, req)
		}
		w.reqs[seq%DedupWindow] = req
	}
	return w
}
