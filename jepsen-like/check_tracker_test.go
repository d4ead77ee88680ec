package jepsenlike

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"fileshare/tracker"
)

// Peer IDs of the synthetic histories (20 bytes, as on the wire).
const (
	pa = "-FSJP01-00000000000a"
	pb = "-FSJP01-00000000000b"
	pc = "-FSJP01-00000000000c"
)

func tOp(typ OpType, key int, peer string, out Outcome, invoke, complete int64) Op {
	return Op{Process: 1, Type: typ, Key: key, Peer: peer, Outcome: out, Invoke: invoke, Complete: complete, Master: "m1"}
}

// finalPeers is master m's final list of swarm key, read at t=1000.
func finalPeers(m string, key int, peers ...string) Op {
	slices.Sort(peers)
	return Op{Type: OpPeers, Key: key, Peer: watcherID, Master: m, Outcome: OK, Invoke: 1000, Complete: 1001, Final: true, Holders: peers}
}

func TestTrackerChecker(t *testing.T) {
	masters := []string{"m1", "m2"}
	both := func(key int, peers ...string) []Op {
		return []Op{finalPeers("m1", key, peers...), finalPeers("m2", key, peers...)}
	}
	for _, tc := range []struct {
		name        string
		ops         []Op
		verdict     Verdict
		agree       Verdict
		ack, rm     int
		lost, resur []string // "peer@masters"
		phantoms    int
	}{
		{
			name:    "an acknowledged started listed by every master is valid",
			ops:     append([]Op{tOp(OpStarted, 0, pa, OK, 1, 2)}, both(0, pa)...),
			verdict: Valid, agree: Valid, ack: 1,
		},
		{
			name:    "an acknowledged started one master does not list is lost there",
			ops:     []Op{tOp(OpStarted, 0, pa, OK, 1, 2), finalPeers("m1", 0, pa), finalPeers("m2", 0)},
			verdict: Invalid, agree: Invalid, ack: 1, lost: []string{pa + "@m2"},
		},
		{
			name:    "an acknowledged completed counts as an acknowledgement too",
			ops:     append([]Op{tOp(OpStarted, 0, pa, Info, 1, 2), tOp(OpCompleted, 0, pa, OK, 3, 4)}, both(0)...),
			verdict: Invalid, agree: Valid, ack: 1, lost: []string{pa + "@m1,m2"},
		},
		{
			name:    "an acknowledged stop that nothing could undo must stay gone",
			ops:     append([]Op{tOp(OpStarted, 0, pa, OK, 1, 2), tOp(OpStopped, 0, pa, OK, 3, 4)}, both(0, pa)...),
			verdict: Invalid, agree: Valid, rm: 1, resur: []string{pa + "@m1,m2"},
		},
		{
			name:    "an acknowledged stop, and absent at the end, is valid",
			ops:     append([]Op{tOp(OpStarted, 0, pa, OK, 1, 2), tOp(OpStopped, 0, pa, OK, 3, 4)}, both(0)...),
			verdict: Valid, agree: Valid, rm: 1,
		},
		{
			name: "a started attempted after the stop (info) may bring the peer back",
			ops: append([]Op{tOp(OpStarted, 0, pa, OK, 1, 2), tOp(OpStopped, 0, pa, OK, 3, 4), tOp(OpStarted, 0, pa, Info, 5, 6),
				tOp(OpStarted, 0, pb, OK, 1, 2)}, both(0, pa, pb)...),
			verdict: Valid, agree: Valid, ack: 1,
		},
		{
			name: "a re-announce after the stop may insert the peer again, but acknowledges nothing",
			ops: append([]Op{tOp(OpStarted, 0, pa, OK, 1, 2), tOp(OpStopped, 0, pa, OK, 3, 4), tOp(OpReannounce, 0, pa, OK, 5, 6),
				tOp(OpStarted, 0, pb, OK, 1, 2)}, both(0, pb)...),
			verdict: Valid, agree: Valid, ack: 1,
		},
		{
			name: "a stop whose outcome is unknown may or may not have removed the peer",
			ops: append([]Op{tOp(OpStarted, 0, pa, OK, 1, 2), tOp(OpStopped, 0, pa, Info, 3, 4),
				tOp(OpStarted, 0, pb, OK, 1, 2), tOp(OpStarted, 0, pc, OK, 1, 2), tOp(OpStopped, 0, pc, Info, 3, 4)}, append(both(0, pa, pb), finalPeers("m1", 1))...),
			verdict: Unknown, agree: Unknown, ack: 1, // swarm 1 was read by m1 only
		},
		{
			name:    "a stop concurrent with the started decides nothing either way",
			ops:     append([]Op{tOp(OpStarted, 0, pa, OK, 1, 10), tOp(OpStopped, 0, pa, OK, 5, 6), tOp(OpStarted, 0, pb, OK, 1, 2)}, both(0, pb)...),
			verdict: Valid, agree: Valid, ack: 1,
		},
		{
			name:    "a failed stop did not happen",
			ops:     append([]Op{tOp(OpStarted, 0, pa, OK, 1, 2), tOp(OpStopped, 0, pa, Fail, 3, 4)}, both(0)...),
			verdict: Invalid, agree: Valid, ack: 1, lost: []string{pa + "@m1,m2"},
		},
		{
			name: "a listed peer nobody announced is a phantom, during the run too",
			ops: append([]Op{tOp(OpStarted, 0, pa, OK, 1, 2),
				{Process: 2, Type: OpReannounce, Key: 0, Peer: pa, Outcome: OK, Invoke: 3, Complete: 4, Master: "m2", Holders: []string{pc}}}, both(0, pa)...),
			verdict: Invalid, agree: Valid, ack: 1, phantoms: 1,
		},
		{
			name:    "masters that list different unacknowledged peers disagree",
			ops:     []Op{tOp(OpStarted, 0, pa, OK, 1, 2), tOp(OpStarted, 0, pb, Info, 1, 2), finalPeers("m1", 0, pa, pb), finalPeers("m2", 0, pa)},
			verdict: Valid, agree: Invalid, ack: 1,
		},
		{
			name: "the watcher, final announces and index ops are left out",
			ops: append([]Op{tOp(OpStarted, 0, pa, OK, 1, 2), {Type: OpStarted, Key: 0, Peer: watcherID, Outcome: OK, Invoke: 900, Complete: 901, Final: true, Master: "m1"},
				{Type: OpRegister, Key: 7, Peer: "p1", Outcome: OK, Invoke: 1, Complete: 2}}, both(0, pa)...),
			verdict: Valid, agree: Valid, ack: 1,
		},
		{
			name:    "nothing acknowledged means nothing was checked",
			ops:     append([]Op{tOp(OpStarted, 0, pa, Info, 1, 2)}, both(0)...),
			verdict: Unknown, agree: Valid,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range tc.ops {
				tc.ops[i].Index = i
				if err := tc.ops[i].Validate(); err != nil {
					t.Fatalf("bad synthetic op: %v", err)
				}
			}
			r := CheckTracker(tc.ops, masters)
			if r.Verdict != tc.verdict || r.Agreement.Verdict != tc.agree {
				t.Fatalf("tracker-set %s, tracker-agree %s; want %s, %s\n%s\n%s", r.Verdict, r.Agreement.Verdict, tc.verdict, tc.agree, r.Explanation, r.Agreement.Explanation)
			}
			if r.Acknowledged != tc.ack || r.Removed != tc.rm || len(r.Phantoms) != tc.phantoms {
				t.Errorf("acknowledged %d, removed %d, phantoms %d; want %d, %d, %d", r.Acknowledged, r.Removed, len(r.Phantoms), tc.ack, tc.rm, tc.phantoms)
			}
			if got := misses(r.Lost); !slices.Equal(got, tc.lost) {
				t.Errorf("lost %v, want %v", got, tc.lost)
			}
			if got := misses(r.Resurrected); !slices.Equal(got, tc.resur) {
				t.Errorf("resurrected %v, want %v", got, tc.resur)
			}
		})
	}
}

func misses(ms []TrackerMiss) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Peer+"@"+strings.Join(m.Masters, ","))
	}
	return out
}

// The harness's reading of a real non-compact reply, and of a refusal.
func TestParseAnnounceReply(t *testing.T) {
	body, err := tracker.EncodeBencode(nil, map[string]any{
		"complete": int64(1), "incomplete": int64(2), "interval": int64(5),
		"peers": []any{
			map[string]any{"ip": "127.0.0.1", "peer id": pb, "port": int64(6881)},
			map[string]any{"ip": "127.0.0.1", "peer id": pa, "port": int64(6882)},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := parseAnnounceReply(body)
	if err != nil {
		t.Fatal(err)
	}
	if r.complete != 1 || r.incomplete != 2 || !slices.Equal(r.peers, []string{pa, pb}) {
		t.Fatalf("got %+v, want complete 1, incomplete 2, peers [a b]", r)
	}
	refusal := tracker.AppendBencodeFailure(nil, "too many swarm entries from your address")
	if _, err := parseAnnounceReply(refusal); !errors.Is(err, errRefused) || !strings.Contains(err.Error(), "too many") {
		t.Fatalf("refusal: got %v, want errRefused with the reason", err)
	}
	for _, bad := range []string{"", "i1e", "d8:completei-1e10:incompletei0ee", "d8:completei1e10:incompletei0e5:peers3:abce", "d8:completei1e10:incompletei0e5:peersl3:abcee"} {
		if _, err := parseAnnounceReply([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// A reply the harness reads comes from a master over the network: no
// input may crash it, and what it accepts is well formed.
func FuzzParseAnnounceReply(f *testing.F) {
	f.Add([]byte("d8:completei1e10:incompletei0e5:peersld7:peer id20:-FSJP01-00000000000a4:porti1eeee"))
	f.Add([]byte("d14:failure reason3:nope"))
	f.Add([]byte("d8:completei0e10:incompletei0ee"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseAnnounceReply(b)
		if err != nil {
			return
		}
		if r.complete < 0 || r.incomplete < 0 {
			t.Fatalf("negative counts %+v", r)
		}
		for i, p := range r.peers {
			if len(p) != 20 || (i > 0 && r.peers[i-1] >= p) {
				t.Fatalf("peers not 20-byte, sorted and distinct: %q", r.peers)
			}
		}
	})
}
