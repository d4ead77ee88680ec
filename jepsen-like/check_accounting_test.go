package jepsenlike

import (
	"strings"
	"testing"
)

func acctOp(peer, member string, typ OpType, out Outcome, up, down uint64) Op {
	return Op{Peer: peer, Member: member, Type: typ, Outcome: out, Uploaded: up, Downloaded: down}
}

// The expected credit is, per session of a peer, the last acknowledged
// counters minus the first; unknown announces add nothing; a stop or a
// counter reset starts a new session.
func TestExpectedCreditsPerSession(t *testing.T) {
	h := []Op{
		acctOp("p1", "a", OpStarted, OK, 100, 10),
		acctOp("p1", "a", OpReannounce, Info, 150, 20),
		acctOp("p1", "a", OpReannounce, OK, 300, 30), // +200, +20
		acctOp("p1", "a", OpStopped, OK, 400, 30),    // +100
		acctOp("p1", "a", OpStarted, OK, 0, 0),       // new session
		acctOp("p1", "a", OpCompleted, OK, 50, 70),   // +50, +70
		acctOp("p1", "a", OpStarted, OK, 0, 0),       // reset on the same record
		acctOp("p1", "a", OpReannounce, OK, 5, 5),    // +5, +5
		acctOp("p2", "b", OpStarted, Fail, 0, 0),
		acctOp("p2", "b", OpStarted, OK, 7, 7),
	}
	got := ExpectedCredits(h)
	if got["a"] != [2]uint64{355, 95} || got["b"] != [2]uint64{} {
		t.Errorf("expected credits %v, want a: [355 95], b: [0 0]", got)
	}
}

// The checker fails books that credit more (doubled) or less (lost) than
// the history implies, on any master, and passes exact ones.
func TestCheckAccountingCatchesDoubleAndLostCredit(t *testing.T) {
	h := []Op{acctOp("p1", "a", OpStarted, OK, 0, 0), acctOp("p1", "a", OpReannounce, OK, 1000, 500)}
	exact := MemberBooks{Member: "a", Uploaded: 1000, Downloaded: 500, RawUploaded: 1000, RawDownloaded: 500}
	at := func(b MemberBooks, m string) MemberBooks { b.Master = m; return b }
	doubled := exact
	doubled.Uploaded, doubled.RawUploaded = 2000, 2000
	doubled.Swarms = map[int][2]uint64{0: {2000, 500}}
	lost := exact
	lost.Downloaded, lost.RawDownloaded = 0, 0
	for _, tc := range []struct {
		name  string
		books []MemberBooks
		want  Verdict
		words string
	}{
		{"exact everywhere", []MemberBooks{at(exact, "m1"), at(exact, "m2"), at(exact, "m3")}, Valid, "exactly"},
		{"doubled on one master", []MemberBooks{at(exact, "m1"), at(doubled, "m2"), at(exact, "m3")}, Invalid, "credited twice): swarm 0 +1000 up +0 down (peers p1)"},
		{"lost", []MemberBooks{at(lost, "m1"), at(lost, "m2"), at(lost, "m3")}, Invalid, "lost"},
		{"unreadable", []MemberBooks{at(exact, "m1"), {Master: "m2", Member: "a", Error: "timeout"}}, Unknown, "could not be read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := CheckAccounting(h, tc.books)
			if r.Verdict != tc.want || !strings.Contains(r.Explanation, tc.words) {
				t.Errorf("verdict %s (%s), want %s mentioning %q", r.Verdict, r.Explanation, tc.want, tc.words)
			}
		})
	}
}
