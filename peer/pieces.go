package peer

// This file owns the piece table: which pieces of a download are verified,
// which are requested from how many holders, which have arrived and are
// being verified. Every field of pieceTable is guarded by its mu and touched
// only by the methods below, which any goroutine of the download may call
// (workers, verifiers, the coordinator). No method blocks on anything but
// mu, and none calls out while holding it.

import (
	"slices"
	"sync"
)

// flight is one request a worker has sent and not yet seen answered: piece
// i, and whether it is an end-game duplicate of another holder's request.
type flight struct {
	i   int
	dup bool
}

// maxDups is how many end-game duplicate requests one holder may have
// outstanding.
const maxDups = 2

// pieceTable is the piece bookkeeping of one download. Its invariants, which
// pieces_test.go checks:
//
//   - A verified piece is never handed out again by next, and stays
//     verified.
//   - Before the end game, next hands each piece to one requester: the
//     lowest-numbered piece nobody has verified or requested.
//   - In the end game (every unverified piece is requested), next hands a
//     piece to a second requester only if exactly one holds it, it has not
//     arrived, the asking worker does not hold it, and the worker has fewer
//     than maxDups duplicates outstanding.
//   - A released piece nobody else is fetching is handed out again, before
//     any higher-numbered one.
//   - A copy stored after the piece was verified counts as a duplicate and
//     changes nothing else.
//   - complete is closed exactly when every piece is verified.
type pieceTable struct {
	size, pieceSize int64
	n               int

	mu         sync.Mutex
	verified   *resumeState // the verified (and written) pieces
	requesters []int        // requests outstanding per piece, received ones included until stored
	arrived    []bool       // a requested copy was received and is being verified
	cursor     int          // every piece below is verified or requested
	done       int          // verified pieces
	doneBytes  int64
	resumed    int // pieces verified by an earlier run; set once by newPieceTable
	fetched    int // pieces verified in this run
	fetchBytes int64
	dups       int            // copies received after the piece was verified
	from       map[string]int // pieces verified per holder peer ID
	changed    chan struct{}  // closed and replaced on every change
	complete   chan struct{}  // closed when every piece is verified
}

// newPieceTable returns the table of a download whose earlier runs verified
// the pieces verified marks (after re-verification: see
// partialFile.reverify). The table takes verified over; the caller must not
// use it again.
func newPieceTable(verified *resumeState) *pieceTable {
	t := &pieceTable{
		size: verified.Size, pieceSize: verified.PieceSize, n: verified.Pieces,
		verified:   verified,
		requesters: make([]int, verified.Pieces),
		arrived:    make([]bool, verified.Pieces),
		from:       map[string]int{},
		changed:    make(chan struct{}),
		complete:   make(chan struct{}),
	}
	for i := range t.n {
		if verified.has(i) {
			t.done++
			t.doneBytes += pieceLen(t.size, t.pieceSize, i)
		}
	}
	t.resumed = t.done
	if t.done == t.n {
		close(t.complete)
	}
	return t
}

// next picks the next piece for a worker that has mine outstanding, dups of
// them duplicates: the lowest-numbered piece nobody has requested, or, once
// there is none (the end game), a piece another holder is still sending
// that this worker has not requested, if it has fewer than maxDups such
// duplicates outstanding. A piece that has arrived and is being verified is
// not duplicated. The piece is counted as requested until the worker
// releases or stores it. ok is false when there is nothing to do; changed
// is then closed at the next change.
func (t *pieceTable) next(mine []flight, dups int) (i int, dup bool, changed <-chan struct{}, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.cursor < t.n && (t.verified.has(t.cursor) || t.requesters[t.cursor] > 0) {
		t.cursor++
	}
	if t.cursor < t.n {
		i = t.cursor
		t.requesters[i]++
		t.cursor++
		return i, false, nil, true
	}
	if dups < maxDups {
		for i := range t.n {
			if t.verified.has(i) || t.requesters[i] != 1 || t.arrived[i] || slices.ContainsFunc(mine, func(f flight) bool { return f.i == i }) {
				continue
			}
			t.requesters[i]++
			return i, true, nil, true
		}
	}
	return 0, false, t.changed, false
}

// release returns requests that will not be stored (unanswered, refused,
// or failed to write): pieces nobody else is fetching go back to the front
// of the queue.
func (t *pieceTable) release(fs []flight) {
	if len(fs) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range fs {
		t.requesters[f.i]--
		t.arrived[f.i] = false
		if !t.verified.has(f.i) && t.requesters[f.i] == 0 {
			t.cursor = min(t.cursor, f.i)
		}
	}
	t.notify()
}

// arrive notes that a requested copy of piece i has been received and is
// being verified, so it is not duplicated meanwhile.
func (t *pieceTable) arrive(i int) {
	t.mu.Lock()
	t.arrived[i] = true
	t.mu.Unlock()
}

// discardIfVerified ends the request of a verified copy of piece i without
// storing it, counted as a duplicate, if piece i is verified already; it
// reports whether it did. Otherwise the caller writes the copy and calls
// stored.
func (t *pieceTable) discardIfVerified(i int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.verified.has(i) {
		return false
	}
	t.requesters[i]--
	t.dups++
	t.notify()
	return true
}

// stored ends the request of piece i, whose verified copy from holder from
// is now written, and marks the piece verified; if another copy got there
// first, this one counts as a duplicate.
func (t *pieceTable) stored(i int, from string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.requesters[i]--
	if t.verified.has(i) {
		t.dups++
	} else {
		l := pieceLen(t.size, t.pieceSize, i)
		t.verified.set(i)
		t.done++
		t.doneBytes += l
		t.fetched++
		t.fetchBytes += l
		t.from[from]++
		if t.done == t.n {
			close(t.complete)
		}
	}
	t.notify()
}

// notify wakes waiting workers. Called with mu held.
func (t *pieceTable) notify() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// completed is closed once every piece is verified.
func (t *pieceTable) completed() <-chan struct{} { return t.complete }

// snapshot returns a copy of the verified bitmap and how many pieces it
// marks, for a checkpoint.
func (t *pieceTable) snapshot() (*resumeState, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	snap := *t.verified
	snap.Bitmap = slices.Clone(t.verified.Bitmap)
	return &snap, t.done
}

// pieceStats are a pieceTable's counters at one moment.
type pieceStats struct {
	Done       int   // verified pieces
	DoneBytes  int64 // their bytes
	Resumed    int   // verified by an earlier run
	Fetched    int   // verified in this run
	FetchBytes int64 // their bytes
	Dups       int   // copies received after the piece was verified
}

// stats returns the table's counters.
func (t *pieceTable) stats() pieceStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return pieceStats{Done: t.done, DoneBytes: t.doneBytes, Resumed: t.resumed, Fetched: t.fetched, FetchBytes: t.fetchBytes, Dups: t.dups}
}

// fromHolders returns a copy of the verified-piece count per holder.
func (t *pieceTable) fromHolders() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.from))
	for k, v := range t.from {
		out[k] = v
	}
	return out
}
