package jepsenlike

import (
	"context"
	"encoding/json"
	"errors"
	"fileshare/client"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// cluster runs N master processes of the fileshare binary, each with its
// own data dir, loopback IP and log file, and controls them by PID only:
// kill (SIGKILL), pause (SIGSTOP), resume (SIGCONT), terminate (SIGTERM,
// then SIGKILL after a grace period), start again from the data dir, or
// wipe the data dir and rejoin with --join. Every method is safe for
// concurrent use. close stops every process it started.
type cluster struct {
	binary    string
	env       []string
	peerLease time.Duration
	logger    *slog.Logger
	initial   string // --initial-cluster
	nodes     []*node
	httpc     *http.Client
	t0        time.Time // the run's start, for crash times

	mu        sync.Mutex
	crashes   []Crash
	slowStops []Crash        // masters SIGKILLed because SIGTERM did not stop them
	wg        sync.WaitGroup // one waiter per started process
}

type node struct {
	idx     int
	id      string
	addrs   nodeAddrs
	dataDir string
	logPath string

	// Guarded by cluster.mu.
	cmd        *exec.Cmd     // nil when not running
	exited     chan struct{} // closed when cmd has exited
	expectExit bool          // we signalled it to stop
	paused     bool
	joined     bool // start with --join: it was wiped and re-added
	removed    bool // removed from the Raft configuration
	starts     int
}

// Crash is a master that exited without being told to.
type Crash struct {
	Node  string   `json:"node"`
	At    Duration `json:"at"`
	Error string   `json:"error"`
}

func newCluster(binary string, env []string, addrs []nodeAddrs, outDir string, peerLease time.Duration, logger *slog.Logger) (*cluster, error) {
	c := &cluster{
		binary:    binary,
		env:       env,
		peerLease: peerLease,
		logger:    logger,
		httpc:     &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		t0:        time.Now(),
	}
	var initial []string
	for i, a := range addrs {
		n := &node{
			idx:     i,
			id:      fmt.Sprintf("m%d", i+1),
			addrs:   a,
			dataDir: filepath.Join(outDir, "data", fmt.Sprintf("m%d", i+1)),
			logPath: filepath.Join(outDir, "logs", fmt.Sprintf("m%d.log", i+1)),
		}
		c.nodes = append(c.nodes, n)
		initial = append(initial, n.id+"="+a.Advertise)
	}
	c.initial = strings.Join(initial, ",")
	for _, dir := range []string{filepath.Join(outDir, "data"), filepath.Join(outDir, "logs")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	return c, nil
}

func (c *cluster) ids() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.id
	}
	return out
}

// advertised returns every master's advertised address: what clients use.
func (c *cluster) advertised() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.addrs.Advertise
	}
	return out
}

func (c *cluster) args(n *node) []string {
	args := []string{"master", "--id", n.id, "--data-dir", n.dataDir, "--listen", n.addrs.Listen,
		"--http", n.addrs.HTTP, "--peer-lease", c.peerLease.String(), "--log-format", "text"}
	if n.addrs.Advertise != n.addrs.Listen {
		args = append(args, "--advertise", n.addrs.Advertise)
	}
	if n.joined {
		var others []string
		for _, o := range c.nodes {
			if o != n {
				others = append(others, o.addrs.Advertise)
			}
		}
		return append(args, "--join", strings.Join(others, ","), "--join-timeout", "60s")
	}
	return append(args, "--initial-cluster", c.initial)
}

// start starts master i from its data dir. It returns once the process
// runs; it does not wait for the master to be ready.
func (c *cluster) start(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if n.cmd != nil {
		return nil
	}
	if n.removed {
		return fmt.Errorf("start %s: it was removed from the cluster and must rejoin with an empty data dir", n.id)
	}
	f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", n.id, err)
	}
	defer f.Close()
	n.starts++
	args := c.args(n)
	fmt.Fprintf(f, "=== jepsen-like: start #%d of %s at %s: %s %s\n", n.starts, n.id, time.Now().Format(time.RFC3339Nano), c.binary, strings.Join(args, " "))
	cmd := exec.Command(c.binary, args...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s (%s): %w", n.id, c.binary, err)
	}
	n.cmd, n.exited, n.expectExit, n.paused = cmd, make(chan struct{}), false, false
	exited := n.exited
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := cmd.Wait()
		c.mu.Lock()
		defer c.mu.Unlock()
		if !n.expectExit {
			msg := "exited with status 0"
			if err != nil {
				msg = err.Error()
			}
			c.crashes = append(c.crashes, Crash{Node: n.id, At: Duration(time.Since(c.t0)), Error: msg})
			c.logger.Warn("master exited unexpectedly", "node", n.id, "err", msg, "log", n.logPath)
		}
		n.cmd, n.paused = nil, false
		close(exited)
	}()
	return nil
}

// signal sends sig to master i if it runs, marking the exit as expected
// when stop is set, and returns the channel closed when it exits (nil if
// it was not running).
func (c *cluster) signal(i int, stop bool, send func(*os.Process) error) (<-chan struct{}, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if n.cmd == nil {
		return nil, nil
	}
	if stop {
		n.expectExit = true
	}
	return n.exited, send(n.cmd.Process)
}

func waitExit(exited <-chan struct{}, d time.Duration) bool {
	if exited == nil {
		return true
	}
	select {
	case <-exited:
		return true
	case <-time.After(d):
		return false
	}
}

// kill SIGKILLs master i and waits for it to exit.
func (c *cluster) kill(i int) error {
	exited, err := c.signal(i, true, (*os.Process).Kill)
	if err != nil {
		return fmt.Errorf("kill %s: %w", c.nodes[i].id, err)
	}
	if !waitExit(exited, 10*time.Second) {
		return fmt.Errorf("%s did not exit within 10s of SIGKILL", c.nodes[i].id)
	}
	return nil
}

// terminate asks master i to shut down (SIGCONT first if paused, then
// SIGTERM) and SIGKILLs it if it has not exited after grace.
func (c *cluster) terminate(i int, grace time.Duration) error {
	exited, err := c.signal(i, true, func(p *os.Process) error {
		if c.nodes[i].paused {
			_ = signalCont(p)
		}
		return signalTerm(p)
	})
	if err != nil {
		return fmt.Errorf("terminate %s: %w", c.nodes[i].id, err)
	}
	if waitExit(exited, grace) {
		return nil
	}
	c.logger.Warn("master did not stop after SIGTERM; killing it", "node", c.nodes[i].id, "grace", grace)
	c.mu.Lock()
	c.slowStops = append(c.slowStops, Crash{Node: c.nodes[i].id, At: Duration(time.Since(c.t0)),
		Error: fmt.Sprintf("still running %v after SIGTERM; killed", grace)})
	c.mu.Unlock()
	return c.kill(i)
}

// pause SIGSTOPs master i.
func (c *cluster) pause(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if n.cmd == nil {
		return fmt.Errorf("pause %s: not running", n.id)
	}
	if err := signalStop(n.cmd.Process); err != nil {
		return fmt.Errorf("pause %s: %w", n.id, err)
	}
	n.paused = true
	return nil
}

// resume SIGCONTs master i if it is paused.
func (c *cluster) resume(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if n.cmd == nil || !n.paused {
		return nil
	}
	if err := signalCont(n.cmd.Process); err != nil {
		return fmt.Errorf("resume %s: %w", n.id, err)
	}
	n.paused = false
	return nil
}

// markRemoved records that master i left the Raft configuration: the next
// start wipes its data dir and joins with --join.
func (c *cluster) markRemoved(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[i].removed = true
}

// rejoin wipes the data dir of stopped, removed master i and starts it
// with --join, so the cluster adds it back as a new voter. A removed
// master must never restart from its old state with --initial-cluster.
func (c *cluster) rejoin(i int) error {
	c.mu.Lock()
	n := c.nodes[i]
	if n.cmd != nil {
		c.mu.Unlock()
		return fmt.Errorf("rejoin %s: still running", n.id)
	}
	n.joined, n.removed = true, false
	c.mu.Unlock()
	if err := os.RemoveAll(n.dataDir); err != nil {
		return fmt.Errorf("wipe the data dir of %s: %w", n.id, err)
	}
	return c.start(i)
}

// nodeState is a snapshot of what the harness knows about a master.
type nodeState struct {
	running, paused, removed bool
}

func (c *cluster) state(i int) nodeState {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	return nodeState{running: n.cmd != nil, paused: n.paused, removed: n.removed}
}

// close stops every running master (SIGTERM, then SIGKILL after a few
// seconds), in parallel, and waits for all of them.
func (c *cluster) close() {
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.terminate(i, 5*time.Second); err != nil {
				c.logger.Warn("stop master", "err", err)
			}
		}()
	}
	wg.Wait()
	c.wg.Wait()
}

func (c *cluster) crashList() (crashes, slowStops []Crash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.crashes), slices.Clone(c.slowStops)
}

// status fetches master i's /v1/status.
func (c *cluster) status(ctx context.Context, i int) (client.Status, error) {
	var st client.Status
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.nodes[i].addrs.HTTP+"/v1/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := c.httpc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s /v1/status: HTTP %d", c.nodes[i].id, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("%s /v1/status: %w", c.nodes[i].id, err)
	}
	return st, nil
}

// statuses fetches every master's status in parallel; a master that does
// not answer has an error in its slot.
func (c *cluster) statuses(ctx context.Context) ([]client.Status, []error) {
	sts := make([]client.Status, len(c.nodes))
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); sts[i], errs[i] = c.status(ctx, i) }()
	}
	wg.Wait()
	return sts, errs
}

// leader returns the index of the master that calls itself leader in the
// highest term, or -1 if none does.
func (c *cluster) leader(ctx context.Context) int {
	sts, errs := c.statuses(ctx)
	best, term := -1, uint64(0)
	for i, st := range sts {
		if errs[i] == nil && st.State == "Leader" && (best < 0 || st.Term > term) {
			best, term = i, st.Term
		}
	}
	return best
}

// findLeader polls for a leader for up to d.
func (c *cluster) findLeader(ctx context.Context, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		if l := c.leader(ctx); l >= 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return l
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// errUnhealthy is returned when the cluster does not become healthy.
var errUnhealthy = errors.New("the cluster did not become healthy")

// waitHealthy polls until every master answers, all name the same leader,
// that leader's configuration has every master as a voter, and every
// master is ready (its index has caught up). It returns the statuses it
// saw last.
func (c *cluster) waitHealthy(ctx context.Context, timeout time.Duration) ([]client.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var why string
	for {
		sts, errs := c.statuses(ctx)
		why = healthProblem(c.ids(), sts, errs)
		if why == "" {
			return sts, nil
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return sts, fmt.Errorf("%w within %v: %s", errUnhealthy, timeout, why)
		}
	}
}

// healthProblem says what keeps the cluster from being healthy, or "".
func healthProblem(ids []string, sts []client.Status, errs []error) string {
	leader := ""
	for i, st := range sts {
		if errs[i] != nil {
			return fmt.Sprintf("%s does not answer: %v", ids[i], errs[i])
		}
		if st.LeaderID == "" {
			return fmt.Sprintf("%s knows no leader", ids[i])
		}
		if leader == "" {
			leader = st.LeaderID
		} else if st.LeaderID != leader {
			return fmt.Sprintf("masters disagree on the leader (%s, %s)", leader, st.LeaderID)
		}
		if !st.Ready {
			return fmt.Sprintf("%s is not ready", ids[i])
		}
	}
	for i, st := range sts {
		if st.ID != leader {
			continue
		}
		voters := 0
		for _, m := range st.Members {
			if strings.EqualFold(m.Suffrage, "voter") && slices.Contains(ids, m.ID) {
				voters++
			}
		}
		if voters != len(ids) {
			return fmt.Sprintf("leader %s has %d of %d masters as voters", ids[i], voters, len(ids))
		}
		return ""
	}
	return fmt.Sprintf("leader %s is not one of the masters", leader)
}

// sleepCtx sleeps for d or until ctx ends; it reports whether it slept
// the whole time.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
