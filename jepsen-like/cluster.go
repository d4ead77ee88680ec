package jepsenlike

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"fileshare/client"
	"fileshare/internal/proccluster"
	"fileshare/transport"
)

// cluster runs N master processes of the fileshare binary through
// internal/proccluster, each with its own data dir, loopback IP and log
// file, controlled by PID only: kill (SIGKILL), pause (SIGSTOP), resume
// (SIGCONT), terminate (SIGTERM, then SIGKILL after a grace period), start
// again from the data dir, or wipe the data dir and rejoin with --join.
// On top of the process control it keeps the harness's bookkeeping: which
// masters were removed from the Raft configuration, and the crashes and
// slow stops the logs checker reports. Every method is safe for
// concurrent use. close stops every process it started.
type cluster struct {
	pc     *proccluster.Cluster
	logger *slog.Logger
	nodes  []*node
	tlsDir string // the CA and certificates the masters run with
	// wiped, if set, is called after master i's data dir was wiped
	// (before it starts again); set before the first start.
	wiped func(i int)

	mu        sync.Mutex
	t0        time.Time // the run's start, for crash times
	crashes   []Crash
	slowStops []Crash // masters SIGKILLed because SIGTERM did not stop them
	selfStops []Crash // masters that stopped for a reason they logged and the harness expects
}

type node struct {
	idx     int
	id      string
	addrs   nodeAddrs
	logPath string

	removed bool // removed from the Raft configuration; guarded by cluster.mu
	// removing is set before the harness asks the cluster to remove the
	// master, since a removed master stops by itself (exit status
	// exitRemoved) and may do so before the harness stops it; guarded by
	// cluster.mu.
	removing bool
	// damaged is set while the data dir holds damage the harness made (a
	// corrupt fault) and has not wiped yet; guarded by cluster.mu.
	damaged bool
	// refused is set when the master refused to start because its data
	// dir is damaged (exit status exitDamaged): restarting it is useless,
	// it must be replaced (wiped and rejoined); guarded by cluster.mu.
	refused bool
	// diskFull is set while a disk-full fault fills the master's
	// filesystem; guarded by cluster.mu.
	diskFull bool
}

// Crash is a master that exited without being told to.
type Crash struct {
	Node  string   `json:"node"`
	At    Duration `json:"at"`
	Error string   `json:"error"`
}

// trackerInterval is the re-announce interval the masters' trackers send:
// short, as the task of a test is to exercise renewals. The workload's
// peers re-announce on their own schedule, more often than this.
const trackerInterval = 5 * time.Second

// newCluster prepares the masters: master i keeps its data in dataDirs[i]
// (under outDir/data if dataDirs is nil) and, if clockFiles is not nil,
// reads its clock offset from clockFiles[i] (FILESHARE_UNSAFE_CLOCK_FILE).
// With tracker set, each also serves an
// HTTP tracker on addrs[i].Tracker whose peer lifetime is peerLease (it
// outlasts the run, so no entry expires and the checker needs no clock)
// and whose per-IP cap admits every simulated peer, since they all
// announce from one loopback address; with trackerUDP, also a UDP
// tracker on the same port number (for UDP faults).
func newCluster(binary string, env []string, addrs []nodeAddrs, outDir string, dataDirs, clockFiles []string, peerLease time.Duration, tracker, trackerUDP bool, logger *slog.Logger) (*cluster, error) {
	c := &cluster{logger: logger, t0: time.Now(), tlsDir: filepath.Join(outDir, "tls")}
	// The masters run with TLS, as in production: a CA, a certificate per
	// master valid for every address the harness uses, an admin one.
	var ids, hosts []string
	for i, a := range addrs {
		ids = append(ids, fmt.Sprintf("m%d", i+1))
		for _, hp := range []string{a.Listen, a.Advertise} {
			if h, _, err := net.SplitHostPort(hp); err == nil && !slices.Contains(hosts, h) {
				hosts = append(hosts, h)
			}
		}
	}
	if err := os.RemoveAll(c.tlsDir); err != nil {
		return nil, err
	}
	if _, err := transport.InitFiles(c.tlsDir, ids, hosts, 7*24*time.Hour); err != nil {
		return nil, fmt.Errorf("make the cluster's certificates: %w", err)
	}
	var initial []proccluster.Voter
	var specs []proccluster.Spec
	for i, a := range addrs {
		id := fmt.Sprintf("m%d", i+1)
		n := &node{idx: i, id: id, addrs: a, logPath: filepath.Join(outDir, "logs", id+".log")}
		c.nodes = append(c.nodes, n)
		initial = append(initial, proccluster.Voter{ID: id, Addr: a.Advertise})
		dataDir := filepath.Join(outDir, "data", id)
		if dataDirs != nil {
			dataDir = dataDirs[i]
		}
		nodeEnv := env
		if clockFiles != nil {
			nodeEnv = append(slices.Clone(env), clockFileEnv+"="+clockFiles[i])
		}
		specs = append(specs, proccluster.Spec{
			ID: id, DataDir: dataDir,
			Listen: a.Listen, Advertise: a.Advertise, HTTP: a.HTTP,
			Flags: []string{"--peer-lease", peerLease.String(), "--log-format", "text",
				"--cert-file", filepath.Join(c.tlsDir, id+".pem"), "--key-file", filepath.Join(c.tlsDir, id+"-key.pem"),
				"--trusted-ca-file", filepath.Join(c.tlsDir, "ca.pem")},
			Env:     nodeEnv,
			LogPath: n.logPath,
		})
		if tracker {
			specs[i].Flags = append(specs[i].Flags, "--tracker-http", a.Tracker,
				"--tracker-interval", trackerInterval.String(), "--tracker-peer-lifetime", peerLease.String(),
				"--tracker-max-peers-per-ip", "1000000")
			if trackerUDP {
				// The UDP tracker shares the HTTP tracker's port number.
				specs[i].Flags = append(specs[i].Flags, "--tracker-udp", a.Tracker)
			}
		}
	}
	for i := range specs {
		specs[i].InitialCluster = initial
	}
	for _, dir := range []string{filepath.Join(outDir, "data"), filepath.Join(outDir, "logs")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	pc, err := proccluster.New(proccluster.Config{
		Binary:      binary,
		Masters:     specs,
		SysProcAttr: procAttr(),
		LogMode:     0o644,
		Exited:      c.crashed,
	})
	if err != nil {
		return nil, err
	}
	c.pc = pc
	return c, nil
}

// exitRemoved is the exit status of a master that stopped because it was
// removed from the cluster (cmd/fileshare's exitRemoved).
const exitRemoved = 3

// exitDamaged is the exit status of a master that refused to start
// because its data dir is damaged (cmd/fileshare's exitDamaged).
const exitDamaged = 4

// clockFileEnv is the masters' clock hook: the file holding the offset
// of their wall clock (see writeClockOffset).
const clockFileEnv = "FILESHARE_UNSAFE_CLOCK_FILE"

// noFsyncEnv is the masters' no-fsync hook (master.UnsafeNoFsyncEnv):
// set to 1 in the harness's environment, it reaches every master.
const noFsyncEnv = "FILESHARE_UNSAFE_NO_FSYNC"

// Why a master stopped on its own, when that is what the harness expects.
const (
	reasonDamaged  = "refused to start: damaged data dir"
	reasonDiskFull = "stopped: disk full"
)

// crashed records that master i exited without being told to. Three
// exits are expected and recorded as self-stops, not crashes: a master
// being removed that stops because of it (exitRemoved); a master whose
// data dir the harness damaged that refuses to start (exitDamaged); a
// master whose filesystem the harness filled that stops and says in its
// log that the disk is full. A master that refuses to start although the
// harness did not damage it is a crash: something broke its data dir.
func (c *cluster) crashed(i int, err error) {
	n := c.nodes[i]
	msg := "exited with status 0"
	if err != nil {
		msg = err.Error()
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	at := Duration(time.Since(c.t0))
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case (n.removing || n.removed) && code == exitRemoved:
		c.logger.Info("removed master stopped by itself", "node", n.id)
		return
	case code == exitDamaged:
		n.refused = true
		why := logReason(n.logPath, "damage", "corrupt")
		if why == "" {
			why = "its log does not say what is damaged"
		}
		if n.damaged {
			c.selfStops = append(c.selfStops, Crash{Node: n.id, At: at, Error: reasonDamaged + ": " + why})
			c.logger.Info("master refused to start on its damaged data dir, as it should", "node", n.id, "log", why)
			return
		}
		msg = fmt.Sprintf("%s (exit status %d), but the harness had not damaged it: %s", reasonDamaged, code, why)
	case n.diskFull:
		if why := logReason(n.logPath, "no space left on device", "disk full", "ENOSPC"); why != "" {
			c.selfStops = append(c.selfStops, Crash{Node: n.id, At: at, Error: fmt.Sprintf("%s (%s): %s", reasonDiskFull, msg, why)})
			c.logger.Warn("master stopped while its disk was full; its log says why", "node", n.id, "log", why)
			return
		}
		msg += "; its disk was full, but its log does not say so"
	}
	c.crashes = append(c.crashes, Crash{Node: n.id, At: at, Error: msg})
	c.logger.Warn("master exited unexpectedly", "node", n.id, "err", msg, "log", n.logPath)
}

// logReason returns the last of the final 16 KiB of lines of the log at
// path that contains one of words (case-insensitively), or "".
func logReason(path string, words ...string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const tail = 16 << 10
	if st, err := f.Stat(); err == nil && st.Size() > tail {
		_, _ = f.Seek(st.Size()-tail, 0)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(string(b), "\n")
	for _, l := range slices.Backward(lines) {
		low := strings.ToLower(l)
		for _, w := range words {
			if strings.Contains(low, strings.ToLower(w)) {
				l = strings.TrimSpace(l)
				if len(l) > 300 {
					l = l[:300] + "…"
				}
				return l
			}
		}
	}
	return ""
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

// start starts master i from its data dir. It returns once the process
// runs; it does not wait for the master to be ready.
func (c *cluster) start(i int) error {
	if c.pc.State(i).Running {
		return nil
	}
	c.mu.Lock()
	removed := c.nodes[i].removed
	c.mu.Unlock()
	if removed {
		return fmt.Errorf("start %s: it was removed from the cluster and must rejoin with an empty data dir", c.nodes[i].id)
	}
	return c.pc.Start(i)
}

// kill SIGKILLs master i and waits for it to exit.
func (c *cluster) kill(i int) error { return c.pc.Kill(i) }

// terminate asks master i to shut down (SIGCONT first if paused, then
// SIGTERM) and SIGKILLs it if it has not exited after grace, recording
// that as a slow stop.
func (c *cluster) terminate(i int, grace time.Duration) error {
	exit, err := c.pc.Terminate(i, grace)
	if exit.Killed {
		c.logger.Warn("master did not stop after SIGTERM; killed it", "node", c.nodes[i].id, "grace", grace)
		c.mu.Lock()
		c.slowStops = append(c.slowStops, Crash{Node: c.nodes[i].id, At: Duration(time.Since(c.t0)),
			Error: fmt.Sprintf("still running %v after SIGTERM; killed", grace)})
		c.mu.Unlock()
	}
	return err
}

// pause SIGSTOPs master i.
func (c *cluster) pause(i int) error { return c.pc.Pause(i) }

// resume SIGCONTs master i if it is paused.
func (c *cluster) resume(i int) error { return c.pc.Resume(i) }

// markRemoved records that master i left the Raft configuration: the next
// start wipes its data dir and joins with --join.
func (c *cluster) markRemoved(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[i].removed = true
	c.nodes[i].removing = false
}

// markRemoving records that the harness is about to remove master i (or
// gave up trying: removing false).
func (c *cluster) markRemoving(i int, removing bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[i].removing = removing
}

// rejoin wipes the data dir of stopped, removed master i and starts it
// with --join, so the cluster adds it back as a new voter. A removed
// master must never restart from its old state with --initial-cluster.
func (c *cluster) rejoin(i int) error {
	n := c.nodes[i]
	if c.pc.State(i).Running {
		return fmt.Errorf("rejoin %s: still running", n.id)
	}
	spec := c.pc.Spec(i)
	spec.Join = nil
	for _, o := range c.nodes {
		if o != n {
			spec.Join = append(spec.Join, o.addrs.Advertise)
		}
	}
	spec.JoinTimeout = 60 * time.Second
	if err := c.pc.SetSpec(i, spec); err != nil {
		return err
	}
	c.mu.Lock()
	n.removed, n.refused, n.damaged = false, false, false
	c.mu.Unlock()
	if err := c.pc.Wipe(i); err != nil {
		return err
	}
	if c.wiped != nil {
		c.wiped(i)
	}
	return c.start(i)
}

// nodeState is a snapshot of what the harness knows about a master.
type nodeState struct {
	running, paused, removed bool
	// refused: it refused to start on a damaged data dir and must be
	// replaced (removed, wiped, rejoined), not restarted.
	refused bool
}

func (c *cluster) state(i int) nodeState {
	ps := c.pc.State(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	return nodeState{running: ps.Running, paused: ps.Paused, removed: n.removed, refused: n.refused}
}

// markDamaged records that the harness damaged master i's data dir (or,
// false, that the damage failed and the data dir is whole). Only wiping
// the data dir (rejoin) clears it otherwise.
func (c *cluster) markDamaged(i int, damaged bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[i].damaged = damaged
}

// markDiskFull records whether master i's filesystem is being kept full.
func (c *cluster) markDiskFull(i int, full bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[i].diskFull = full
}

// dataDir is master i's data dir.
func (c *cluster) dataDir(i int) string { return c.pc.Spec(i).DataDir }

// close stops every running master (SIGTERM, then SIGKILL after a few
// seconds), in parallel, and waits for all of them. It is safe to call
// twice.
func (c *cluster) close() {
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Go(func() {
			if err := c.terminate(i, 5*time.Second); err != nil {
				c.logger.Warn("stop master", "err", err)
			}
		})
	}
	wg.Wait()
	c.pc.Close()
}

func (c *cluster) crashList() (crashes, slowStops, selfStops []Crash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.crashes), slices.Clone(c.slowStops), slices.Clone(c.selfStops)
}

// status fetches master i's /v1/status, within 2s.
func (c *cluster) status(ctx context.Context, i int) (client.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return c.pc.Status(ctx, i)
}

// statuses fetches every master's status in parallel; a master that is
// not running or does not answer has an error in its slot.
func (c *cluster) statuses(ctx context.Context) ([]client.Status, []error) {
	return c.pc.Statuses(ctx)
}

// leader returns the index of the master that calls itself leader in the
// highest term, or -1 if none does.
func (c *cluster) leader(ctx context.Context) int { return c.pc.Leader(ctx) }

// findLeader polls for a leader for up to d. It polls every 100 ms, not
// with poll.Wait's faster backoff, because each /v1/status asks every
// other master too and the harness must not load the cluster it judges;
// the same holds for the other status polls here.
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

// waitHealthy polls until the cluster is healthy by client.HealthProblems
// (every master answers, ready, and a voter under one leader). It returns
// the statuses it saw last.
func (c *cluster) waitHealthy(ctx context.Context, timeout time.Duration) ([]client.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		sts, errs := c.statuses(ctx)
		problems := client.HealthProblems(c.ids(), sts, errs)
		if len(problems) == 0 {
			return sts, nil
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return sts, fmt.Errorf("%w within %v: %s", errUnhealthy, timeout, strings.Join(problems, "; "))
		}
	}
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

// adminTLS returns the harness's admin credentials, for membership and
// leadership faults.
func (c *cluster) adminTLS() (*transport.TLS, error) {
	return transport.LoadTLS(filepath.Join(c.tlsDir, "admin.pem"), filepath.Join(c.tlsDir, "admin-key.pem"), filepath.Join(c.tlsDir, "ca.pem"))
}

// caTLS returns the cluster CA, for clients that verify the masters.
func (c *cluster) caTLS() (*transport.TLS, error) {
	return transport.LoadTLS("", "", filepath.Join(c.tlsDir, "ca.pem"))
}
