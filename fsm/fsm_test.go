package fsm

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

var (
	tokA = tok("alice")
	tokB = tok("bob")
)

func joinA(req uint64) JoinPeer {
	return JoinPeer{Peer: "alice", Token: tokA, Addr: "10.0.0.1:7000", RequestID: req, Time: 100}
}

func joinB(req uint64) JoinPeer {
	return JoinPeer{Peer: "bob", Token: tokB, Addr: "10.0.0.2:7000", RequestID: req, Time: 100}
}

func regA(req uint64, files ...FileMeta) RegisterFiles {
	return RegisterFiles{Peer: "alice", Token: tokA, RequestID: req, Files: files}
}

func regB(req uint64, files ...FileMeta) RegisterFiles {
	return RegisterFiles{Peer: "bob", Token: tokB, RequestID: req, Files: files}
}

// step is one log entry of a scenario and what it must return.
type step struct {
	cmd         Command // encoded with Encode, unless raw is set
	raw         []byte
	wantErr     error // sentinel, nil for success
	wantDup     bool
	wantExpired []PeerID
}

type scenario struct {
	name  string
	steps []step
	check func(t *testing.T, f *FSM)
}

func runScenarios(t *testing.T, cases []scenario) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			for i, s := range tc.steps {
				data := s.raw
				if data == nil {
					data = mustEncode(t, s.cmd)
				}
				before := n.f.Digest()
				r := n.applyBytes(data)
				if !errors.Is(r.Err, s.wantErr) || (s.wantErr == nil && r.Err != nil) {
					t.Fatalf("step %d (%T): got err %v, want %v", i, s.cmd, r.Err, s.wantErr)
				}
				if r.Duplicate != s.wantDup {
					t.Fatalf("step %d (%T): got Duplicate %v, want %v", i, s.cmd, r.Duplicate, s.wantDup)
				}
				if !slices.Equal(r.Expired, s.wantExpired) {
					t.Fatalf("step %d (%T): got Expired %v, want %v", i, s.cmd, r.Expired, s.wantExpired)
				}
				if (r.Duplicate || errors.Is(r.Err, ErrUnauthorized) || errors.Is(r.Err, ErrUnknownPeer) ||
					errors.Is(r.Err, ErrInvalid) || errors.Is(r.Err, ErrUnknownCommand)) && n.f.Digest() != before {
					t.Fatalf("step %d (%T): a rejected command (%v) changed the state", i, s.cmd, r.Err)
				}
				checkDigest(t, n.f)
			}
			if tc.check != nil {
				tc.check(t, n.f)
			}
		})
	}
}

func wantPeer(t *testing.T, f *FSM, id PeerID, want PeerInfo) {
	t.Helper()
	got, ok := f.Peer(id)
	if !ok {
		t.Fatalf("Peer(%s): not found, want %+v", id, want)
	}
	if got != want {
		t.Fatalf("Peer(%s): got %+v, want %+v", id, got, want)
	}
}

func wantNoPeer(t *testing.T, f *FSM, id PeerID) {
	t.Helper()
	if got, ok := f.Peer(id); ok {
		t.Fatalf("Peer(%s): got %+v, want not found", id, got)
	}
}

func wantHolders(t *testing.T, f *FSM, id FileID, want ...Holder) {
	t.Helper()
	_, got, ok := f.Lookup(id)
	if len(want) == 0 {
		if ok {
			t.Fatalf("Lookup(%.8s): got holders %+v, want file absent", id, got)
		}
		return
	}
	if !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("Lookup(%.8s): got %+v (found %v), want %+v", id, got, ok, want)
	}
}

func wantCounts(t *testing.T, f *FSM, want Counts) {
	t.Helper()
	if got := f.Counts(); got != want {
		t.Fatalf("Counts: got %+v, want %+v", got, want)
	}
}

var (
	holderA = func(name string) Holder { return Holder{Peer: "alice", Addr: "10.0.0.1:7000", Name: name} }
	holderB = func(name string) Holder { return Holder{Peer: "bob", Addr: "10.0.0.2:7000", Name: name} }
)

func TestJoinPeer(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name:  "first join creates the peer",
			steps: []step{{cmd: joinA(1)}},
			check: func(t *testing.T, f *FSM) {
				wantPeer(t, f, "alice", PeerInfo{ID: "alice", Addr: "10.0.0.1:7000", JoinedAt: 100, LastJoin: 100})
				wantCounts(t, f, Counts{Peers: 1})
			},
		},
		{
			name: "re-join with the same token updates the address and keeps files and JoinedAt",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: regA(2, meta(1, "a.txt"))},
				{cmd: JoinPeer{Peer: "alice", Token: tokA, Addr: "[::1]:9000", RequestID: 3, Time: 500}},
			},
			check: func(t *testing.T, f *FSM) {
				wantPeer(t, f, "alice", PeerInfo{ID: "alice", Addr: "[::1]:9000", JoinedAt: 100, LastJoin: 500, Files: 1})
				wantHolders(t, f, fid(1), Holder{Peer: "alice", Addr: "[::1]:9000", Name: "a.txt"})
			},
		},
		{
			name: "re-join with another token is unauthorized and changes nothing",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: JoinPeer{Peer: "alice", Token: tokB, Addr: "6.6.6.6:66", RequestID: 2, Time: 500}, wantErr: ErrUnauthorized},
			},
			check: func(t *testing.T, f *FSM) {
				wantPeer(t, f, "alice", PeerInfo{ID: "alice", Addr: "10.0.0.1:7000", JoinedAt: 100, LastJoin: 100})
			},
		},
		{
			name: "a retried join is a duplicate even with different content",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: JoinPeer{Peer: "alice", Token: tokA, Addr: "10.9.9.9:1", RequestID: 1, Time: 900}, wantDup: true},
			},
			check: func(t *testing.T, f *FSM) {
				wantPeer(t, f, "alice", PeerInfo{ID: "alice", Addr: "10.0.0.1:7000", JoinedAt: 100, LastJoin: 100})
			},
		},
		{
			name: "a wrong-token request does not poison the victim's dedup window",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: regA(2, meta(1, "a"))},
				{cmd: RegisterFiles{Peer: "alice", Token: tokB, RequestID: 3, Files: []FileMeta{meta(2, "b")}}, wantErr: ErrUnauthorized},
				{cmd: regA(3, meta(3, "c"))},
			},
			check: func(t *testing.T, f *FSM) {
				if got, want := f.PeerFiles("alice"), sortedIDs(fid(1), fid(3)); !slices.Equal(got, want) {
					t.Fatalf("PeerFiles: got %v, want %v", got, want)
				}
			},
		},
		{name: "zero request id", steps: []step{{raw: encodeUnchecked(t, JoinPeer{Peer: "alice", Token: tokA, Addr: "h:1"}), wantErr: ErrInvalid}}},
		{name: "zero token", steps: []step{{raw: encodeUnchecked(t, JoinPeer{Peer: "alice", Addr: "h:1", RequestID: 1}), wantErr: ErrInvalid}}},
		{name: "empty peer id", steps: []step{{raw: encodeUnchecked(t, JoinPeer{Token: tokA, Addr: "h:1", RequestID: 1}), wantErr: ErrInvalid}}},
		{name: "peer id with a slash", steps: []step{{raw: encodeUnchecked(t, JoinPeer{Peer: "a/b", Token: tokA, Addr: "h:1", RequestID: 1}), wantErr: ErrInvalid}}},
		{name: "peer id too long", steps: []step{{raw: encodeUnchecked(t, JoinPeer{Peer: PeerID(strings.Repeat("x", 65)), Token: tokA, Addr: "h:1", RequestID: 1}), wantErr: ErrInvalid}}},
		{name: "address without port", steps: []step{{raw: encodeUnchecked(t, JoinPeer{Peer: "alice", Token: tokA, Addr: "host", RequestID: 1}), wantErr: ErrInvalid}}},
		{name: "address port 0", steps: []step{{raw: encodeUnchecked(t, JoinPeer{Peer: "alice", Token: tokA, Addr: "host:0", RequestID: 1}), wantErr: ErrInvalid}}},
		{name: "address port 65536", steps: []step{{raw: encodeUnchecked(t, JoinPeer{Peer: "alice", Token: tokA, Addr: "host:65536", RequestID: 1}), wantErr: ErrInvalid}}},
		{name: "address without host", steps: []step{{raw: encodeUnchecked(t, JoinPeer{Peer: "alice", Token: tokA, Addr: ":80", RequestID: 1}), wantErr: ErrInvalid}}},
	})
}

func sortedIDs(ids ...FileID) []FileID {
	slices.Sort(ids)
	return ids
}

func TestLeavePeer(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name:  "unknown peer",
			steps: []step{{cmd: LeavePeer{Peer: "alice", Token: tokA, RequestID: 1}, wantErr: ErrUnknownPeer}},
		},
		{
			name: "wrong token leaves the peer in place",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: LeavePeer{Peer: "alice", Token: tokB, RequestID: 2}, wantErr: ErrUnauthorized},
			},
			check: func(t *testing.T, f *FSM) { wantCounts(t, f, Counts{Peers: 1}) },
		},
		{
			name: "leave removes the peer's holdings and orphaned files, keeps shared ones",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: joinB(1)},
				{cmd: regA(2, meta(1, "shared"), meta(2, "only-alice"))},
				{cmd: regB(2, meta(1, "Shared"))},
				{cmd: LeavePeer{Peer: "alice", Token: tokA, RequestID: 3}},
			},
			check: func(t *testing.T, f *FSM) {
				wantNoPeer(t, f, "alice")
				wantHolders(t, f, fid(1), holderB("Shared"))
				wantHolders(t, f, fid(2))
				wantCounts(t, f, Counts{Peers: 1, Files: 1, Holdings: 1})
			},
		},
		{
			name: "a retried leave reports unknown peer; a new join starts a fresh dedup window",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: LeavePeer{Peer: "alice", Token: tokA, RequestID: 2}},
				{cmd: LeavePeer{Peer: "alice", Token: tokA, RequestID: 2}, wantErr: ErrUnknownPeer},
				{cmd: joinA(1)},
				{cmd: regA(2, meta(1, "x"))},
			},
			check: func(t *testing.T, f *FSM) { wantCounts(t, f, Counts{Peers: 1, Files: 1, Holdings: 1}) },
		},
		{name: "zero request id", steps: []step{{raw: encodeUnchecked(t, LeavePeer{Peer: "alice", Token: tokA}), wantErr: ErrInvalid}}},
	})
}

func TestRegisterFiles(t *testing.T) {
	conflicting := meta(1, "a")
	conflicting.Size++
	otherPiece := meta(1, "a")
	otherPiece.PieceSize *= 2
	invalid := func(mut func(*FileMeta)) step {
		m := meta(9, "ok")
		mut(&m)
		return step{raw: encodeUnchecked(t, regA(2, meta(1, "fine"), m)), wantErr: ErrInvalid}
	}
	runScenarios(t, []scenario{
		{
			name:  "unknown peer",
			steps: []step{{cmd: regA(1, meta(1, "a")), wantErr: ErrUnknownPeer}},
		},
		{
			name: "wrong token",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: RegisterFiles{Peer: "alice", Token: tokB, RequestID: 2, Files: []FileMeta{meta(1, "a")}}, wantErr: ErrUnauthorized},
			},
			check: func(t *testing.T, f *FSM) { wantCounts(t, f, Counts{Peers: 1}) },
		},
		{
			name: "registers files for two holders; FileInfo.Name is the smallest name",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: joinB(1)},
				{cmd: regA(2, meta(1, "zebra.iso"), meta(2, "b"))},
				{cmd: regB(2, meta(1, "Apple.iso"))},
			},
			check: func(t *testing.T, f *FSM) {
				info, _, _ := f.Lookup(fid(1))
				want := FileInfo{FileMeta: meta(1, "Apple.iso"), Holders: 2}
				if info != want {
					t.Fatalf("Lookup info: got %+v, want %+v", info, want)
				}
				wantHolders(t, f, fid(1), holderA("zebra.iso"), holderB("Apple.iso"))
				wantCounts(t, f, Counts{Peers: 2, Files: 2, Holdings: 3})
			},
		},
		{
			name: "set semantics: registering a held file again is fine; a new name replaces the old",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: regA(2, meta(1, "old"))},
				{cmd: regA(3, meta(1, "old"))},
				{cmd: regA(4, meta(1, "new"), meta(1, "new"))},
			},
			check: func(t *testing.T, f *FSM) {
				wantHolders(t, f, fid(1), holderA("new"))
				wantCounts(t, f, Counts{Peers: 1, Files: 1, Holdings: 1})
			},
		},
		{
			name: "conflicting size is rejected atomically and remembered",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: joinB(1)},
				{cmd: regA(2, meta(1, "a"))},
				{cmd: regB(2, meta(5, "five"), conflicting), wantErr: ErrConflict},
				{cmd: regB(2, meta(5, "five")), wantErr: ErrConflict, wantDup: true},
				{cmd: regB(3, otherPiece), wantErr: ErrConflict},
			},
			check: func(t *testing.T, f *FSM) {
				wantHolders(t, f, fid(5))
				wantHolders(t, f, fid(1), holderA("a"))
				wantCounts(t, f, Counts{Peers: 2, Files: 1, Holdings: 1})
			},
		},
		{
			name: "a retried registration is a duplicate and applies nothing new",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: regA(2, meta(1, "a"))},
				{cmd: regA(2, meta(2, "b")), wantDup: true},
			},
			check: func(t *testing.T, f *FSM) { wantCounts(t, f, Counts{Peers: 1, Files: 1, Holdings: 1}) },
		},
		{name: "empty file list is a no-op", steps: []step{{cmd: joinA(1)}, {cmd: regA(2)}}},
		{name: "bad file id", steps: []step{{cmd: joinA(1)}, invalid(func(m *FileMeta) { m.ID = "ABC" })}},
		{name: "upper-case file id", steps: []step{{cmd: joinA(1)}, invalid(func(m *FileMeta) { m.ID = FileID(strings.ToUpper(string(m.ID))) })}},
		{name: "empty name", steps: []step{{cmd: joinA(1)}, invalid(func(m *FileMeta) { m.Name = "" })}},
		{name: "name too long", steps: []step{{cmd: joinA(1)}, invalid(func(m *FileMeta) { m.Name = strings.Repeat("n", 256) })}},
		{name: "name with NUL", steps: []step{{cmd: joinA(1)}, invalid(func(m *FileMeta) { m.Name = "a\x00b" })}},
		{name: "name not UTF-8", steps: []step{{cmd: joinA(1)}, invalid(func(m *FileMeta) { m.Name = "a\xffb" })}},
		{name: "negative size", steps: []step{{cmd: joinA(1)}, invalid(func(m *FileMeta) { m.Size = -1 })}},
		{name: "piece size not a power of two", steps: []step{{cmd: joinA(1)}, invalid(func(m *FileMeta) { m.PieceSize = 3 << 14 })}},
		{name: "piece size too small", steps: []step{{cmd: joinA(1)}, invalid(func(m *FileMeta) { m.PieceSize = 8 << 10 })}},
		{name: "piece size too large", steps: []step{{cmd: joinA(1)}, invalid(func(m *FileMeta) { m.PieceSize = 32 << 20 })}},
		{name: "same id twice with different metadata", steps: []step{{cmd: joinA(1)}, invalid(func(m *FileMeta) { *m = meta(1, "other") })}},
		{
			name: "too many files",
			steps: []step{{cmd: joinA(1)}, {raw: encodeUnchecked(t, RegisterFiles{
				Peer: "alice", Token: tokA, RequestID: 2, Files: slices.Repeat([]FileMeta{meta(1, "a")}, MaxFilesPerCommand+1),
			}), wantErr: ErrInvalid}},
		},
	})
}

func TestUnregisterFiles(t *testing.T) {
	unregA := func(req uint64, ids ...FileID) UnregisterFiles {
		return UnregisterFiles{Peer: "alice", Token: tokA, RequestID: req, Files: ids}
	}
	runScenarios(t, []scenario{
		{name: "unknown peer", steps: []step{{cmd: unregA(1, fid(1)), wantErr: ErrUnknownPeer}}},
		{
			name: "wrong token",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: regA(2, meta(1, "a"))},
				{cmd: UnregisterFiles{Peer: "alice", Token: tokB, RequestID: 3, Files: []FileID{fid(1)}}, wantErr: ErrUnauthorized},
			},
			check: func(t *testing.T, f *FSM) { wantHolders(t, f, fid(1), holderA("a")) },
		},
		{
			name: "removing the last holder removes the file; files not held are ignored",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: joinB(1)},
				{cmd: regA(2, meta(1, "a"), meta(2, "b"))},
				{cmd: regB(2, meta(2, "b"))},
				{cmd: unregA(3, fid(1), fid(2), fid(7), fid(2))},
			},
			check: func(t *testing.T, f *FSM) {
				wantHolders(t, f, fid(1))
				wantHolders(t, f, fid(2), holderB("b"))
				wantCounts(t, f, Counts{Peers: 2, Files: 1, Holdings: 1})
				if got := f.PeerFiles("alice"); got != nil {
					t.Fatalf("PeerFiles(alice): got %v, want none", got)
				}
			},
		},
		{
			name: "a retried unregister is a duplicate",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: regA(2, meta(1, "a"))},
				{cmd: unregA(3, fid(1))},
				{cmd: regA(4, meta(1, "a"))},
				{cmd: unregA(3, fid(1)), wantDup: true},
			},
			check: func(t *testing.T, f *FSM) { wantHolders(t, f, fid(1), holderA("a")) },
		},
		{name: "bad file id", steps: []step{{cmd: joinA(1)}, {raw: encodeUnchecked(t, unregA(2, "nope")), wantErr: ErrInvalid}}},
	})
}

func TestExpirePeers(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name: "expires known peers, skips unknown ones, drops orphaned files",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: joinB(1)},
				{cmd: JoinPeer{Peer: "carol", Token: tok("carol"), Addr: "c:1", RequestID: 1, Time: 100}},
				{cmd: regA(2, meta(1, "a"), meta(2, "b"))},
				{cmd: regB(2, meta(2, "b"))},
				{cmd: ExpirePeers{Peers: []PeerID{"zed", "bob", "alice", "bob"}, Time: 1000}, wantExpired: []PeerID{"alice", "bob"}},
				{cmd: ExpirePeers{Peers: []PeerID{"alice"}, Time: 1000}},
			},
			check: func(t *testing.T, f *FSM) {
				wantNoPeer(t, f, "alice")
				wantHolders(t, f, fid(1))
				wantHolders(t, f, fid(2))
				wantCounts(t, f, Counts{Peers: 1})
			},
		},
		{
			name: "a peer that re-joined after the leader's decision is kept",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: JoinPeer{Peer: "alice", Token: tokA, Addr: "10.0.0.1:7000", RequestID: 2, Time: 2000}},
				{cmd: ExpirePeers{Peers: []PeerID{"alice"}, Time: 1000}},
			},
			check: func(t *testing.T, f *FSM) { wantCounts(t, f, Counts{Peers: 1}) },
		},
		{
			name: "expiry drops the dedup window",
			steps: []step{
				{cmd: joinA(1)},
				{cmd: ExpirePeers{Peers: []PeerID{"alice"}, Time: 1000}, wantExpired: []PeerID{"alice"}},
				{cmd: joinA(1)},
			},
			check: func(t *testing.T, f *FSM) { wantCounts(t, f, Counts{Peers: 1}) },
		},
		{name: "empty list", steps: []step{{cmd: ExpirePeers{Time: 1}}}},
		{name: "bad peer id", steps: []step{{raw: encodeUnchecked(t, ExpirePeers{Peers: []PeerID{"bad id"}}), wantErr: ErrInvalid}}},
	})
}

func TestBatch(t *testing.T) {
	enc := func(c Command) []byte { return mustEncode(t, c) }
	f := New()
	data := enc(Batch{Commands: [][]byte{
		enc(joinA(1)),
		enc(regB(1, meta(1, "x"))),             // bob has not joined
		{byte(CmdRegisterFiles), 1, 0xc1},      // garbage body
		{99, 1, 0x90},                          // unknown type
		enc(regA(2, meta(1, "x"))),             // ok
		enc(regA(2, meta(2, "y"))),             // duplicate
		enc(ExpirePeers{Peers: []PeerID{"x"}}), // nothing to expire
	}})
	r := f.Apply(&raft.Log{Index: 7, Type: raft.LogCommand, Data: data}).(Response)
	if r.Err != nil {
		t.Fatalf("batch: got err %v, want nil", r.Err)
	}
	want := []struct {
		err error
		dup bool
	}{{nil, false}, {ErrUnknownPeer, false}, {ErrInvalid, false}, {ErrUnknownCommand, false}, {nil, false}, {nil, true}, {nil, false}}
	if len(r.Results) != len(want) {
		t.Fatalf("batch: got %d results, want %d", len(r.Results), len(want))
	}
	for i, w := range want {
		got := r.Results[i]
		if !errors.Is(got.Err, w.err) || (w.err == nil && got.Err != nil) || got.Duplicate != w.dup {
			t.Errorf("result %d: got {Err: %v, Duplicate: %v}, want {Err: %v, Duplicate: %v}", i, got.Err, got.Duplicate, w.err, w.dup)
		}
	}
	wantCounts(t, f, Counts{Peers: 1, Files: 1, Holdings: 1})
	if got := f.AppliedIndex(); got != 7 {
		t.Errorf("AppliedIndex: got %d, want 7", got)
	}
	checkDigest(t, f)

	nested := append([]byte{byte(CmdBatch), 1}, encodeUnchecked(t, Batch{Commands: [][]byte{enc(Batch{})}})[2:]...)
	if r := f.Apply(&raft.Log{Index: 8, Type: raft.LogCommand, Data: nested}).(Response); !errors.Is(r.Err, ErrInvalid) || r.Results != nil {
		t.Errorf("nested batch: got %+v, want ErrInvalid and no results", r)
	}
}

func TestApplyRejectsUnknownEncodings(t *testing.T) {
	good := mustEncode(t, joinA(1))
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrInvalid},
		{"one byte", []byte{1}, ErrInvalid},
		{"type 0", append([]byte{0}, good[1:]...), ErrUnknownCommand},
		{"type 200", append([]byte{200}, good[1:]...), ErrUnknownCommand},
		{"version 0", append([]byte{good[0], 0}, good[2:]...), ErrUnknownCommand},
		{"version 2", append([]byte{good[0], CommandVersion + 1}, good[2:]...), ErrUnknownCommand},
		{"truncated body", good[:len(good)-1], ErrInvalid},
		{"trailing byte", append(slices.Clone(good), 0), ErrInvalid},
		{"wrong body for type", append([]byte{byte(CmdLeavePeer), 1}, mustEncode(t, ExpirePeers{Peers: []PeerID{"a"}})[2:]...), ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			if r := n.applyBytes(tc.data); !errors.Is(r.Err, tc.want) {
				t.Fatalf("got %v, want %v", r.Err, tc.want)
			}
			if got := n.f.Counts(); got != (Counts{}) {
				t.Fatalf("Counts: got %+v, want empty", got)
			}
		})
	}
}

func TestNonCommandEntriesAdvanceAppliedIndex(t *testing.T) {
	f := New()
	logs := []*raft.Log{
		{Index: 1, Type: raft.LogConfiguration, Data: []byte("cfg")},
		{Index: 2, Type: raft.LogCommand, Data: mustEncode(t, joinA(1))},
		{Index: 3, Type: raft.LogNoop},
		{Index: 4, Type: raft.LogBarrier},
	}
	out := f.ApplyBatch(logs)
	if len(out) != len(logs) {
		t.Fatalf("ApplyBatch: got %d results, want %d", len(out), len(logs))
	}
	for i, r := range out {
		if _, isResp := r.(Response); isResp != (logs[i].Type == raft.LogCommand) {
			t.Errorf("result %d for %v: got %#v", i, logs[i].Type, r)
		}
	}
	if got := f.AppliedIndex(); got != 4 {
		t.Errorf("AppliedIndex after batch: got %d, want 4", got)
	}
	if got := f.Apply(&raft.Log{Index: 5, Type: raft.LogNoop}); got != nil {
		t.Errorf("Apply(noop): got %#v, want nil", got)
	}
	if got := f.AppliedIndex(); got != 5 {
		t.Errorf("AppliedIndex after noop: got %d, want 5", got)
	}
}

// The dedup window remembers exactly the last DedupWindow requests of a peer.
func TestDedupWindowForgetsOldestRequest(t *testing.T) {
	n := newNode(t)
	n.mustApply(joinA(1)) // request 1 is the first entry
	for req := uint64(2); req <= DedupWindow+1; req++ {
		n.mustApply(regA(req, meta(1, "a")))
	}
	// Window now holds 2..129; request 1 has been evicted.
	if r := n.apply(regA(2, meta(1, "a"))); !r.Duplicate {
		t.Fatalf("request 2: got %+v, want duplicate", r)
	}
	if r := n.apply(joinA(1)); r.Duplicate || r.Err != nil {
		t.Fatalf("request 1 after eviction: got %+v, want applied", r)
	}
	checkDigest(t, n.f)
	// Conflict outcomes survive eviction bookkeeping too.
	n.mustApply(joinB(1))
	bad := meta(1, "a")
	bad.Size++
	if r := n.apply(regB(2, bad)); !errors.Is(r.Err, ErrConflict) {
		t.Fatalf("conflict: got %v", r.Err)
	}
	for req := uint64(3); req <= DedupWindow+3; req++ {
		n.mustApply(regB(req, meta(2, "b")))
		checkDigest(t, n.f)
	}
	if r := n.apply(regB(2, bad)); !errors.Is(r.Err, ErrConflict) || r.Duplicate {
		t.Fatalf("conflict after eviction: got %+v, want a fresh conflict", r)
	}
}

// The conflict error names the file, on the first attempt and on a retry.
func TestConflictErrorNamesFile(t *testing.T) {
	n := newNode(t)
	n.mustApply(joinA(1))
	n.mustApply(regA(2, meta(1, "a")))
	bad := meta(1, "a")
	bad.PieceSize *= 2
	first := n.apply(regA(3, bad))
	retry := n.apply(regA(3, bad))
	for _, r := range []Response{first, retry} {
		if !errors.Is(r.Err, ErrConflict) || !strings.Contains(r.Err.Error(), string(fid(1))) {
			t.Fatalf("got %v, want ErrConflict naming %s", r.Err, fid(1))
		}
	}
	if first.Err.Error() != retry.Err.Error() {
		t.Fatalf("retry error %q differs from first %q", retry.Err, first.Err)
	}
}

func TestSearch(t *testing.T) {
	n := newNode(t)
	n.mustApply(joinA(1))
	n.mustApply(joinB(1))
	n.mustApply(regA(2, meta(1, "Big Buck Bunny.MP4"), meta(2, "talk.mp4"), meta(3, "STRASSE.txt"), meta(4, "notes")))
	n.mustApply(regB(2, meta(4, "Bunny notes")))
	ids := func(fs []FileInfo) []FileID {
		var out []FileID
		for _, f := range fs {
			out = append(out, f.ID)
		}
		return out
	}
	for _, tc := range []struct {
		query string
		limit int
		want  []FileID
	}{
		// Names sort byte-wise; file 4's name is the smaller of its two.
		{"", 0, []FileID{fid(1), fid(4), fid(3), fid(2)}},
		{"bunny", 0, []FileID{fid(1), fid(4)}},
		{"BUNNY mp4", 0, []FileID{fid(1)}},
		{"mp4", 1, []FileID{fid(1)}},
		{"strasse", 0, []FileID{fid(3)}},
		{"notes bunny", 0, []FileID{fid(4)}},
		{"nothing", 0, nil},
	} {
		if got := ids(n.f.Search(tc.query, tc.limit)); !slices.Equal(got, tc.want) {
			t.Errorf("Search(%q, %d): got %v, want %v", tc.query, tc.limit, got, tc.want)
		}
	}
}

func TestQueriesOnUnknownKeys(t *testing.T) {
	f := New()
	if _, _, ok := f.Lookup("not-an-id"); ok {
		t.Error("Lookup(malformed): got found")
	}
	if _, _, ok := f.Lookup(fid(1)); ok {
		t.Error("Lookup(absent): got found")
	}
	if _, ok := f.Peer("x"); ok {
		t.Error("Peer(absent): got found")
	}
	if got := f.PeerFiles("x"); got != nil {
		t.Errorf("PeerFiles(absent): got %v", got)
	}
	if got := f.Peers(); len(got) != 0 {
		t.Errorf("Peers: got %v", got)
	}
	if got := f.Search("", 0); len(got) != 0 {
		t.Errorf("Search: got %v", got)
	}
	if got, want := f.Digest(), f.recomputeDigest(); got != want || len(got) != 64 {
		t.Errorf("Digest of empty FSM: got %q, recomputed %q", got, want)
	}
}

// Holder sets and file sets switch between their slice and bucketed shapes;
// both must behave the same.
func TestLargeHolderAndFileSets(t *testing.T) {
	n := newNode(t)
	const peers, files = 40, 60
	var all []FileMeta
	for i := range files {
		all = append(all, meta(i, "f"))
	}
	for i := range peers {
		id := PeerID(fmt.Sprintf("p%02d", i))
		n.mustApply(JoinPeer{Peer: id, Token: tok(string(id)), Addr: "h:1", RequestID: 1, Time: 1})
		n.mustApply(RegisterFiles{Peer: id, Token: tok(string(id)), RequestID: 2, Files: all})
	}
	checkDigest(t, n.f)
	wantCounts(t, n.f, Counts{Peers: peers, Files: files, Holdings: peers * files})
	_, hs, _ := n.f.Lookup(fid(0))
	if len(hs) != peers || !slices.IsSortedFunc(hs, func(a, b Holder) int { return strings.Compare(string(a.Peer), string(b.Peer)) }) {
		t.Fatalf("Lookup: got %d holders (sorted: %v), want %d sorted", len(hs), slices.IsSortedFunc(hs, func(a, b Holder) int { return strings.Compare(string(a.Peer), string(b.Peer)) }), peers)
	}
	// Shrink back below the slice threshold, with a snapshot in between so
	// that copy-on-write of buckets is exercised.
	before := snapshotBytes(t, n.f)
	for i := range peers - 2 {
		id := PeerID(fmt.Sprintf("p%02d", i))
		var ids []FileID
		for j := range files - 3 {
			ids = append(ids, fid(j))
		}
		n.mustApply(UnregisterFiles{Peer: id, Token: tok(string(id)), RequestID: 3, Files: ids})
		checkDigest(t, n.f)
	}
	wantCounts(t, n.f, Counts{Peers: peers, Files: files, Holdings: 2*files + (peers-2)*3})
	if got := n.f.PeerFiles("p00"); len(got) != 3 {
		t.Fatalf("PeerFiles(p00): got %d files, want 3", len(got))
	}
	g := New()
	if err := restore(g, before); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, g, Counts{Peers: peers, Files: files, Holdings: peers * files})
}

// Search finds a file by any holder's name, also while the file has more
// holders than the exact-filter threshold and names change or go away.
func TestSearchWithManyHolders(t *testing.T) {
	n := newNode(t)
	universe := []FileID{fid(0), fid(1)}
	queries := []string{"holder-07", "der-2", "RENAMED-07", "renamed", "movie", "holder", "other"}
	peer := func(i int) (PeerID, Token) {
		id := PeerID(fmt.Sprintf("p%02d", i))
		return id, tok(string(id))
	}
	const holders = 30
	for i := range holders {
		id, tk := peer(i)
		n.mustApply(JoinPeer{Peer: id, Token: tk, Addr: "h:1", RequestID: 1, Time: 1})
		n.mustApply(RegisterFiles{Peer: id, Token: tk, RequestID: 2, Files: []FileMeta{
			meta(0, fmt.Sprintf("Holder-%02d Movie", i)), meta(1, "other"),
		}})
		checkSearch(t, n.f, universe, queries)
	}
	for i := range holders {
		id, tk := peer(i)
		n.mustApply(RegisterFiles{Peer: id, Token: tk, RequestID: 3, Files: []FileMeta{meta(0, fmt.Sprintf("renamed-%02d", i))}})
		checkSearch(t, n.f, universe, queries)
	}
	for i := range holders {
		id, tk := peer(i)
		n.mustApply(UnregisterFiles{Peer: id, Token: tk, RequestID: 4, Files: []FileID{fid(0)}})
		checkSearch(t, n.f, universe, queries)
	}
}

// Every command that carries the leader's clock moves LastCommandTime on,
// even when it is refused, and never back; one that carries none leaves
// it. A leader proposes times after it, so this is what keeps replicated
// time from going backwards across a leader change.
func TestLastCommandTimeFollowsClockedCommands(t *testing.T) {
	n := newNode(t)
	at := int64(100)
	for _, cmd := range []func(at int64) Command{
		func(at int64) Command {
			return JoinPeer{Peer: "p1", Token: tok("p1"), Addr: "127.0.0.1:1", RequestID: 1, Time: at}
		},
		func(at int64) Command { return ExpirePeers{Time: at} },
		func(at int64) Command {
			return Announce{InfoHash: InfoHash{1}, Peer: memPeer(1), IP: memIP(1), Port: 1, Time: at}
		},
		func(at int64) Command { return ExpireSwarmPeers{Time: at} },
		func(at int64) Command { return AnnounceBatch{Time: at} },
		func(at int64) Command { // refused: no such member
			return TrackerMember{Op: MemberRevoke, Name: "nobody", RequestID: 9, Time: at}
		},
		func(at int64) Command { return PrivateAnnounceBatch{MaxRate: DefaultMaxRate, Time: at} },
	} {
		at += 10
		c := cmd(at)
		n.apply(c)
		if got := n.f.LastCommandTime(); got != at {
			t.Fatalf("after %T at %d: LastCommandTime %d", c, at, got)
		}
	}
	n.apply(ExpirePeers{Time: 5}) // an older clock
	n.apply(TrackerPolicy{Mode: TrackerOpen, RequestID: 3})
	if got := n.f.LastCommandTime(); got != at {
		t.Fatalf("LastCommandTime %d after an older time and an unclocked command, want %d", got, at)
	}
}
