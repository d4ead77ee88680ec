package master_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"fileshare/internal/poll"
	"fileshare/internal/testenv"
	"fileshare/master"
)

// openEvents opens the dashboard's event stream on httpAddr.
func openEvents(t *testing.T, ctx context.Context, httpAddr string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/ui/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /ui/events: %v", err)
	}
	return resp
}

// openEventsFrom opens the event stream from the loopback address from
// (127.0.0.x), one connection per stream.
func openEventsFrom(t *testing.T, ctx context.Context, from, httpAddr string) *http.Response {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/ui/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET /ui/events from %s: %v", from, err)
	}
	return resp
}

// nextSnapshot reads the next "data:" event from an event stream.
func nextSnapshot(t *testing.T, r *bufio.Reader) master.Snapshot {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read event stream: %v", err)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var s master.Snapshot
			if err := json.Unmarshal([]byte(data), &s); err != nil {
				t.Fatalf("event is not a snapshot: %v: %q", err, data)
			}
			return s
		}
	}
}

// The event stream pushes snapshots of every member as a follower sees
// them, a few times a second, and the page's static files are embedded.
func TestDashboardStreamsClusterSnapshots(t *testing.T) {
	c := newCluster(t, 3, withHTTP(""))
	li := c.Leader()
	fi := c.Follower(li)
	c.Converge()
	addr := c.Master(fi).HTTPAddr()

	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/style.css"} {
		resp, err := http.Get("http://" + addr + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(b) < 100 {
			t.Errorf("GET %s: %s, %d bytes; want the embedded file", p, resp.Status, len(b))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q, want self only", p, csp)
		}
	}

	resp := openEvents(t, t.Context(), addr)
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q, want text/event-stream", ct)
	}
	r := bufio.NewReader(resp.Body)
	var s master.Snapshot
	poll.Until(t, 10*time.Second, "a snapshot in which every member answers", func() bool {
		s = nextSnapshot(t, r)
		n := 0
		for _, m := range s.Members {
			if m.Reachable {
				n++
			}
		}
		return n == 3
	})
	start := time.Now()
	next := nextSnapshot(t, r)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("next snapshot after %v, want a few per second", d)
	}
	if next.Now <= s.Now {
		t.Errorf("snapshot times %d then %d, want increasing", s.Now, next.Now)
	}
	if s.Self != c.ID(fi) || s.LeaderID != c.ID(li) {
		t.Errorf("snapshot from %s says leader %s; want from %s, leader %s", s.Self, s.LeaderID, c.ID(fi), c.ID(li))
	}
	if s.Voters != 3 || s.Quorum != 2 || s.CanLose != 1 || s.Tolerance != "can lose 1 master" {
		t.Errorf("voters %d quorum %d can lose %d (%q); want 3, 2, 1", s.Voters, s.Quorum, s.CanLose, s.Tolerance)
	}
	for _, m := range s.Members {
		if m.Version == "" {
			t.Errorf("member %s: no version", m.ID)
		}
		if m.ID == s.LeaderID && (m.State != "Leader" || m.DigestMatch != "leader") {
			t.Errorf("leader row %+v", m)
		}
		if m.ID != s.LeaderID && (m.State != "Follower" || m.DigestMatch != "same" || m.Lag < 0 || m.LastContactMillis < 0) {
			t.Errorf("follower row %+v: want a converged follower with known lag and contact", m)
		}
	}
	var sawLeader bool
	for _, e := range s.Events {
		sawLeader = sawLeader || (e.Kind == "leader" && e.Member == s.LeaderID)
	}
	if !sawLeader {
		t.Errorf("timeline %v lacks the election of %s", s.Events, s.LeaderID)
	}
}

// The event stream faces strangers: beyond the stream cap a stream is
// refused with 503 and a reason, not queued; one client gets its share
// and no more (429), so it cannot lock operators out; and open streams do
// not hold up the master's shutdown.
func TestDashboardBoundsSubscribers(t *testing.T) {
	c := newCluster(t, 1, func(cfg *master.Config) {
		withHTTP("")(cfg)
		cfg.HTTPLimits.MaxStreams = 6
		cfg.HTTPLimits.MaxStreamsPerSource = 2
	})
	c.Leader()
	addr := c.Master(0).HTTPAddr()
	open := func(from string) (int, string) {
		resp := openEventsFrom(t, t.Context(), from, addr)
		if resp.StatusCode == http.StatusOK {
			t.Cleanup(func() { resp.Body.Close() })
			return resp.StatusCode, ""
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	// One client opens all it can: its share, then 429 for every other.
	for i := range 32 {
		code, body := open("127.0.0.2")
		if i < 2 && code != http.StatusOK {
			t.Fatalf("stream %d within one client's share: %d %q", i, code, body)
		}
		if i >= 2 && (code != http.StatusTooManyRequests || !strings.Contains(body, "share of dashboards")) {
			t.Fatalf("stream %d from one client beyond its share: %d %q; want 429 saying why", i, code, body)
		}
	}
	// Operators elsewhere still get theirs, up to the cap.
	for _, from := range []string{"127.0.0.3", "127.0.0.3", "127.0.0.4", "127.0.0.4"} {
		if code, body := open(from); code != http.StatusOK {
			t.Fatalf("an operator at %s was refused while another client held its share: %d %q", from, code, body)
		}
	}
	code, body := open("127.0.0.5")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "too many dashboards") {
		t.Fatalf("stream over the cap: %d %q; want 503 saying why", code, body)
	}
	start := time.Now()
	c.Kill(0)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown with 6 open streams took %v", d)
	}
}

// chromium starts headless Chromium for t, with a fresh profile and
// nothing that reaches for the network, and returns a browser context.
func chromium(t *testing.T) context.Context {
	t.Helper()
	path := testenv.NeedTool(t, "chromium", "chromium")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1360, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	// Cancelling the contexts stops the browser process chromedp started.
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	// The first call starts the browser, which lives as long as that
	// call's context: bctx, not one with a timeout.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// leaderShown reads the leader the page shows.
func leaderShown(t *testing.T, ctx context.Context) string {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := chromedp.Run(rctx, chromedp.Text(chromedp.ID("leader")))
	if err != nil {
		t.Fatalf("read #leader: %v", err)
	}
	return strings.TrimSpace(s)
}

// A student watching a follower's dashboard sees the leader die and the
// new leader appear within 3 s of the kill.
func TestDashboardShowsNewLeaderInBrowser(t *testing.T) {
	browser := chromium(t)
	c := newCluster(t, 3, withHTTP(""))
	li := c.Leader()
	fi := c.Follower(li)
	url := "http://" + c.Master(fi).HTTPAddr() + "/ui/"
	nctx, cancel := context.WithTimeout(browser, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(nctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS("#members tr"))); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	old := c.ID(li)
	poll.Until(t, 10*time.Second, "the page to show leader "+old, func() bool { return leaderShown(t, browser) == old })

	killed := time.Now()
	c.Kill(li)
	var shown string
	ctx, cancelWait := context.WithDeadline(t.Context(), killed.Add(3*time.Second))
	defer cancelWait()
	if err := poll.Wait(ctx, func() bool {
		shown = leaderShown(t, browser)
		return shown != old && shown != "none" && shown != ""
	}); err != nil {
		t.Fatalf("3 s after killing %s the page still shows leader %q", old, shown)
	}
	took := time.Since(killed)
	nl := c.Leader()
	if shown != c.ID(nl) {
		t.Fatalf("page shows leader %s, the cluster elected %s", shown, c.ID(nl))
	}
	t.Logf("the page showed new leader %s %v after the kill", shown, took.Round(time.Millisecond))
	// The dead member is shown as such.
	state, err := chromedp.Run(nctx, chromedp.Text(chromedp.CSS(fmt.Sprintf(`tr[data-member=%q] .badge`, old))))
	if err != nil {
		t.Fatal(err)
	}
	if state != "unreachable" {
		t.Errorf("killed %s shows as %q, want unreachable", old, state)
	}
}

// TestDashboardScreenshot regenerates docs/dashboard.png: run it with
// FILESHARE_WRITE_SCREENSHOT=$PWD/docs/dashboard.png (from the module
// root). It shows a cluster under a little load after one leader was
// killed, so the timeline has an election on it.
func TestDashboardScreenshot(t *testing.T) {
	out := os.Getenv("FILESHARE_WRITE_SCREENSHOT")
	if out == "" {
		t.Skip("set FILESHARE_WRITE_SCREENSHOT=path.png to write the dashboard screenshot")
	}
	browser := chromium(t)
	c := newCluster(t, 3, withHTTP(""))
	li := c.Leader()
	fi := c.Follower(li)
	cl := c.Client()
	alice := identity("alice")
	if _, err := cl.Join(t.Context(), alice, "127.0.0.1:9001"); err != nil {
		t.Fatal(err)
	}
	registerMany(t, cl, alice, "before", 200)
	nctx, cancel := context.WithTimeout(browser, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(nctx, chromedp.Navigate("http://"+c.Master(fi).HTTPAddr()+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#members tr"))); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the page to show a leader", func() bool { return leaderShown(t, browser) == c.ID(li) })
	c.Kill(li)
	nl := c.Leader()
	poll.Until(t, 10*time.Second, "the page to show the new leader", func() bool { return leaderShown(t, browser) == c.ID(nl) })
	// Some load for the rates, while the page watches.
	done := make(chan struct{})
	go func() { defer close(done); registerMany(t, cl, alice, "after", 3000) }()
	poll.Until(t, 10*time.Second, "the page to show writes", func() bool {
		w, _ := chromedp.Run(nctx, chromedp.Text(chromedp.ID("rate-writes")))
		return w != "" && w != "0.0" && w != "—"
	})
	png, err := chromedp.Run(nctx, chromedp.FullScreenshot(100)) // quality 100 means PNG
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", out, len(png))
}
