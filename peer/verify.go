package peer

// This file owns the verifier: the goroutines that hash the pieces one
// worker receives and store the good ones. The worker that starts a
// verifier owns it: it alone calls buffer and put, and calls wait once,
// before it returns; made and seq are the worker's. The verifier's
// goroutines share next, got and err under mu; queue, free and failed are
// channels. Verified pieces reach the partial file and the piece table
// through download.store.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
)

// verifier checks and stores the pieces one worker receives, on
// goroutines of its own, so that SHA-256 and the copy into the partial
// file overlap the worker's next network read instead of stalling it. On
// loopback a piece costs about as much CPU to hash, and again to write,
// as to receive, so one holder keeps two or more cores busy. Pieces are
// hashed in parallel but accepted or refused in the order they arrived,
// so, as when the worker verified each piece before reading the next,
// nothing a holder sent after a bad piece is stored.
type verifier struct {
	d      *download
	from   string    // the holder's peer ID
	conn   io.Closer // closed on the first failure, to end the worker's read
	queue  chan received
	free   chan []byte // piece buffers handed back
	made   int         // buffers allocated so far (worker-owned)
	seq    int         // sequence number of the next put (worker-owned)
	wg     sync.WaitGroup
	failed chan struct{} // closed on the first failure

	mu   sync.Mutex
	turn sync.Cond // signalled when next advances; L is &mu
	next int       // sequence number of the piece to decide next
	got  int       // pieces verified and stored
	err  error     // the first failure
}

// received is a piece read off the wire and not yet verified.
type received struct {
	seq, i int
	b      []byte
}

// verifyBuffers is how many piece buffers each worker cycles through:
// about 4 MiB worth (at most 16), and always one more than it has
// verifier goroutines, so that each verifies one piece while the worker
// reads the next.
func verifyBuffers(pieceSize int64) int {
	return int(max(min((4<<20)/pieceSize, 16), int64(verifyGoroutines()+1)))
}

// verifyGoroutines is how many goroutines verify each worker's pieces:
// one per core, at most 4, at least 2 so that one holder alone can use
// two cores besides its reading goroutine.
func verifyGoroutines() int { return min(max(runtime.GOMAXPROCS(0), 2), 4) }

// startVerifier starts the verifier of the worker fetching from holder
// from over conn. Its goroutines run until the worker calls wait.
func (d *download) startVerifier(from string, conn io.Closer) *verifier {
	n := verifyBuffers(d.pieceSize)
	v := &verifier{
		d: d, from: from, conn: conn,
		// Never more pieces in flight than buffers, so put never blocks.
		queue: make(chan received, n), free: make(chan []byte, n),
		failed: make(chan struct{}),
	}
	v.turn.L = &v.mu
	for range verifyGoroutines() {
		v.wg.Go(v.run)
	}
	return v
}

// buffer returns a piece buffer, waiting for a verifier goroutine to hand
// one back if all are in use.
func (v *verifier) buffer(ctx context.Context) ([]byte, error) {
	select {
	case b := <-v.free:
		return b, nil
	default:
	}
	if v.made < cap(v.free) {
		v.made++
		return make([]byte, v.d.pieceSize), nil
	}
	select {
	case b := <-v.free:
		return b, nil
	case <-v.failed:
		return nil, errors.New("verification failed") // wait reports why
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// put queues piece i, read into b (a buffer from buffer), for
// verification. It never blocks: the queue holds as many pieces as there
// are buffers.
func (v *verifier) put(i int, b []byte) {
	v.queue <- received{v.seq, i, b}
	v.seq++
}

// wait ends the verifier once every queued piece is processed, and
// returns how many pieces it stored and the worker's error: the
// verifier's own failure if it had one (it caused whatever ended the
// worker), else err.
func (v *verifier) wait(err error) (int, error) {
	close(v.queue)
	v.wg.Wait()
	if v.err != nil {
		return v.got, v.err
	}
	return v.got, err
}

// run hashes queued pieces, then, in arrival order, stores each good one
// until the first failure (a bad piece or a write error), after which it
// releases the rest unverified. The queue hands pieces out in order, so
// the piece whose turn it is is always held by a goroutine that can go
// on.
func (v *verifier) run() {
	for r := range v.queue {
		var good bool
		select {
		case <-v.failed: // refused anyway: do not hash
		default:
			good = sha256.Sum256(r.b) == v.d.hashes[r.i]
		}
		v.mu.Lock()
		for v.next != r.seq {
			v.turn.Wait()
		}
		refused := v.err != nil
		v.mu.Unlock()
		var err error
		switch {
		case refused:
		case !good:
			err = fmt.Errorf("%w: piece %d does not match its SHA-256", errBadData, r.i)
		default:
			err = v.d.store(r.i, r.b, v.from)
		}
		v.mu.Lock()
		switch {
		case err != nil:
			v.err = err
			close(v.failed)
			v.conn.Close()
		case !refused:
			v.got++
		}
		v.next++
		v.turn.Broadcast()
		v.mu.Unlock()
		if refused || err != nil {
			v.d.pieces.release([]flight{{i: r.i}}) // not stored: back to the others
		}
		v.free <- r.b[:cap(r.b)]
	}
}

// store writes a verified piece from holder from in place and marks it
// verified. A duplicate of a piece already verified is discarded. A write
// failure wraps errWrite and leaves the request for the caller to release.
func (d *download) store(i int, b []byte, from string) error {
	if d.pieces.discardIfVerified(i) {
		return nil
	}
	if err := d.file.writePiece(i, b); err != nil {
		return err
	}
	d.pieces.stored(i, from)
	return nil
}
