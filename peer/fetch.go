package peer

// This file owns the conversation with one holder: the piece-hash request
// and the worker that pipelines piece requests over one connection. A
// worker goroutine is started and awaited by the coordinator (run); its
// inflight list, dups count and connection are its own. It shares state
// only through the piece table, the rate limiter and its verifier, each of
// which guards its own, and reads the download's fixed fields.

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"fileshare/client"
	"fileshare/transport"
)

// errBadData marks a holder that sent data failing verification or
// breaking the protocol: it is dropped for this file.
var errBadData = errors.New("holder sent bad data")

// dialPieces dials a TLS piece stream to the holder peerID at addr, from
// the peer's own IP if it listens on one. The handshake fails unless the
// holder proves the key peerID is derived from, so an address taken over
// by someone else, or a holder that lies about who it is, is never read.
func (p *Peer) dialPieces(addr, peerID string, timeout time.Duration) (net.Conn, error) {
	cfg := p.tls.PeerClientConfig(func(k ed25519.PublicKey) error {
		if got := client.PeerIDOf(k); got != peerID {
			return fmt.Errorf("%w: %s presented the key of peer %s, not %s", transport.ErrWrongPeer, addr, got, peerID)
		}
		return nil
	})
	if p.mux != nil {
		return p.mux.DialStreamTLS(addr, transport.StreamPiece, timeout, cfg)
	}
	return transport.DialStreamTLS(addr, transport.StreamPiece, timeout, cfg)
}

// dial opens a piece stream to holder id at addr and returns it with a
// buffered reader and a function that sets its deadline.
func (d *download) dial(id, addr string) (io.ReadWriteCloser, *bufio.Reader, func(time.Time), error) {
	conn, err := d.dialStream(addr, id, min(d.p.cfg.IOTimeout, 5*time.Second))
	if err != nil {
		return nil, nil, nil, err
	}
	return conn, bufio.NewReaderSize(conn, 64<<10), func(t time.Time) { _ = conn.SetDeadline(t) }, nil
}

// requestHashes asks one holder for the piece-hash list and checks it. A
// list of the wrong length or that does not hash to the file ID is
// errBadData.
func (d *download) requestHashes(id, addr string) ([][32]byte, error) {
	conn, br, deadline, err := d.dial(id, addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	deadline(time.Now().Add(d.p.cfg.IOTimeout))
	if _, err := conn.Write(pieceRequest{Op: opHashes, File: d.root}.appendTo(nil)); err != nil {
		return nil, err
	}
	h, err := readHeader(br)
	if err != nil {
		return nil, err
	}
	if h.Status != statusOK {
		return nil, readRemoteError(br, h)
	}
	if int64(h.Len) != 32*int64(d.n) {
		return nil, fmt.Errorf("%w: piece-hash list of %d bytes, want %d for %d pieces", errBadData, h.Len, 32*d.n, d.n)
	}
	raw := make([]byte, h.Len)
	if _, err := io.ReadFull(br, raw); err != nil {
		return nil, err
	}
	hs := leaves(raw)
	if FileIDOf(d.size, d.pieceSize, hs) != d.id {
		return nil, fmt.Errorf("%w: the piece-hash list does not hash to the file ID", errBadData)
	}
	return hs, nil
}

// readHeader reads one response header; a malformed one is errBadData.
func readHeader(br *bufio.Reader) (respHeader, error) {
	var b [respHeaderLen]byte
	if _, err := io.ReadFull(br, b[:]); err != nil {
		return respHeader{}, err
	}
	h, err := decodeRespHeader(b[:])
	if err != nil {
		return h, fmt.Errorf("%w: %w", errBadData, err)
	}
	return h, nil
}

// readRemoteError reads the message of an error response h.
func readRemoteError(br *bufio.Reader, h respHeader) error {
	msg := make([]byte, h.Len)
	if _, err := io.ReadFull(br, msg); err != nil {
		return err
	}
	return &remoteError{Status: h.Status, Msg: string(msg)}
}

// worker pipelines piece requests to one holder over one connection until
// every piece is verified, ctx ends, or the holder fails. It only reads:
// each piece, once received, goes to the worker's verifier, which hashes
// and writes it while the worker reads the next. It returns how many
// pieces were verified; its unanswered requests, and received pieces that
// were not stored, go back to the others. A piece that fails verification
// makes it return an errBadData error, whatever its own read saw. A holder
// that stops answering fails its read at the IOTimeout deadline, which
// re-issues its pieces the same way.
func (d *download) worker(ctx context.Context, id, addr string) (got int, err error) {
	conn, br, deadline, err := d.dial(id, addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	// Closing (not a deadline, which the loop would reset) unblocks any
	// read or write at once when the download ends.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	v := d.startVerifier(id, conn)
	var inflight []flight
	defer func() {
		d.pieces.release(inflight)
		got, err = v.wait(err)
	}()
	dups := 0
	var reqs []byte
	for {
		reqs = reqs[:0]
		var changed <-chan struct{}
		for len(inflight) < d.window {
			// Under a rate limit, ask for more only when the limit
			// allows, and meanwhile read what is on its way: the
			// holder must never wait on us with a response half sent.
			if d.limiter != nil && len(inflight) > 0 && !d.limiter.ready() {
				break
			}
			i, dup, ch, ok := d.pieces.next(inflight, dups)
			if !ok {
				changed = ch
				break
			}
			inflight = append(inflight, flight{i, dup})
			if dup {
				dups++
			}
			if d.limiter != nil {
				if err := d.limiter.wait(ctx, d.pieceLen(i)); err != nil {
					return 0, err
				}
			}
			reqs = pieceRequest{Op: opPiece, File: d.root, Index: uint32(i)}.appendTo(reqs)
		}
		if len(reqs) > 0 {
			deadline(time.Now().Add(d.p.cfg.IOTimeout))
			if _, err := conn.Write(reqs); err != nil {
				return 0, err
			}
		}
		if len(inflight) == 0 {
			select {
			case <-d.pieces.completed():
				return 0, nil
			case <-changed:
				continue
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-v.failed:
				return 0, nil // wait reports why
			}
		}
		fl := inflight[0]
		buf, err := v.buffer(ctx)
		if err != nil {
			return 0, err
		}
		deadline(time.Now().Add(d.p.cfg.IOTimeout))
		hdr, err := readHeader(br)
		if err != nil {
			return 0, err
		}
		if hdr.Status != statusOK {
			return 0, readRemoteError(br, hdr)
		}
		l := d.pieceLen(fl.i)
		if int64(hdr.Len) != l {
			return 0, fmt.Errorf("%w: piece %d is %d bytes, want %d", errBadData, fl.i, hdr.Len, l)
		}
		if _, err := io.ReadFull(br, buf[:l]); err != nil {
			return 0, err
		}
		inflight = inflight[1:]
		if fl.dup {
			dups--
		}
		d.pieces.arrive(fl.i)
		v.put(fl.i, buf[:l])
	}
}
