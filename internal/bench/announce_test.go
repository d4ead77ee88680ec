package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"fileshare/btclient"
	"fileshare/tracker"
)

func TestParseMix(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mix
		bad  bool
	}{
		{"changes=10,renew=85,stopped=5", Mix{10, 85, 5}, false},
		{"renew=1", Mix{0, 1, 0}, false},
		{" stopped=2 , changes=3", Mix{3, 0, 2}, false},
		{"changes=0,renew=0", Mix{}, true},
		{"changes=-1,renew=5", Mix{}, true},
		{"completed=5", Mix{}, true},
		{"renew", Mix{}, true},
		{"renew=x", Mix{}, true},
		{"", Mix{}, true},
	} {
		got, err := ParseMix(tc.in)
		if tc.bad {
			if !errors.Is(err, ErrBadMix) {
				t.Errorf("ParseMix(%q) = %v, %v; want ErrBadMix", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseMix(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if again, err := ParseMix(got.String()); err != nil || again != got {
			t.Errorf("ParseMix(%q.String()) = %v, %v; want it back", got, again, err)
		}
	}
}

// Drawn kinds follow the mix's weights (seeded, so the counts are fixed).
func TestMixPickFollowsWeights(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var n [numOpKinds]int
	const draws = 100000
	for range draws {
		n[DefaultMix.pick(r)]++
	}
	for k, want := range []int{10, 85, 5} {
		if got := float64(n[k]) * 100 / draws; got < float64(want)-1 || got > float64(want)+1 {
			t.Errorf("%s: %.1f%% of draws, want %d%% ± 1", opNames[k], got, want)
		}
	}
	if (Mix{Renew: 1}).pick(r) != opRenew {
		t.Error("a renew-only mix drew something else")
	}
}

// The model renews and stops only peers it started and has not stopped,
// workers never share a peer, peers of one swarm differ by port and
// peer_id, and one seed gives one sequence.
func TestPeerModelKeepsAConsistentPopulation(t *testing.T) {
	const workers, swarms = 3, 7
	type key struct {
		hash [20]byte
		port uint16
	}
	run := func() []btclient.Announce {
		var out []btclient.Announce
		byPeer := map[[20]byte]int{} // peer ID -> worker
		active := map[[20]byte]bool{}
		swarmPorts := map[key][20]byte{}
		for w := range workers {
			m := newPeerModel(42, w, workers, swarms, Mix{Changes: 30, Renew: 50, Stopped: 20})
			for range 500 {
				var p btclient.Announce
				k := m.next(&p, m.mix.pick(m.rng))
				out = append(out, p)
				if o, ok := byPeer[p.PeerID]; ok && o != w {
					t.Fatalf("workers %d and %d both announce peer %x", o, w, p.PeerID)
				}
				byPeer[p.PeerID] = w
				if id, ok := swarmPorts[key{p.InfoHash, p.Port}]; ok && id != p.PeerID {
					t.Fatalf("peers %x and %x share port %d in one swarm", id, p.PeerID, p.Port)
				}
				swarmPorts[key{p.InfoHash, p.Port}] = p.PeerID
				switch k {
				case opStart:
					if active[p.PeerID] || p.Event != tracker.EventStarted {
						t.Fatalf("start of peer %x that is active=%v, event %d", p.PeerID, active[p.PeerID], p.Event)
					}
					active[p.PeerID] = true
				case opRenew, opStop:
					if !active[p.PeerID] {
						t.Fatalf("%s of peer %x that is not active", opNames[k], p.PeerID)
					}
					if k == opStop {
						if p.Event != tracker.EventStopped || p.NumWant != 0 {
							t.Fatalf("stop sent event %d numwant %d, want 3 and 0", p.Event, p.NumWant)
						}
						delete(active, p.PeerID)
					} else if p.Event != tracker.EventNone {
						t.Fatalf("renew sent event %d, want none", p.Event)
					}
				}
			}
			mine := 0
			for id := range active {
				if byPeer[id] == w {
					mine++
				}
			}
			if mine != len(m.active) {
				t.Fatalf("worker %d's model counts %d active peers, the announces leave %d", w, len(m.active), mine)
			}
		}
		return out
	}
	a, b := run(), run()
	if len(a) != len(b) {
		t.Fatal("two runs with one seed differ in length")
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("announce %d differs between two runs with one seed: %+v vs %+v", i, a[i], b[i])
		}
	}
}

// A renew or stop with nobody active starts a peer instead.
func TestPeerModelStartsWhenNobodyIsActive(t *testing.T) {
	m := newPeerModel(1, 0, 1, 10, DefaultMix)
	var p btclient.Announce
	if k := m.next(&p, opStop); k != opStart || p.Event != tracker.EventStarted {
		t.Fatalf("stop with nobody active: got %s, event %d; want a start", opNames[k], p.Event)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestAnnounceStatsSplitsErrorsByKind(t *testing.T) {
	var a, b AnnounceStats
	a.record(opStart, 3, time.Millisecond, nil)
	a.record(opRenew, 1, 2*time.Millisecond, nil)
	a.record(opRenew, 0, 0, &net.OpError{Op: "read", Err: timeoutErr{}})
	a.record(opStop, 0, 0, &btclient.FailureError{Reason: "swarm full"})
	b.record(opStop, 0, 0, &btclient.FailureError{Reason: "swarm full"})
	b.record(opStop, 0, 0, &btclient.FailureError{Reason: "denied"})
	b.record(opStart, 0, 0, errors.New("connection refused"))
	b.record(opRenew, 0, 0, fmt.Errorf("%w: %w", errClosed, io.ErrUnexpectedEOF))
	b.record(opStop, 0, 5*time.Millisecond, nil)
	a.add(&b)
	if a.OK != [numOpKinds]int{1, 1, 1} || a.Answered() != 3 || len(a.Lat) != 3 || a.Peers != 4 {
		t.Errorf("ok=%v answered=%d lat=%d peers=%d, want [1 1 1], 3, 3, 4", a.OK, a.Answered(), len(a.Lat), a.Peers)
	}
	if a.Timeouts != 1 || a.Closed != 1 || a.Failures["swarm full"] != 2 || a.Failures["denied"] != 1 || a.Other != 1 || a.Errors() != 6 {
		t.Errorf("timeouts=%d closed=%d failures=%v other=%d errors=%d, want 1, 1, swarm full 2 and denied 1, 1, 6", a.Timeouts, a.Closed, a.Failures, a.Other, a.Errors())
	}
	want := `timeouts=1 closed_unanswered=1 failure("denied")=1 failure("swarm full")=2 other=1 (first: connection refused)`
	if got := a.errorSummary(); got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	if got := (&AnnounceStats{}).errorSummary(); got != "none" {
		t.Errorf("summary of no errors %q, want none", got)
	}
}

// fakeTracker is a minimal HTTP and UDP tracker written from the specs for
// the tests: it counts what it answered, by event, and refuses announces
// for one swarm with a failure reason.
type fakeTracker struct {
	refused [20]byte

	mu        sync.Mutex
	events    [4]int // answered announces by BEP 15 event number
	refusals  int
	connects  int
	unknown   int // renews or stops of peers never started (outside the refused swarm)
	active    map[string]bool
	httpConns int
}

const fakeReason = "this swarm is refused"

func newFakeTracker() *fakeTracker {
	return &fakeTracker{refused: SwarmHash(3), active: map[string]bool{}}
}

// saw counts one announce and says whether to refuse it.
func (f *fakeTracker) saw(hash, peer []byte, event int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if bytes.Equal(hash, f.refused[:]) {
		f.refusals++
		return true
	}
	k := string(hash) + string(peer)
	switch event {
	case 2:
		f.active[k] = true
	case 0, 3:
		if !f.active[k] {
			f.unknown++
		}
		if event == 3 {
			delete(f.active, k)
		}
	}
	f.events[event]++
	return false
}

func (f *fakeTracker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	ih, pid := q.Get("info_hash"), q.Get("peer_id")
	if err != nil || r.URL.Path != "/announce" || len(ih) != 20 || len(pid) != 20 || q.Get("compact") != "1" || q.Get("port") == "" {
		http.Error(w, "bad announce", http.StatusBadRequest)
		return
	}
	ev := map[string]int{"": 0, "completed": 1, "started": 2, "stopped": 3}[q.Get("event")]
	if f.saw([]byte(ih), []byte(pid), ev) {
		fmt.Fprintf(w, "d14:failure reason%d:%se", len(fakeReason), fakeReason)
		return
	}
	if ev == 3 { // the next request comes on a fresh connection
		w.Header().Set("Connection", "close")
	}
	io.WriteString(w, "d8:intervali1800e5:peers12:\x7f\x00\x00\x01\x1a\xe1\x7f\x00\x00\x01\x1a\xe2e")
}

// serveUDP answers BEP 15 connects and announces on pc until it is closed.
func (f *fakeTracker) serveUDP(pc net.PacketConn) {
	const connID = 0x5eed
	buf := make([]byte, 1500)
	be := binary.BigEndian
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		b := buf[:n]
		switch {
		case n == 16 && be.Uint64(b) == tracker.UDPProtocolID && be.Uint32(b[8:]) == 0:
			f.mu.Lock()
			f.connects++
			f.mu.Unlock()
			pc.WriteTo(be.AppendUint64(be.AppendUint32(be.AppendUint32(nil, 0), be.Uint32(b[12:])), connID), from)
		case n >= 98 && be.Uint64(b) == connID && be.Uint32(b[8:]) == 1:
			tid := be.Uint32(b[12:])
			if f.saw(b[16:36], b[36:56], int(be.Uint32(b[80:]))) {
				pc.WriteTo(append(be.AppendUint32(be.AppendUint32(nil, 3), tid), fakeReason...), from)
				continue
			}
			out := be.AppendUint32(be.AppendUint32(be.AppendUint32(be.AppendUint32(be.AppendUint32(nil, 1), tid), 1800), 1), 1)
			pc.WriteTo(append(out, 127, 0, 0, 1, 0x1a, 0xe1), from)
		}
	}
}

// The generator counts exactly what the tracker answered, by kind and by
// failure reason, over both protocols; it renews and stops only peers it
// started; and over UDP it reuses one connection ID per socket.
func TestAnnounceCountsWhatTheTrackerSaw(t *testing.T) {
	for _, proto := range []string{"http", "udp"} {
		t.Run(proto, func(t *testing.T) {
			f := newFakeTracker()
			var target string
			if proto == "http" {
				srv := httptest.NewUnstartedServer(f)
				srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
					if s == http.StateNew {
						f.mu.Lock()
						f.httpConns++
						f.mu.Unlock()
					}
				}
				srv.Start()
				t.Cleanup(srv.Close)
				target = srv.URL + "/announce"
			} else {
				pc, err := net.ListenPacket("udp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				done := make(chan struct{})
				go func() { defer close(done); f.serveUDP(pc) }()
				t.Cleanup(func() { pc.Close(); <-done })
				target = "udp://" + pc.LocalAddr().String() + "/announce"
			}
			var out strings.Builder
			res, err := Announce(t.Context(), AnnounceConfig{
				Targets: []string{target}, Clients: 4, Swarms: 10, Warmup: 40,
				Duration: 200 * time.Millisecond, Timeout: 10 * time.Second, Seed: 7,
			}, &out)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(out.String())
			f.mu.Lock()
			defer f.mu.Unlock()
			all := res.AnnounceStats
			all.add(&res.Warmup)
			if got, want := [3]int{all.OK[opStart], all.OK[opRenew], all.OK[opStop]}, [3]int{f.events[2], f.events[0], f.events[3]}; got != want {
				t.Errorf("counted started/renew/stopped %v, the tracker answered %v", got, want)
			}
			if all.Failures[fakeReason] != f.refusals || f.refusals == 0 || all.Errors() != f.refusals {
				t.Errorf("counted failures %v (errors %d: %s), the tracker refused %d", all.Failures, all.Errors(), all.errorSummary(), f.refusals)
			}
			if res.Answered() == 0 || res.OK[opRenew] == 0 || res.Warmup.OK[opStart]+res.Warmup.Failures[fakeReason] != 40 {
				t.Errorf("measured %d answers (%d renews); warm-up %+v: want renews after a 40-peer warm-up", res.Answered(), res.OK[opRenew], res.Warmup.OK)
			}
			if f.unknown != 0 {
				t.Errorf("the tracker got %d renews or stops of peers never started", f.unknown)
			}
			// One connect per socket, and one more after two refusals
			// in a row (1 in 10 of the refusals here).
			if proto == "udp" && (all.Connects < 4 || all.Connects > 4+f.refusals/4) {
				t.Errorf("%d UDP connects from 4 sockets within a minute and %d refusals, want 4 plus about a tenth of the refusals", all.Connects, f.refusals)
			}
			if proto == "udp" && f.connects != all.Connects {
				t.Errorf("the tracker answered %d connects, the generator counted %d", f.connects, all.Connects)
			}
			if proto == "http" && f.httpConns > 4+f.events[3] {
				t.Errorf("%d HTTP connections for 4 workers and %d closing answers: keep-alive is not used", f.httpConns, f.events[3])
			}
			if res.LeaderChanges != -1 {
				t.Errorf("leader changes %d without a cluster, want -1", res.LeaderChanges)
			}
			if !strings.Contains(out.String(), "announces/s") {
				t.Errorf("no summary line in %q", out.String())
			}
		})
	}
}

// A bad URL is refused before anything is sent, with what to write.
func TestAnnounceRejectsBadTargets(t *testing.T) {
	for _, target := range []string{"ftp://127.0.0.1:1/announce", "udp://127.0.0.1/announce", "::"} {
		if _, err := Announce(t.Context(), AnnounceConfig{Targets: []string{target}, Clients: 1}, io.Discard); err == nil {
			t.Errorf("Announce accepted target %q", target)
		}
	}
	if _, err := Announce(t.Context(), AnnounceConfig{Targets: []string{"udp://127.0.0.1:1/a", "http://127.0.0.1:1/a"}, Clients: 2}, io.Discard); err == nil {
		t.Error("Announce accepted a mix of protocols")
	}
}

func TestWriteSwarmListMatchesSwarmHash(t *testing.T) {
	var b strings.Builder
	if err := WriteSwarmList(&b, 3); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	h := SwarmHash(2)
	if len(lines) != 3 || lines[2] != fmt.Sprintf("%x", h) {
		t.Fatalf("got %q, want 3 lines ending %x", lines, h)
	}
}

func TestParseHeapAlloc(t *testing.T) {
	in := "heap profile: 1: 2 [3: 4] @ heap/1048576\n# runtime.MemStats\n# Alloc = 5\n# HeapAlloc = 123456\n# HeapSys = 9\n"
	if got, err := parseHeapAlloc(strings.NewReader(in)); err != nil || got != 123456 {
		t.Fatalf("got %d, %v; want 123456", got, err)
	}
	if _, err := parseHeapAlloc(strings.NewReader("404 page not found")); err == nil {
		t.Fatal("no error for a page without MemStats")
	}
}

// A tracker that never answers is measured, not fatal: HTTP connections
// closed unanswered and UDP announces unanswered are counted by kind, and
// a warm-up that starts nobody says so.
func TestAnnounceCountsUnansweredRequests(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-accepted })
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })

	res, err := Announce(t.Context(), AnnounceConfig{Targets: []string{"http://" + ln.Addr().String() + "/announce"}, Clients: 1, Warmup: 5}, io.Discard)
	if !errors.Is(err, ErrNoPeerStarted) || res.Warmup.Closed != 5 || res.Warmup.Errors() != 5 {
		t.Errorf("HTTP: err %v, warm-up closed=%d errors=%d; want ErrNoPeerStarted and 5 closed", err, res.Warmup.Closed, res.Warmup.Errors())
	}
	res, err = Announce(t.Context(), AnnounceConfig{Targets: []string{"udp://" + pc.LocalAddr().String() + "/announce"}, Clients: 1, Warmup: 2, Timeout: 50 * time.Millisecond}, io.Discard)
	if !errors.Is(err, ErrNoPeerStarted) || res.Warmup.Timeouts != 2 || res.Warmup.Connects != 2 {
		t.Errorf("UDP: err %v, warm-up timeouts=%d connects=%d; want ErrNoPeerStarted, 2 timeouts, a connect tried for each", err, res.Warmup.Timeouts, res.Warmup.Connects)
	}
}
