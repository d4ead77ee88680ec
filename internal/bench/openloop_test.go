package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"fileshare/btclient"
	"fileshare/tracker"
)

// The pacer sends event i at start + i/rate, never before it is due and
// at most a quantum after, waking at most once a quantum however high
// the rate: what the tracker sees is the offered rate, not bursts.
func TestPaceSendsEachEventWhenDue(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rate     float64
		d        time.Duration
		quantum  time.Duration
		want     int
		maxWakes int
	}{
		{"slow, no quantum", 1000, time.Second, 0, 1000, 1000},
		{"fast, batched", 100000, 100 * time.Millisecond, paceQuantum, 10000, 501},
		{"uneven interval", 3, 1100 * time.Millisecond, paceQuantum, 4, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now().Add(time.Millisecond)
				var dues []time.Time
				wakes := map[time.Time]bool{}
				n := pace(t.Context(), start, start.Add(tc.d), tc.rate, tc.quantum, func(due time.Time) {
					now := time.Now()
					if now.Before(due) || now.Sub(due) > tc.quantum {
						t.Fatalf("event due at +%s sent at +%s: want within [due, due+%s]", due.Sub(start), now.Sub(start), tc.quantum)
					}
					dues = append(dues, due)
					wakes[now] = true
				})
				if n != tc.want || len(dues) != tc.want {
					t.Fatalf("%d events (%d sent) at %v/s over %s, want %d", n, len(dues), tc.rate, tc.d, tc.want)
				}
				for i, due := range dues {
					if want := start.Add(time.Duration(float64(i) * float64(time.Second) / tc.rate)); !due.Equal(want) {
						t.Fatalf("event %d due at +%s, want +%s", i, due.Sub(start), want.Sub(start))
					}
				}
				if len(wakes) > tc.maxWakes {
					t.Errorf("%d wake-ups for %d events, want at most %d", len(wakes), n, tc.maxWakes)
				}
			})
		})
	}
}

// A pacer held up (a slow send, a descheduled generator) sends what fell
// due in the meantime at once instead of dropping it, so the offered
// count stays rate × duration and the lateness shows in due times.
func TestPaceCatchesUpAfterAStall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		late := 0
		n := pace(t.Context(), start, start.Add(time.Second), 100, paceQuantum, func(due time.Time) {
			if time.Since(due) > paceQuantum {
				late++
			}
			if due.Equal(start.Add(100 * time.Millisecond)) {
				time.Sleep(55 * time.Millisecond) // events at 110..150 ms fall due meanwhile
			}
		})
		if n != 100 || late != 5 {
			t.Fatalf("%d events, %d sent late after a 55 ms stall at 100/s; want 100 and 5", n, late)
		}
	})
}

// A cancelled context stops the pacer at its next sleep.
func TestPaceStopsWithCtx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		start := time.Now()
		n := pace(ctx, start, start.Add(time.Hour), 10, 0, func(due time.Time) {
			if due.Sub(start) >= time.Second {
				cancel()
			}
		})
		if n != 11 {
			t.Fatalf("%d events; want 11 (0 to 1 s at 10/s, then the cancel)", n)
		}
	})
}

// The pacers together offer the rate, split over every worker evenly,
// each pacer only to the workers it owns.
func TestPaceSharesSplitsTheRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const workers = 7
		var mu sync.Mutex
		per := make([]int, workers)
		owner := map[int]int{}
		start := time.Now()
		n := paceShares(t.Context(), workers, start, start.Add(time.Second), 7000, func(p, w int, _ time.Time) {
			mu.Lock()
			defer mu.Unlock()
			per[w]++
			if o, ok := owner[w]; ok && o != p {
				t.Errorf("worker %d driven by pacers %d and %d", w, o, p)
			}
			owner[w] = p
		})
		if n < 7000-pacerCount(workers) || n > 7000+pacerCount(workers) {
			t.Errorf("%d events at 7000/s for 1 s", n)
		}
		for w, c := range per {
			if c < 990 || c > 1010 {
				t.Errorf("worker %d got %d events, want about 1000 (all: %v)", w, c, per)
			}
		}
	})
}

// A flash crowd starts a new peer with every announce, only on the hot
// swarms, never one of the settled population, each (swarm, port) and
// peer ID once.
func TestFlashCrowdStartsNewPeersOnHotSwarms(t *testing.T) {
	const workers, swarms, hot = 3, 50, 4
	hotHash := map[[20]byte]bool{}
	for i := range hot {
		hotHash[SwarmHash(i)] = true
	}
	type key struct {
		hash [20]byte
		port uint16
	}
	seen := map[key]bool{}
	ids := map[[20]byte]bool{}
	for w := range workers {
		m := newPeerModel(9, w, workers, swarms, DefaultMix)
		var p btclient.Announce
		for range 3 * swarms / workers { // a settled warm-up
			m.next(&p, opStart)
			seen[key{p.InfoHash, p.Port}] = true
			ids[p.PeerID] = true
		}
	}
	for w := range workers {
		m := newPeerModel(9, w, workers, swarms, DefaultMix)
		m.hot = hot
		var p btclient.Announce
		for range 2000 {
			if k := m.draw(&p); k != opStart || p.Event != tracker.EventStarted || p.Left == 0 {
				t.Fatalf("flash crowd drew %s (event %d, left %d); want a started leecher", opNames[k], p.Event, p.Left)
			}
			if !hotHash[p.InfoHash] {
				t.Fatalf("a crowd peer on swarm %x, not a hot one", p.InfoHash)
			}
			k := key{p.InfoHash, p.Port}
			if seen[k] || ids[p.PeerID] {
				t.Fatalf("peer %x port %d announced twice", p.PeerID, p.Port)
			}
			seen[k], ids[p.PeerID] = true, true
		}
		if len(m.active) != 0 {
			t.Errorf("crowd peers joined the renewable population: %d", len(m.active))
		}
	}
}

// startFakeTracker serves f over proto on loopback and returns the
// announce URL.
func startFakeTracker(t *testing.T, f *fakeTracker, proto string) string {
	if proto == "http" {
		srv := httptest.NewServer(f)
		t.Cleanup(srv.Close)
		return srv.URL + "/announce"
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); f.serveUDP(pc) }()
	t.Cleanup(func() { pc.Close(); <-done })
	return "udp://" + pc.LocalAddr().String() + "/announce"
}

// Open loop, every announce due is accounted for: the tracker saw and
// answered exactly what the generator counts as answered, refusals are
// unanswered, and the count due is rate × duration.
func TestOpenLoopAccountsForEveryAnnounce(t *testing.T) {
	for _, proto := range []string{"http", "udp"} {
		t.Run(proto, func(t *testing.T) {
			f := newFakeTracker()
			target := startFakeTracker(t, f, proto)
			var out strings.Builder
			res, err := Announce(t.Context(), AnnounceConfig{
				Targets: []string{target}, Clients: 4, Swarms: 10, Warmup: 20, Seed: 3,
				Measure: []Measurement{MeasureOpen}, Rate: 1000, Duration: 300 * time.Millisecond, Timeout: 5 * time.Second,
			}, &out)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(out.String())
			r := res.Open
			if r == nil {
				t.Fatal("no open-loop result")
			}
			if r.Due < 299 || r.Due > 301 {
				t.Errorf("%d announces due at 1000/s for 300 ms", r.Due)
			}
			f.mu.Lock()
			answered := f.events[0] + f.events[2] + f.events[3] - res.Warmup.Answered()
			refused := f.refusals - res.Warmup.Failures[fakeReason]
			f.mu.Unlock()
			if r.Answered() != answered || r.Failures[fakeReason] != refused || refused == 0 {
				t.Errorf("counted %d answered and %d refused; the tracker answered %d and refused %d", r.Answered(), r.Failures[fakeReason], answered, refused)
			}
			if r.Answered()+r.Errors() != r.Due || r.Unsent != 0 {
				t.Errorf("answered %d + errors %d (%s) != due %d, unsent %d", r.Answered(), r.Errors(), r.errorSummary(), r.Due, r.Unsent)
			}
			if want := float64(refused) / float64(r.Due); r.UnansweredFraction() != want {
				t.Errorf("unanswered %.4f, want the refused share %.4f", r.UnansweredFraction(), want)
			}
			if !strings.Contains(out.String(), "announce "+proto+" open loop: offered 1000/s, answered ") {
				t.Errorf("no open-loop summary in %q", out.String())
			}
		})
	}
}

// Open loop, a tracker that answers connects but never announces does
// not slow the sender: every announce due is sent and counted as a
// timeout, within about a timeout of the end.
func TestOpenLoopCountsUnansweredAsTimeouts(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	announces := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		be := binary.BigEndian
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n == 16 && be.Uint32(buf[8:]) == tracker.UDPActionConnect {
				pc.WriteTo(be.AppendUint64(be.AppendUint32(be.AppendUint32(nil, tracker.UDPActionConnect), be.Uint32(buf[12:])), 77), from)
				continue
			}
			mu.Lock()
			announces++
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	begin := time.Now()
	res, err := Announce(t.Context(), AnnounceConfig{
		Targets: []string{"udp://" + pc.LocalAddr().String() + "/announce"}, Clients: 3, Swarms: 5, Warmup: -1,
		Measure: []Measurement{MeasureOpen}, Rate: 500, Duration: 200 * time.Millisecond, Timeout: 300 * time.Millisecond,
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Open
	mu.Lock()
	defer mu.Unlock()
	if r.Due != 100 || r.Timeouts != 100 || r.Answered() != 0 || announces != 100 || r.UnansweredFraction() != 1 {
		t.Errorf("due %d, timeouts %d, answered %d, the tracker got %d; want 100 due, sent and timed out", r.Due, r.Timeouts, r.Answered(), announces)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("took %s for 200 ms of load and a 300 ms timeout", took)
	}
}

// The search runs its steps against a real socket and reports each, with
// the CPU of the processes named (here the test's own).
func TestFindMaxRunsStepsAndReportsCPU(t *testing.T) {
	f := newFakeTracker()
	target := startFakeTracker(t, f, "udp")
	var out strings.Builder
	res, err := Announce(t.Context(), AnnounceConfig{
		Targets: []string{target}, Clients: 2, Swarms: 10, Warmup: 10,
		Measure: []Measurement{MeasureFindMax},
		FindMax: MaxSearch{Start: 200, Step: 100 * time.Millisecond, Budget: 350 * time.Millisecond},
		CPUPIDs: []int{os.Getpid()},
	}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	if res.Max == nil || len(res.Max.Steps) < 2 || res.Max.Steps[0].Offered != 200 {
		t.Fatalf("search result %+v; want at least 2 steps from 200/s", res.Max)
	}
	// Every step refuses swarm 3's announces (a tenth): nothing holds.
	if res.Max.Rate != 0 {
		t.Errorf("held %v (failed %v) with 10 %% refused; want none", res.Max.Rate, res.Max.Failed)
	}
	for _, want := range []string{"find-max step 1: offered 200/s not held", "cpu_us/announce=", "announce udp max sustained: 0 announces/s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in the output", want)
		}
	}
}

// One warm-up, then the measurements in order: the search starts at the
// closed loop's rate, the flash crowd only starts peers, and the tracker
// answered exactly what the measurements count together.
func TestMeasurementsRunInOrderAfterOneWarmup(t *testing.T) {
	f := newFakeTracker()
	target := startFakeTracker(t, f, "udp")
	var out strings.Builder
	res, err := Announce(t.Context(), AnnounceConfig{
		Targets: []string{target}, Clients: 3, Swarms: 20, Warmup: 30, Seed: 5,
		Duration: 200 * time.Millisecond, FlashDuration: 100 * time.Millisecond, HotSwarms: 2,
		Measure: []Measurement{MeasureClosed, MeasureFindMax, MeasureFlashCrowd},
		FindMax: MaxSearch{Step: 50 * time.Millisecond, Budget: 60 * time.Millisecond},
	}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	if res.Answered() == 0 || res.Max == nil || res.Flash == nil || res.Open != nil {
		t.Fatalf("closed %d answered, max %v, flash %v, open %v: want closed, max and flash results only", res.Answered(), res.Max, res.Flash, res.Open)
	}
	if got, want := res.Max.Steps[0].Offered, math.Round(res.Rate()); got != want || len(res.Max.Steps) != 1 {
		t.Errorf("the search offered %v first (%d steps); want the closed-loop rate %v, one step within its budget", got, len(res.Max.Steps), want)
	}
	if fl := res.Flash; fl.OK[opRenew]+fl.OK[opStop] != 0 || fl.OK[opStart] == 0 {
		t.Errorf("flash crowd answered %v by kind; want only starts", fl.OK)
	}
	total := res.Warmup.Answered() + res.Answered() + res.Flash.Answered()
	for _, st := range res.Max.Steps {
		total += st.Answered()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if seen := f.events[0] + f.events[2] + f.events[3]; seen != total {
		t.Errorf("the tracker answered %d announces, the measurements count %d", seen, total)
	}
	if n := strings.Count(out.String(), "warm-up"); n != 1 {
		t.Errorf("%d warm-ups, want 1", n)
	}
	if !strings.Contains(out.String(), "mix=flash-crowd(hot_swarms=2)") {
		t.Error("no flash-crowd summary line")
	}
}

func TestParseMeasurements(t *testing.T) {
	got, err := ParseMeasurements("closed, find-max,flash-crowd,open")
	if want := []Measurement{MeasureClosed, MeasureFindMax, MeasureFlashCrowd, MeasureOpen}; err != nil || !slices.Equal(got, want) {
		t.Errorf("got %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"", "closed,", "max", "closed;open"} {
		if _, err := ParseMeasurements(bad); !errors.Is(err, ErrBadMeasurement) {
			t.Errorf("ParseMeasurements(%q): %v, want ErrBadMeasurement", bad, err)
		}
	}
	if _, err := Announce(t.Context(), AnnounceConfig{Targets: []string{"udp://127.0.0.1:1/a"}, Measure: []Measurement{MeasureOpen}}, io.Discard); err == nil {
		t.Error("an open-loop measurement without a rate was accepted")
	}
}
