package transport

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"fileshare/transport/wire"
)

// MaxFrameSize caps one RPC frame (a request or a response with its body).
// Large enough for a registration batch of 10,000 files; small enough that a
// hostile client cannot make a node allocate much.
const MaxFrameSize = 8 << 20

// DefaultIOTimeout bounds a single frame write, and a read once a frame has
// begun, so a stalled peer cannot hold a goroutine forever.
const DefaultIOTimeout = 10 * time.Second

// msgpackHandle is the one codec configuration used on the wire. It is
// configured once here and only read afterwards, which the codec allows
// from many goroutines.
var msgpackHandle = func() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.WriteExt = true    // str8 and bin types: []byte stays []byte
	h.RawToString = true // but str decodes to string
	return h
}()

// Encoders and decoders are costly to build (buffers, type caches), and
// every RPC needs several, so they are pooled. A pooled one holds no
// reference to a caller's data once reset to nil.
var (
	encoderPool = sync.Pool{New: func() any { return codec.NewEncoderBytes(new([]byte), msgpackHandle) }}
	decoderPool = sync.Pool{New: func() any { return codec.NewDecoderBytes(nil, msgpackHandle) }}
)

// Marshal encodes v with the wire's msgpack configuration. A v with a
// hand-written encoder (wire.Encoder) is encoded by it, to the same bytes.
func Marshal(v any) ([]byte, error) {
	if e, ok := v.(wire.Encoder); ok {
		return e.AppendWire(nil), nil
	}
	var b []byte
	enc := encoderPool.Get().(*codec.Encoder)
	enc.ResetBytes(&b)
	err := enc.Encode(v)
	enc.ResetBytes(new([]byte))
	encoderPool.Put(enc)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Unmarshal decodes b into v with the wire's msgpack configuration. Decoding
// from a byte slice never allocates more than len(b) for one string or
// slice, which is what makes frame caps effective. A v with a hand-written
// decoder (wire.Decoder) tries it first; input it does not take goes to
// the reflective decoder, so both accept and reject the same messages.
func Unmarshal(b []byte, v any) (err error) {
	if d, ok := v.(wire.Decoder); ok {
		if d.DecodeWire(b) == nil {
			return nil
		}
	}
	defer func() {
		// The codec is documented not to panic on bad input, but a
		// malformed message must never take a node down.
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: decoder panic: %v", ErrBadRequest, r)
		}
	}()
	dec := decoderPool.Get().(*codec.Decoder)
	dec.ResetBytes(b)
	err = dec.Decode(v)
	dec.ResetBytes(nil)
	decoderPool.Put(dec) // not reached after a panic: that decoder is dropped
	return err
}

// frameReader reads the frames of one connection through one buffer. It
// touches the connection's read deadline only before a read that may
// block, so a frame that arrived whole with the previous read costs no
// timer operation (and a client, which waits forever, none at all).
type frameReader struct {
	conn     net.Conn
	r        *bufio.Reader
	idle     time.Duration // wait for a frame's first byte; zero: forever
	deadline bool          // conn has a read deadline set
}

func newFrameReader(conn net.Conn, idle time.Duration) *frameReader {
	return &frameReader{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), idle: idle}
}

// setDeadline gives the next blocking read d (zero: no deadline).
func (fr *frameReader) setDeadline(d time.Duration) {
	switch {
	case d > 0:
		_ = fr.conn.SetReadDeadline(time.Now().Add(d))
		fr.deadline = true
	case fr.deadline:
		_ = fr.conn.SetReadDeadline(time.Time{})
		fr.deadline = false
	}
}

// next reads one length-prefixed frame. It waits up to idle for the first
// byte and then gives the rest of the frame DefaultIOTimeout. The buffer
// grows with the bytes that arrive, so a header announcing MaxFrameSize
// followed by silence costs no more than what was sent. A frame up to
// maxPooledBuf comes in a pooled buffer, which the caller returns with
// putBuf once nothing aliases it.
func (fr *frameReader) next() (*[]byte, error) {
	r := fr.r
	if r.Buffered() == 0 {
		fr.setDeadline(fr.idle)
		if _, err := r.Peek(1); err != nil {
			return nil, err
		}
	}
	if r.Buffered() < frameHeaderLen {
		fr.setDeadline(DefaultIOTimeout)
	}
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrameSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, MaxFrameSize)
	}
	if r.Buffered() < int(n) {
		fr.setDeadline(DefaultIOTimeout)
	}
	if n <= maxPooledBuf {
		p := getBuf()
		*p = slices.Grow((*p)[:0], int(n))[:n]
		if _, err := io.ReadFull(r, *p); err != nil {
			putBuf(p)
			return nil, err
		}
		return p, nil
	}
	b, err := readGrowing(r, int(n))
	if err != nil {
		return nil, err
	}
	return &b, nil
}

// frameChunk is the most readGrowing allocates ahead of arriving bytes.
const frameChunk = 64 << 10

// readGrowing reads exactly n bytes, allocating at most frameChunk more
// than has arrived.
func readGrowing(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, min(n, frameChunk))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(n-len(buf), max(len(buf), frameChunk)))
		}
		k, err := r.Read(buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+k]
		if err != nil && len(buf) < n {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}

// frameWriter serialises frames from many goroutines onto one connection
// without a goroutine of its own. A sender appends its frame to the
// pending bytes; if nobody is writing, it becomes the flusher and writes
// everything pending, again and again until nothing is, so frames that
// arrive during a write share the next system call (and, with TLS, record)
// and a lone frame costs no goroutine hand-off. Pending bytes are bounded
// by maxPendingBytes: past it a sender waits for the flusher, which is the
// back-pressure a client that stops reading meets. A write error (or the
// DefaultIOTimeout deadline) closes the connection, so that its reader
// fails every call in flight at once.
type frameWriter struct {
	conn     net.Conn
	timeout  time.Duration // a write that takes longer fails the connection
	done     func(n int)   // nil, or told of n bytes written or dropped
	dead     chan struct{} // closed once err is set
	mu       sync.Mutex
	drained  sync.Cond // signalled when a flush writes the pending bytes
	pending  []byte
	spare    []byte // the last written buffer, reused
	flushing bool
	err      error // once set, every send fails with it
}

// maxPendingBytes bounds the bytes queued behind a write in progress.
const maxPendingBytes = 1 << 20

func newFrameWriter(conn net.Conn) *frameWriter {
	fw := &frameWriter{conn: conn, timeout: DefaultIOTimeout, dead: make(chan struct{})}
	fw.drained.L = &fw.mu
	return fw
}

// frameHeaderLen is the length prefix of a frame. Frames are built in
// place: startFrame reserves the prefix, send fills it in.
const frameHeaderLen = 4

// startFrame returns a pooled buffer holding room for a frame header.
func startFrame() *[]byte {
	p := getBuf()
	*p = append((*p)[:0], 0, 0, 0, 0)
	return p
}

// send writes one frame built with startFrame, or queues it behind a write
// in progress, and returns the buffer to the pool. It may block for as
// long as a write takes (at most DefaultIOTimeout). It fails if the
// payload is over MaxFrameSize or the writer has stopped; a nil error
// means the frame was queued, not that it reached the other side.
func (fw *frameWriter) send(p *[]byte) error {
	n := len(*p) - frameHeaderLen
	if n > MaxFrameSize {
		putBuf(p)
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, MaxFrameSize)
	}
	binary.BigEndian.PutUint32(*p, uint32(n))
	fw.mu.Lock()
	for fw.err == nil && fw.flushing && len(fw.pending) >= maxPendingBytes {
		fw.drained.Wait()
	}
	if fw.err != nil {
		err := fw.err
		fw.mu.Unlock()
		putBuf(p)
		return err
	}
	fw.pending = append(fw.pending, *p...)
	putBuf(p)
	if fw.flushing {
		fw.mu.Unlock()
		return nil
	}
	fw.flushing = true
	for len(fw.pending) > 0 && fw.err == nil {
		out := fw.pending
		fw.pending = fw.spare[:0]
		fw.mu.Unlock()
		_ = fw.conn.SetWriteDeadline(time.Now().Add(fw.timeout))
		_, werr := fw.conn.Write(out)
		if fw.done != nil {
			fw.done(len(out))
		}
		fw.mu.Lock()
		if cap(out) <= maxPendingBytes {
			fw.spare = out[:0]
		} else {
			fw.spare = nil // one big frame: do not keep its buffer
		}
		if werr != nil && fw.err == nil {
			fw.err = fmt.Errorf("%w: %v", ErrConnection, werr)
			close(fw.dead)
			fw.conn.Close()
		}
		fw.drained.Broadcast()
	}
	fw.flushing = false
	dropped := 0
	if fw.err != nil {
		dropped = len(fw.pending)
		fw.pending = nil
	}
	fw.mu.Unlock()
	if dropped > 0 && fw.done != nil {
		fw.done(dropped)
	}
	return nil
}

// stop makes every later send fail with err (the first error sticks). It
// does not close the connection; its owner does.
func (fw *frameWriter) stop(err error) {
	fw.mu.Lock()
	if fw.err == nil {
		fw.err = err
		close(fw.dead)
	}
	dropped := 0
	if !fw.flushing {
		dropped = len(fw.pending) // else the flusher drops them
		fw.pending = nil
	}
	fw.drained.Broadcast()
	fw.mu.Unlock()
	if dropped > 0 && fw.done != nil {
		fw.done(dropped)
	}
}
