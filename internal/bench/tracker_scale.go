package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"fileshare/btclient"
	"fileshare/client"
	"fileshare/internal/freeport"
	"fileshare/tracker"
)

// TrackerCluster is a Cluster whose masters also serve the BitTorrent
// tracker, each on HTTP and UDP ports of its own on 127.0.0.1.
type TrackerCluster struct {
	*Cluster
	HTTP []string // master i's announce URL http://HOST:PORT/announce
	UDP  []string // master i's announce URL udp://HOST:PORT/announce
}

// StartTrackerCluster starts n masters as StartCluster does, with extra
// master flags, then gives each its tracker ports and restarts it from
// its data dir (StartCluster's flags are the same for every master, the
// ports are not), and waits for a leader again.
func StartTrackerCluster(ctx context.Context, binary, dir string, n int, secure bool, extra ...string) (*TrackerCluster, error) {
	c, err := StartCluster(ctx, binary, dir, n, secure, extra...)
	if err != nil {
		return nil, err
	}
	tc := &TrackerCluster{Cluster: c}
	for i := range n {
		if _, err := c.procs.Terminate(i, 10*time.Second); err != nil {
			c.Close()
			return nil, err
		}
	}
	for i := range n {
		h, err := freeport.Addr("127.0.0.1")
		if err != nil {
			c.Close()
			return nil, err
		}
		u, err := freeUDP()
		if err != nil {
			c.Close()
			return nil, err
		}
		s := c.procs.Spec(i)
		s.Flags = append(s.Flags, "--tracker-http", h, "--tracker-udp", u)
		if err := c.procs.SetSpec(i, s); err != nil {
			c.Close()
			return nil, err
		}
		tc.HTTP = append(tc.HTTP, "http://"+h+"/announce")
		tc.UDP = append(tc.UDP, "udp://"+u+"/announce")
	}
	if err := startAll(ctx, c, n); err != nil {
		return nil, err
	}
	return tc, nil
}

// freeUDP returns 127.0.0.1:port with a UDP port that was free a moment
// ago (freeport checks TCP).
func freeUDP() (string, error) {
	for range 100 {
		a, err := freeport.Addr("127.0.0.1")
		if err != nil {
			return "", err
		}
		pc, err := net.ListenPacket("udp", a)
		if err == nil {
			pc.Close()
			return a, nil
		}
	}
	return "", fmt.Errorf("no free UDP port on 127.0.0.1")
}

// StatusClient returns the client that polls the masters' status (with
// the admin certificate under TLS). The Cluster owns it.
func (c *Cluster) StatusClient() *client.Client { return c.client }

// HTTPAddr returns master i's status HTTP address (/v1/status, and
// /debug/pprof when it runs with --enable-pprof).
func (c *Cluster) HTTPAddr(i int) string { return c.procs.Spec(i).HTTP }

// heapAlloc reads a master's live heap: it asks /debug/pprof/heap to
// collect garbage first (gc=1) and reads the "# HeapAlloc = N" line of
// the runtime.MemStats that debug=1 prints. The master must run with
// --enable-pprof.
func heapAlloc(ctx context.Context, httpAddr string) (uint64, error) {
	resp, err := getPprof(ctx, httpAddr, "heap", "debug=1&gc=1")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return parseHeapAlloc(resp.Body)
}

// getPprof GETs /debug/pprof/PROFILE?QUERY from the master whose HTTP
// server is at httpAddr. It returns the response, whose body the caller
// closes, only for a 200; any other status is an error that asks
// whether the master runs with --enable-pprof.
func getPprof(ctx context.Context, httpAddr, profile, query string) (*http.Response, error) {
	resp, err := httpGet(ctx, "http://"+httpAddr+"/debug/pprof/"+profile+"?"+query)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET /debug/pprof/%s on %s: %s (was the master process started with --enable-pprof?)", profile, httpAddr, resp.Status)
	}
	return resp, nil
}

// httpGet GETs url with http.DefaultClient, bounded by ctx. The caller
// closes the response body.
func httpGet(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return http.DefaultClient.Do(req)
}

// parseHeapAlloc finds "# HeapAlloc = N" in a debug=1 heap profile.
func parseHeapAlloc(r io.Reader) (uint64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no \"# HeapAlloc = \" line in the heap profile")
}

// CPUProfile writes a CPU profile of master i over d (its
// /debug/pprof/profile; the master must run with --enable-pprof) to
// path.
func (c *Cluster) CPUProfile(ctx context.Context, i int, d time.Duration, path string) error {
	secs := max(1, int(d/time.Second))
	resp, err := getPprof(ctx, c.HTTPAddr(i), "profile", fmt.Sprintf("seconds=%d", secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// TrackerScaleResult is one tracker-scale run.
type TrackerScaleResult struct {
	Peers, Swarms  int
	Fill           time.Duration // time to announce every peer
	Errors         int           // announces that failed during the fill
	HeapBefore     uint64        // the leader's live heap before the fill
	HeapAfter      uint64        // and after
	Snapshot       time.Duration // the leader's snapshot of the filled index
	RestartToReady time.Duration // a follower's SIGKILL-restart until ready and caught up
}

// BytesPerPeer is the leader's live-heap growth per swarm entry.
func (r TrackerScaleResult) BytesPerPeer() float64 {
	return (float64(r.HeapAfter) - float64(r.HeapBefore)) / float64(max(r.Peers, 1))
}

// TrackerScale fills c's tracker with peers swarm entries over swarms
// info-hashes by UDP started announces from 64 sockets spread over every
// master, then measures the leader's live heap per entry, the time of a
// snapshot on the leader, and how long a follower takes from SIGKILL and
// restart until it is ready and has applied what the leader had. The
// masters must run with --enable-pprof, a --tracker-max-peers of at least
// peers, a --tracker-max-peers-per-ip above peers (they all come from
// 127.0.0.1) and a peer lifetime longer than the fill. It writes progress
// lines and one summary line to w.
func TrackerScale(ctx context.Context, c *TrackerCluster, peers, swarms int, w io.Writer) (TrackerScaleResult, error) {
	res := TrackerScaleResult{Peers: peers, Swarms: swarms}
	leader, err := c.WaitLeader(ctx, -1)
	if err != nil {
		return res, err
	}
	if res.HeapBefore, err = heapAlloc(ctx, c.HTTPAddr(leader)); err != nil {
		return res, err
	}
	const workers = 64
	var next, done, failed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for i := range workers {
		ann, err := newAnnouncer(c.UDP[i%len(c.UDP)], uint64(i))
		if err != nil {
			return res, err
		}
		m := newPeerModel(1, 0, 1, swarms, DefaultMix)
		wg.Go(func() {
			defer ann.close()
			var p btclient.Announce
			for ctx.Err() == nil {
				g := int(next.Add(1) - 1)
				if g >= peers {
					return
				}
				p.Event = tracker.EventStarted
				m.fill(&p, g)
				if _, err := ann.announce(&p, time.Now().Add(10*time.Second)); err != nil {
					if failed.Add(1) == 1 {
						firstErr.Store(err)
					}
					continue
				}
				if n := done.Add(1); n%100000 == 0 {
					fmt.Fprintf(w, "tracker-scale: %d peers announced, %.0f/s\n", n, float64(n)/time.Since(start).Seconds())
				}
			}
		})
	}
	wg.Wait()
	res.Fill = time.Since(start)
	res.Errors = int(failed.Load())
	if err := ctx.Err(); err != nil {
		return res, err
	}
	fmt.Fprintf(w, "tracker-scale: announced %d peers over %d swarms in %s (%.0f/s), errors=%d",
		done.Load(), swarms, res.Fill.Round(time.Millisecond), float64(done.Load())/res.Fill.Seconds(), res.Errors)
	if e, ok := firstErr.Load().(error); ok {
		fmt.Fprintf(w, " (first: %v)", e)
	}
	fmt.Fprintln(w)
	if int(done.Load()) < peers {
		return res, fmt.Errorf("only %d of %d announces were answered; see the errors above", done.Load(), peers)
	}

	if leader, err = c.WaitLeader(ctx, -1); err != nil {
		return res, err
	}
	pol, err := c.client.TrackerList(ctx, client.ReadLinearizable)
	if err != nil {
		return res, fmt.Errorf("count the swarm entries: %w", err)
	}
	if pol.Peers < peers {
		return res, fmt.Errorf("the tracker holds %d swarm entries, want %d", pol.Peers, peers)
	}
	if res.HeapAfter, err = heapAlloc(ctx, c.HTTPAddr(leader)); err != nil {
		return res, err
	}

	snap, err := c.client.Snapshot(ctx, c.Addrs()[leader])
	if err != nil {
		return res, fmt.Errorf("snapshot: %w", err)
	}
	res.Snapshot = time.Duration(snap.DurationMillis) * time.Millisecond
	lst, err := c.Status(ctx, leader)
	if err != nil {
		return res, err
	}
	if res.RestartToReady, err = c.restartFollowerToReady(ctx, leader, func(st client.Status) bool { return st.AppliedIndex >= lst.AppliedIndex }); err != nil {
		return res, err
	}
	fmt.Fprintf(w, "tracker-scale: peers=%d swarms=%d leader_heap_per_peer=%.1fB (live heap %.1fMiB -> %.1fMiB) fill=%s snapshot=%s restart_to_ready=%s\n",
		peers, swarms, res.BytesPerPeer(), float64(res.HeapBefore)/(1<<20), float64(res.HeapAfter)/(1<<20),
		res.Fill.Round(time.Millisecond), ms(res.Snapshot), ms(res.RestartToReady))
	return res, nil
}
