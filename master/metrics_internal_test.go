package master

import (
	"testing"
	"time"

	"fileshare/client"
)

// BenchmarkObserveCall is what metrics add to every RPC a master answers.
func BenchmarkObserveCall(b *testing.B) {
	mx, err := newMetrics(&Master{}, MetricsBasic)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mx.ObserveCall(client.MethodRegister, "ok", 150*time.Microsecond)
		}
	})
}

// The event log keeps the newest maxEvents events, oldest first, and
// drops exact repeats.
func TestEventLogIsBoundedAndOrdered(t *testing.T) {
	var l eventLog
	now := time.Unix(1000, 0)
	l.add(Event{Time: now, Kind: "election", Member: "m1", Term: 1, Text: "x"})
	l.add(Event{Time: now, Kind: "election", Member: "m1", Term: 1, Text: "x"})
	if ev, _ := l.recent(); len(ev) != 1 {
		t.Fatalf("a repeated event was kept: %v", ev)
	}
	for i := range 3 * maxEvents {
		l.add(Event{Time: now.Add(time.Duration(i) * time.Second), Kind: "term", Term: uint64(i + 2)})
	}
	ev, seq := l.recent()
	if len(ev) != maxEvents {
		t.Fatalf("kept %d events, want %d", len(ev), maxEvents)
	}
	if ev[len(ev)-1].Term != 3*maxEvents+1 || ev[0].Term != 2*maxEvents+2 {
		t.Errorf("kept terms %d..%d, want the newest", ev[0].Term, ev[len(ev)-1].Term)
	}
	if seq != 3*maxEvents+1 {
		t.Errorf("sequence %d, want %d", seq, 3*maxEvents+1)
	}
}
