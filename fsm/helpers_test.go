package fsm

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

func tok(s string) Token { return sha256.Sum256([]byte("secret:" + s)) }

// fid returns a deterministic valid FileID.
func fid(n int) FileID {
	h := sha256.Sum256([]byte(fmt.Sprint("file", n)))
	return FileID(hex.EncodeToString(h[:]))
}

func meta(n int, name string) FileMeta {
	return FileMeta{ID: fid(n), Name: name, Size: int64(1000 * (n + 1)), PieceSize: 1 << 18}
}

func mustEncode(tb testing.TB, cmd Command) []byte {
	tb.Helper()
	b, err := Encode(cmd)
	if err != nil {
		tb.Fatalf("Encode(%#v): %v", cmd, err)
	}
	return b
}

// encodeUnchecked encodes cmd like Encode but without validation, to build
// invalid log entries.
func encodeUnchecked(tb testing.TB, cmd Command) []byte {
	tb.Helper()
	var body []byte
	if err := codec.NewEncoderBytes(&body, msgpackHandle).Encode(cmd); err != nil {
		tb.Fatalf("encode: %v", err)
	}
	return append([]byte{byte(cmd.Type()), CommandVersion}, body...)
}

// node wraps an FSM with a log index counter.
type node struct {
	tb    testing.TB
	f     *FSM
	index uint64
}

func newNode(tb testing.TB) *node { return &node{tb: tb, f: New()} }

func (n *node) log(data []byte) *raft.Log {
	n.index++
	return &raft.Log{Index: n.index, Term: 1, Type: raft.LogCommand, Data: data}
}

func (n *node) applyBytes(data []byte) Response {
	n.tb.Helper()
	r, ok := n.f.Apply(n.log(data)).(Response)
	if !ok {
		n.tb.Fatalf("Apply returned %T, want Response", r)
	}
	return r
}

func (n *node) apply(cmd Command) Response {
	n.tb.Helper()
	return n.applyBytes(mustEncode(n.tb, cmd))
}

// mustApply applies cmd and fails the test unless it succeeds.
func (n *node) mustApply(cmd Command) Response {
	n.tb.Helper()
	r := n.apply(cmd)
	if r.Err != nil || r.Duplicate {
		n.tb.Fatalf("apply %T: got %+v, want success", cmd, r)
	}
	return r
}

// memSink is an in-memory raft.SnapshotSink.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func persist(tb testing.TB, snap raft.FSMSnapshot) []byte {
	tb.Helper()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		tb.Fatalf("Persist: %v", err)
	}
	if !sink.closed {
		tb.Fatalf("Persist did not close the sink")
	}
	snap.Release()
	return sink.Bytes()
}

func snapshotBytes(tb testing.TB, f *FSM) []byte {
	tb.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		tb.Fatalf("Snapshot: %v", err)
	}
	return persist(tb, snap)
}

func restore(f *FSM, b []byte) error { return f.Restore(io.NopCloser(bytes.NewReader(b))) }

// view is everything the queries reveal, for comparing two FSMs.
type view struct {
	Digest    string
	Applied   uint64
	Counts    Counts
	Peers     []PeerInfo
	PeerFiles map[PeerID][]FileID
	Files     map[FileID]lookupResult
	Search    map[string][]FileInfo
	Swarms    swarmsView
}

// swarmsView is everything the swarm queries reveal over the generator's
// hashes and addresses.
type swarmsView struct {
	Stats      [2]int
	Mode       TrackerMode
	Allow      []InfoHash
	Deny       []InfoHash
	Allowed    []bool
	Scrape     [][3]int
	Peers      [][]SwarmPeerInfo // as a leecher, then as a seeder, per hash
	EntriesFor []int
}

func swarmsViewOf(f *FSM) swarmsView {
	var v swarmsView
	v.Stats[0], v.Stats[1] = f.SwarmStats()
	v.Mode, v.Allow, v.Deny = f.TrackerPolicyState()
	for i := range genHashes {
		ih := genHash(i)
		v.Allowed = append(v.Allowed, f.TrackerAllowed(ih))
		c, in, d := f.Scrape(ih)
		v.Scrape = append(v.Scrape, [3]int{c, in, d})
		for _, seeder := range []bool{false, true} {
			peers, _, _ := f.SwarmPeers(ih, genSwarmPeer(i), 5, seeder, uint64(i)*7919)
			v.Peers = append(v.Peers, peers)
		}
		for j := range genSwarmPeers {
			if p, ok := f.SwarmPeer(ih, genSwarmPeer(j)); ok {
				v.Peers = append(v.Peers, []SwarmPeerInfo{p})
			}
		}
	}
	for _, a := range genSwarmIPs {
		v.EntriesFor = append(v.EntriesFor, f.SwarmEntriesFrom(ip(a)))
	}
	return v
}

type lookupResult struct {
	Info    FileInfo
	Holders []Holder
}

var searchQueries = []string{"", "a", "MOVIE", "movie talk", "ß", "x y z", "  e  ", "STRASSE", "straße", "tes", "mp4 movie", "ie.m", "zz"}

// naiveSearch is Search by definition, built from Lookup, to check the
// bigram filter and the top-k selection.
func naiveSearch(f *FSM, universe []FileID, query string, limit int) []FileInfo {
	words := strings.Fields(strings.ToLower(query))
	var out []FileInfo
	for _, id := range universe {
		info, holders, ok := f.Lookup(id)
		if !ok {
			continue
		}
		for _, h := range holders {
			lower := strings.ToLower(h.Name)
			all := true
			for _, w := range words {
				all = all && strings.Contains(lower, w)
			}
			if all {
				out = append(out, info)
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b FileInfo) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(string(a.ID), string(b.ID)))
	})
	return out[:min(limit, len(out))]
}

func checkSearch(tb testing.TB, f *FSM, universe []FileID, queries []string) {
	tb.Helper()
	for _, q := range queries {
		for _, limit := range []int{1, 3, 100} {
			got, want := f.Search(q, limit), naiveSearch(f, universe, q, limit)
			if len(got) != 0 || len(want) != 0 {
				if !reflect.DeepEqual(got, want) {
					tb.Fatalf("Search(%q, %d): got %v, want %v", q, limit, got, want)
				}
			}
		}
	}
}

func viewOf(f *FSM, fileUniverse []FileID) view {
	v := view{
		Digest:    f.Digest(),
		Applied:   f.AppliedIndex(),
		Counts:    f.Counts(),
		Peers:     f.Peers(),
		PeerFiles: map[PeerID][]FileID{},
		Files:     map[FileID]lookupResult{},
		Search:    map[string][]FileInfo{},
		Swarms:    swarmsViewOf(f),
	}
	for _, p := range v.Peers {
		v.PeerFiles[p.ID] = f.PeerFiles(p.ID)
	}
	for _, id := range fileUniverse {
		if info, hs, ok := f.Lookup(id); ok {
			v.Files[id] = lookupResult{info, hs}
		}
	}
	for _, q := range searchQueries {
		v.Search[q] = f.Search(q, 5)
		v.Search[q+"/all"] = f.Search(q, MaxSearchLimit)
	}
	return v
}

func diffViews(tb testing.TB, got, want view) {
	tb.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range gv.NumField() {
		if !reflect.DeepEqual(gv.Field(i).Interface(), wv.Field(i).Interface()) {
			tb.Errorf("%s: got %+v, want %+v", gv.Type().Field(i).Name, gv.Field(i).Interface(), wv.Field(i).Interface())
		}
	}
}

func checkDigest(tb testing.TB, f *FSM) {
	tb.Helper()
	if got, want := f.Digest(), f.recomputeDigest(); got != want {
		tb.Fatalf("incremental digest %s, recomputed %s", got, want)
	}
}

// persistInBackground takes a snapshot of f and persists it on another
// goroutine, as raft does while Apply goes on; wg tracks it.
func persistInBackground(t *testing.T, f *FSM, wg *sync.WaitGroup) {
	t.Helper()
	snap, _ := f.Snapshot()
	wg.Go(func() {
		var sink memSink
		if err := snap.Persist(&sink); err != nil {
			t.Error(err)
		}
		snap.Release()
	})
}
