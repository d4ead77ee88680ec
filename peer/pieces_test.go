package peer

import (
	"crypto/sha256"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// testPieceSize keeps the tables small; the last piece of testTable's
// files is a short one.
const testPieceSize = 1 << 14

// testTable returns the table of an n-piece file whose last piece is 100
// bytes, with the pieces in verified already verified (resumed).
func testTable(t *testing.T, n int, verified ...int) *pieceTable {
	t.Helper()
	st := newResumeState(sha256.Sum256([]byte("f")), int64(n-1)*testPieceSize+100, testPieceSize)
	for _, i := range verified {
		st.set(i)
	}
	return newPieceTable(st)
}

// take asks for the next piece for a worker holding mine (dups of them
// duplicates) and fails the test unless it gets want.
func take(t *testing.T, tb *pieceTable, mine []flight, dups int, want flight) {
	t.Helper()
	i, dup, _, ok := tb.next(mine, dups)
	if !ok || i != want.i || dup != want.dup {
		t.Fatalf("next(%v, %d) = piece %d dup %v ok %v, want piece %d dup %v ok true", mine, dups, i, dup, ok, want.i, want.dup)
	}
}

// nothing fails the test unless next has nothing for the worker, and
// returns the channel that signals the next change.
func nothing(t *testing.T, tb *pieceTable, mine []flight, dups int) <-chan struct{} {
	t.Helper()
	i, dup, changed, ok := tb.next(mine, dups)
	if ok {
		t.Fatalf("next(%v, %d) = piece %d dup %v, want nothing to do", mine, dups, i, dup)
	}
	if changed == nil {
		t.Fatal("next has nothing to do but returned no change channel to wait on")
	}
	return changed
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Before the end game every unverified piece goes to exactly one
// requester, lowest first, and a verified (resumed) piece is never asked
// for again.
func TestPieceTableHandsOutEachMissingPieceOnceLowestFirst(t *testing.T) {
	for _, tc := range []struct {
		name     string
		n        int
		verified []int
		want     []int
	}{
		{"fresh", 4, nil, []int{0, 1, 2, 3}},
		{"resumed holes", 6, []int{0, 2, 3}, []int{1, 4, 5}},
		{"resumed all but the last", 3, []int{0, 1}, []int{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := testTable(t, tc.n, tc.verified...)
			var got []int
			for {
				// Each request comes from a different worker holding
				// nothing, at its duplicate limit so the end game
				// cannot hand out copies.
				i, dup, _, ok := tb.next(nil, maxDups)
				if !ok {
					break
				}
				if dup {
					t.Fatalf("piece %d handed out as a duplicate with dups at the limit", i)
				}
				got = append(got, i)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("pieces handed out: %v, want %v", got, tc.want)
			}
		})
	}
}

// A table built from a resume bitmap counts exactly the marked pieces as
// verified and resumed, with their true lengths (the last one short), and
// a bitmap marking every piece is complete at once.
func TestPieceTableResumesFromTheVerifiedBitmap(t *testing.T) {
	for _, tc := range []struct {
		name      string
		n         int
		verified  []int
		wantBytes int64
		complete  bool
	}{
		{"nothing", 3, nil, 0, false},
		{"first two", 3, []int{0, 1}, 2 * testPieceSize, false},
		{"the short last piece", 3, []int{2}, 100, false},
		{"everything", 3, []int{0, 1, 2}, 2*testPieceSize + 100, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := testTable(t, tc.n, tc.verified...)
			st := tb.stats()
			if st.Done != len(tc.verified) || st.Resumed != len(tc.verified) || st.DoneBytes != tc.wantBytes || st.Fetched != 0 || st.FetchBytes != 0 {
				t.Fatalf("stats %+v, want %d done and resumed, %d bytes, nothing fetched", st, len(tc.verified), tc.wantBytes)
			}
			if got := isClosed(tb.completed()); got != tc.complete {
				t.Fatalf("complete closed: %v, want %v", got, tc.complete)
			}
			if tc.complete {
				nothing(t, tb, nil, 0)
			}
			snap, count := tb.snapshot()
			if count != len(tc.verified) {
				t.Fatalf("snapshot counts %d pieces, want %d", count, len(tc.verified))
			}
			for i := range tc.n {
				if snap.has(i) != slices.Contains(tc.verified, i) {
					t.Fatalf("snapshot marks piece %d: %v, want %v", i, snap.has(i), !snap.has(i))
				}
			}
		})
	}
}

// In the end game an idle worker duplicates a piece another holder is
// still sending, but never a piece it holds itself, one that has arrived
// and is being verified, one already requested twice, or one already
// verified; and never more than maxDups at once.
func TestPieceTableEndGameDuplicatesOnlyWhatMayHelp(t *testing.T) {
	a := []flight{{0, false}, {1, false}, {2, false}}
	for _, tc := range []struct {
		name  string
		setup func(tb *pieceTable)
		mine  []flight
		dups  int
		want  *flight // nil: nothing to do
	}{
		{"an idle worker duplicates the lowest outstanding piece", nil, nil, 0, &flight{0, true}},
		{"not the worker's own requests", nil, a, 0, nil},
		{"not beyond maxDups", nil, nil, maxDups, nil},
		{"one below maxDups still may", nil, nil, maxDups - 1, &flight{0, true}},
		{"not a piece that arrived", func(tb *pieceTable) { tb.arrive(0) }, nil, 0, &flight{1, true}},
		{"not a piece requested twice already", func(tb *pieceTable) { take(t, tb, nil, 0, flight{0, true}) }, []flight{{1, true}}, 1, &flight{2, true}},
		{"not a verified piece", func(tb *pieceTable) {
			tb.stored(0, "a")
			tb.stored(1, "a")
		}, nil, 0, &flight{2, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := testTable(t, 3)
			for _, f := range a {
				take(t, tb, nil, 0, f) // worker A holds every piece
			}
			if tc.setup != nil {
				tc.setup(tb)
			}
			if tc.want == nil {
				nothing(t, tb, tc.mine, tc.dups)
				return
			}
			take(t, tb, tc.mine, tc.dups, *tc.want)
		})
	}
}

// A released request for a piece nobody else is fetching is handed out
// again before any higher-numbered piece; one whose duplicate is still
// outstanding elsewhere is not. Either way the workers waiting for work
// are woken.
func TestPieceTableReleaseReissuesLostPiecesFirst(t *testing.T) {
	t.Run("sole requester", func(t *testing.T) {
		tb := testTable(t, 6)
		for i := range 4 {
			take(t, tb, nil, 0, flight{i, false})
		}
		tb.release([]flight{{2, false}, {1, false}})
		take(t, tb, nil, 0, flight{1, false})
		take(t, tb, nil, 0, flight{2, false})
		take(t, tb, nil, 0, flight{4, false})
	})
	t.Run("waiting workers are woken", func(t *testing.T) {
		tb := testTable(t, 2)
		take(t, tb, nil, maxDups, flight{0, false})
		take(t, tb, nil, maxDups, flight{1, false})
		wake := nothing(t, tb, nil, maxDups)
		if isClosed(wake) {
			t.Fatal("the change channel is closed before any change")
		}
		tb.release([]flight{{1, false}})
		if !isClosed(wake) {
			t.Fatal("release did not wake a worker waiting for work")
		}
		take(t, tb, nil, maxDups, flight{1, false})
	})
	t.Run("a duplicate is still outstanding", func(t *testing.T) {
		tb := testTable(t, 2)
		take(t, tb, nil, 0, flight{0, false})
		take(t, tb, nil, 0, flight{1, false})
		take(t, tb, nil, 0, flight{0, true}) // B duplicates 0
		tb.release([]flight{{0, false}})     // A lost it; B still fetches it
		take(t, tb, []flight{{0, true}}, 1, flight{1, true})
		nothing(t, tb, []flight{{0, true}, {1, true}}, maxDups)
	})
	t.Run("a refused arrival goes back to the others", func(t *testing.T) {
		tb := testTable(t, 1)
		take(t, tb, nil, 0, flight{0, false})
		tb.arrive(0)
		nothing(t, tb, nil, 0)           // being verified: not duplicated
		tb.release([]flight{{0, false}}) // its verifier refused it
		take(t, tb, nil, 0, flight{0, false})
	})
}

// The copy of a piece that arrives after another copy was stored (the end
// game's duplicate at the very end) counts as a duplicate and changes
// nothing else, whether it is noticed before its write or after; the
// first copy completes the download.
func TestPieceTableDuplicateAtTheEndCountsOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		second func(tb *pieceTable) // the second copy's fate
	}{
		{"noticed before writing", func(tb *pieceTable) {
			if !tb.discardIfVerified(1) {
				t.Fatal("discardIfVerified(1) = false for a verified piece")
			}
		}},
		{"written concurrently", func(tb *pieceTable) { tb.stored(1, "b") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := testTable(t, 2)
			take(t, tb, nil, 0, flight{0, false})
			take(t, tb, nil, 0, flight{1, false})
			tb.stored(0, "a")
			take(t, tb, nil, 0, flight{1, true}) // B duplicates the last piece
			if tb.discardIfVerified(1) {
				t.Fatal("discardIfVerified(1) = true before piece 1 was stored")
			}
			if isClosed(tb.completed()) {
				t.Fatal("complete with a piece missing")
			}
			tb.stored(1, "a")
			if !isClosed(tb.completed()) {
				t.Fatal("not complete once every piece is stored")
			}
			tc.second(tb)
			st := tb.stats()
			want := pieceStats{Done: 2, DoneBytes: testPieceSize + 100, Fetched: 2, FetchBytes: testPieceSize + 100, Dups: 1}
			if st != want {
				t.Fatalf("stats %+v, want %+v", st, want)
			}
			if from := tb.fromHolders(); len(from) != 1 || from["a"] != 2 {
				t.Fatalf("pieces per holder %v, want a:2 only", from)
			}
			nothing(t, tb, nil, 0)
		})
	}
}

// A worker whose requests time out releases them, and a worker waiting
// for work gets them at that moment, not before: a holder that stops
// answering costs its pieces one IOTimeout, never the download.
func TestPieceTableReissuesAfterATimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 20 * time.Second
		tb := testTable(t, 2)
		start := time.Now()
		// A takes both pieces, then hears nothing back.
		var mine []flight
		for range 2 {
			i, dup, _, _ := tb.next(mine, 0)
			mine = append(mine, flight{i, dup})
		}
		go func() {
			time.Sleep(timeout) // the read deadline
			tb.release(mine)
		}()
		// B, at its duplicate limit, waits for work.
		var got []flight
		for len(got) < 2 {
			i, dup, changed, ok := tb.next(got, maxDups)
			if ok {
				got = append(got, flight{i, dup})
				continue
			}
			<-changed
		}
		if waited := time.Since(start); waited != timeout {
			t.Fatalf("B got the pieces after %v, want exactly the timeout %v", waited, timeout)
		}
		if want := []flight{{0, false}, {1, false}}; !slices.Equal(got, want) {
			t.Fatalf("B got %v, want %v (re-issued as first requests)", got, want)
		}
	})
}
