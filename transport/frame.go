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

// readFrame reads one length-prefixed frame. It waits up to idle (zero:
// forever) for the first byte and then gives the rest of the frame
// DefaultIOTimeout. The buffer grows with the bytes that arrive, so a
// header announcing MaxFrameSize followed by silence costs no more than
// what was sent. A frame up to maxPooledBuf comes in a pooled buffer, which
// the caller returns with putBuf once nothing aliases it.
func readFrame(conn net.Conn, r *bufio.Reader, idle time.Duration) (*[]byte, error) {
	if idle > 0 {
		_ = conn.SetReadDeadline(time.Now().Add(idle))
	}
	if _, err := r.Peek(1); err != nil {
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(DefaultIOTimeout))
	defer conn.SetReadDeadline(time.Time{})
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrameSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, MaxFrameSize)
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

// frameWriter serialises frames from many goroutines onto one connection and
// flushes only when no more frames are waiting, so concurrent calls share
// system calls (and, with TLS, records).
type frameWriter struct {
	conn  net.Conn
	w     *bufio.Writer
	queue chan *[]byte
	done  chan struct{}
	once  sync.Once
	err   error // set before done is closed
}

func newFrameWriter(conn net.Conn) *frameWriter {
	fw := &frameWriter{
		conn:  conn,
		w:     bufio.NewWriterSize(conn, 64<<10),
		queue: make(chan *[]byte, 256),
		done:  make(chan struct{}),
	}
	go fw.run()
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

// send queues one frame built with startFrame, and takes the buffer: the
// writer returns it to the pool once written. It fails if the payload is
// over MaxFrameSize or the writer has stopped.
func (fw *frameWriter) send(p *[]byte) error {
	n := len(*p) - frameHeaderLen
	if n > MaxFrameSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, MaxFrameSize)
	}
	binary.BigEndian.PutUint32(*p, uint32(n))
	select {
	case fw.queue <- p:
		return nil
	case <-fw.done:
		return fw.err
	}
}

func (fw *frameWriter) stop(err error) {
	fw.once.Do(func() {
		fw.err = err
		close(fw.done)
	})
}

func (fw *frameWriter) run() {
	for {
		var p *[]byte
		select {
		case p = <-fw.queue:
		case <-fw.done:
			return
		}
		_ = fw.conn.SetWriteDeadline(time.Now().Add(DefaultIOTimeout))
		for {
			_, err := fw.w.Write(*p)
			putBuf(p)
			if err != nil {
				fw.stop(fmt.Errorf("%w: %v", ErrConnection, err))
				return
			}
			select {
			case p = <-fw.queue:
				continue
			default:
			}
			break
		}
		if err := fw.w.Flush(); err != nil {
			fw.stop(fmt.Errorf("%w: %v", ErrConnection, err))
			return
		}
	}
}
