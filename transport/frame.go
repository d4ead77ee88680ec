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

// Marshal encodes v with the wire's msgpack configuration.
func Marshal(v any) ([]byte, error) {
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
// slice, which is what makes frame caps effective.
func Unmarshal(b []byte, v any) (err error) {
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
// what was sent.
func readFrame(conn net.Conn, r *bufio.Reader, idle time.Duration) ([]byte, error) {
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
	return readGrowing(r, int(n))
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
// system calls.
type frameWriter struct {
	conn  net.Conn
	w     *bufio.Writer
	queue chan []byte
	done  chan struct{}
	once  sync.Once
	err   error // set before done is closed
}

func newFrameWriter(conn net.Conn) *frameWriter {
	fw := &frameWriter{
		conn:  conn,
		w:     bufio.NewWriterSize(conn, 64<<10),
		queue: make(chan []byte, 256),
		done:  make(chan struct{}),
	}
	go fw.run()
	return fw
}

// send queues one frame payload. It fails if the writer has stopped.
func (fw *frameWriter) send(payload []byte) error {
	if len(payload) > MaxFrameSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(payload), MaxFrameSize)
	}
	select {
	case fw.queue <- payload:
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
	var hdr [4]byte
	for {
		var p []byte
		select {
		case p = <-fw.queue:
		case <-fw.done:
			return
		}
		_ = fw.conn.SetWriteDeadline(time.Now().Add(DefaultIOTimeout))
		for {
			binary.BigEndian.PutUint32(hdr[:], uint32(len(p)))
			if _, err := fw.w.Write(hdr[:]); err != nil {
				fw.stop(fmt.Errorf("%w: %v", ErrConnection, err))
				return
			}
			if _, err := fw.w.Write(p); err != nil {
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
