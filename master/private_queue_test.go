package master

import (
	"slices"
	"testing"

	"fileshare/fsm"
)

func queuedReport(up uint64, at int64) fsm.PrivateAnnounce {
	return fsm.PrivateAnnounce{Announce: fsm.Announce{Event: fsm.SwarmCredit}, Uploaded: up, At: at}
}

func queuedUploads(t *testing.T, q *creditQueue) []uint64 {
	t.Helper()
	var ups []uint64
	for _, c := range q.take() {
		ups = append(ups, c.Uploaded)
	}
	return ups
}

// The credit queue keeps every report of a record, in the order heard,
// whatever order they arrive in, once each: two reports that look like
// growth (60, then 100) may have a restart between them that another
// master heard, so neither covers the other.
func TestCreditQueueKeepsEveryReportInOrder(t *testing.T) {
	var q creditQueue
	for _, c := range []fsm.PrivateAnnounce{
		queuedReport(70, 7), queuedReport(0, 9), queuedReport(90, 8), queuedReport(30, 10),
		queuedReport(100, 12), queuedReport(60, 11), queuedReport(90, 8), queuedReport(50, 6),
	} {
		q.put(c)
	}
	if got, want := queuedUploads(t, &q), []uint64{50, 70, 90, 0, 30, 60, 100}; !slices.Equal(got, want) {
		t.Fatalf("queued uploads %v, want %v", got, want)
	}
	if q.dropped != 0 {
		t.Fatalf("dropped %d reports, want none", q.dropped)
	}
}

// A record's full queue sheds the oldest report the next one covers
// (growth), keeping the peak before each visible reset and the first
// report after it; when nothing is covered it drops the oldest and
// counts it.
func TestCreditQueueShedsCoveredReportsFirst(t *testing.T) {
	var q creditQueue
	for i, up := range []uint64{10, 0, 20, 5, 30, 6, 40, 7, 50, 60} {
		q.put(queuedReport(up, int64(i+1)))
	}
	// The ninth report (50) finds only peaks and starts: 10 is dropped.
	// The tenth finds 0 covered by 20, with no reset after it: 0 is shed.
	if got, want := queuedUploads(t, &q), []uint64{20, 5, 30, 6, 40, 7, 50, 60}; !slices.Equal(got, want) {
		t.Fatalf("queued uploads %v, want %v", got, want)
	}
	if q.dropped != 1 {
		t.Fatalf("dropped %d, want 1", q.dropped)
	}
}
