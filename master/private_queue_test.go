package master

import (
	"testing"

	"fileshare/fsm"
)

// The credit queue keeps, per record, the reports a reset makes
// necessary, in the order heard, whatever order they arrive in: the peak
// before the reset, the first report after it, and the newest.
func TestCreditQueueKeepsResetsInOrder(t *testing.T) {
	var q creditQueue
	rep := func(up uint64, at int64) fsm.PrivateAnnounce {
		return fsm.PrivateAnnounce{Announce: fsm.Announce{Event: fsm.SwarmCredit}, Uploaded: up, At: at}
	}
	for _, c := range []fsm.PrivateAnnounce{rep(70, 7), rep(0, 9), rep(90, 8), rep(30, 10), rep(60, 11), rep(90, 8), rep(50, 6)} {
		q.put(c)
	}
	got := q.take()
	want := []uint64{90, 0, 60}
	if len(got) != len(want) {
		t.Fatalf("queued %+v, want uploads %v", got, want)
	}
	for i := range want {
		if got[i].Uploaded != want[i] {
			t.Fatalf("queued %+v, want uploads %v", got, want)
		}
	}
}
