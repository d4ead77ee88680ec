package transport

import (
	"sync"

	"fileshare/transport/wire"
)

// The RPC envelope's hand-written codec. Its bytes are exactly those the
// reflective codec writes for request and response (see package wire), so
// masters with and without it interoperate; a frame the fast decoder does
// not take goes to the reflective one, which decides.

// appendRequest appends the encoding of request{id, method, timeout, body}.
// Fields in name order: Body, ID, Method, Timeout.
func appendRequest(b []byte, id uint64, method string, timeout int64, body []byte) []byte {
	b = wire.AppendMapHeader(b, 4)
	b = wire.AppendString(b, "Body")
	b = wire.AppendBytes(b, body)
	b = wire.AppendString(b, "ID")
	b = wire.AppendUint(b, id)
	b = wire.AppendString(b, "Method")
	b = wire.AppendString(b, method)
	b = wire.AppendString(b, "Timeout")
	return wire.AppendInt(b, timeout)
}

// appendResponse appends the encoding of response{id, werr, body}, whose
// Err and Body are omitted when empty. Fields: Body, Err, ID.
func appendResponse(b []byte, id uint64, werr *wireError, body []byte) []byte {
	b = wire.AppendMapHeader(b, wire.FieldCount(1, werr != nil, len(body) > 0))
	if len(body) > 0 {
		b = wire.AppendString(b, "Body")
		b = wire.AppendBytes(b, body)
	}
	if werr != nil {
		b = wire.AppendString(b, "Err")
		b = werr.appendWire(b)
	}
	b = wire.AppendString(b, "ID")
	return wire.AppendUint(b, id)
}

// appendWire encodes a wireError: Code, LeaderAddr and LeaderID (omitted
// when empty), Message.
func (w *wireError) appendWire(b []byte) []byte {
	b = wire.AppendMapHeader(b, wire.FieldCount(2, w.LeaderAddr != "", w.LeaderID != ""))
	b = wire.AppendString(b, "Code")
	b = wire.AppendString(b, w.Code)
	b = wire.AppendNonEmpty(b, "LeaderAddr", w.LeaderAddr)
	b = wire.AppendNonEmpty(b, "LeaderID", w.LeaderID)
	b = wire.AppendString(b, "Message")
	return wire.AppendString(b, w.Message)
}

// requestView is a decoded request whose Method and Body alias the frame.
type requestView struct {
	ID      uint64
	Method  []byte
	Timeout int64
	Body    []byte
}

// decodeRequest decodes a request frame. Method and Body alias frame.
func decodeRequest(frame []byte) (requestView, error) {
	var v requestView
	r := wire.NewReader(frame)
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		switch string(r.RawString()) {
		case "Body":
			v.Body = readBody(&r)
		case "ID":
			v.ID = r.Uint(64)
		case "Method":
			v.Method = r.RawString()
		case "Timeout":
			v.Timeout = r.Int(64)
		default:
			r.Fail()
		}
	}
	return orReflective(v, &r, frame, func(req *request) requestView {
		return requestView{ID: req.ID, Method: []byte(req.Method), Timeout: req.Timeout, Body: req.Body}
	})
}

// responseView is a decoded response whose Body aliases the frame.
type responseView struct {
	ID   uint64
	Err  *wireError
	Body []byte
}

// decodeResponse decodes a response frame. Body aliases frame.
func decodeResponse(frame []byte) (responseView, error) {
	var v responseView
	r := wire.NewReader(frame)
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		switch string(r.RawString()) {
		case "Body":
			v.Body = readBody(&r)
		case "Err":
			if !r.PeekNil() {
				v.Err = decodeWireError(&r)
			}
		case "ID":
			v.ID = r.Uint(64)
		default:
			r.Fail()
		}
	}
	return orReflective(v, &r, frame, func(resp *response) responseView { return responseView(*resp) })
}

// readBody reads an envelope's Body: the bin's bytes, aliasing the frame,
// or nil for msgpack nil.
func readBody(r *wire.Reader) []byte {
	if r.PeekNil() {
		return nil
	}
	return r.RawString()
}

// orReflective owns the envelope's fallback: v, which r read from frame,
// stands if r met nothing outside the fast path; otherwise the reflective
// codec, which decides what is acceptable, decodes frame into a T and
// view turns that into the result.
func orReflective[V, T any](v V, r *wire.Reader, frame []byte, view func(*T) V) (V, error) {
	if r.Err() == nil {
		return v, nil
	}
	var t T
	if err := Unmarshal(frame, &t); err != nil {
		var zero V
		return zero, err
	}
	return view(&t), nil
}

func decodeWireError(r *wire.Reader) *wireError {
	w := new(wireError)
	for n := r.MapHeader(); n > 0 && r.Err() == nil; n-- {
		switch string(r.RawString()) {
		case "Code":
			w.Code = r.String()
		case "LeaderAddr":
			w.LeaderAddr = r.String()
		case "LeaderID":
			w.LeaderID = r.String()
		case "Message":
			w.Message = r.String()
		default:
			r.Fail()
		}
	}
	return w
}

// Buffers for frames and message bodies are pooled: a request costs no
// allocation for its bytes in steady state. A buffer grown past
// maxPooledBuf (by a large registration or search reply) is left to the
// garbage collector so the pool never pins much memory.
const maxPooledBuf = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(p *[]byte) {
	if p == nil || cap(*p) > maxPooledBuf {
		return
	}
	*p = (*p)[:0]
	bufPool.Put(p)
}

// appendMessage appends v's encoding to b: by its hand-written encoder if
// it has one, else by the reflective codec.
func appendMessage(b []byte, v any) ([]byte, error) {
	if e, ok := v.(wire.Encoder); ok {
		return e.AppendWire(b), nil
	}
	m, err := Marshal(v)
	if err != nil {
		return b, err
	}
	return append(b, m...), nil
}

// nilReply encodes as msgpack nil: what a handler's nil reply has always
// been on the wire.
type nilReply struct{}

func (nilReply) AppendWire(b []byte) []byte { return wire.AppendNil(b) }
