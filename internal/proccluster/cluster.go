package proccluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"fileshare/client"
	"fileshare/internal/poll"
)

// Errors a Cluster's methods return; test them with errors.Is.
var (
	// ErrNotRunning means the master has no running process.
	ErrNotRunning = errors.New("not running")
	// ErrRunning means the operation needs the master stopped first.
	ErrRunning = errors.New("still running")
	// ErrNoLeader means WaitLeader's context ended before a leader was
	// elected.
	ErrNoLeader = errors.New("no leader elected")
	// ErrNoPause means this system cannot pause a process (no SIGSTOP).
	ErrNoPause = errors.New("pausing a master needs SIGSTOP, which this system lacks; run on Unix")
)

// killWait bounds the wait for a SIGKILLed process to be reaped.
const killWait = 10 * time.Second

// Config configures a Cluster. A zero field means the default.
type Config struct {
	// Binary is the fileshare executable; each master runs as
	// "Binary master ...". Required.
	Binary string
	// Masters describes each master; the index into it names the master
	// in every method. Required.
	Masters []Spec
	// Status fetches master i's status. Nil means an HTTP GET of
	// /v1/status on the master's Spec.HTTP, without keep-alives.
	Status func(ctx context.Context, i int) (client.Status, error)
	// StatusTimeout bounds each status call that Statuses, Leader and
	// WaitLeader make. Default 2s.
	StatusTimeout time.Duration
	// SysProcAttr, if set, is copied into every process started.
	SysProcAttr *syscall.SysProcAttr
	// LogMode is the permission of log files created. Default 0o600.
	LogMode os.FileMode
	// Exited, if set, is called once for each process that exits without
	// being stopped through the Cluster (a crash), with what waiting for
	// it returned. It runs on the Cluster's waiter goroutine for that
	// process, without the Cluster's lock held, so it may call the
	// Cluster; Close returns only after every call has returned.
	Exited func(i int, err error)
}

// Cluster runs one `fileshare master` process per Spec and controls each
// by PID. Every method is safe for concurrent use; Close stops all.
type Cluster struct {
	cfg   Config
	httpc *http.Client
	wg    sync.WaitGroup // one waiter goroutine per started process

	mu     sync.Mutex
	procs  []*proc
	closed bool
}

// proc is one master; its fields are guarded by Cluster.mu.
type proc struct {
	spec       Spec
	cmd        *exec.Cmd     // nil when not running
	exited     chan struct{} // closed when cmd has exited
	exitErr    error         // what the last exit's Wait returned
	expectExit bool          // the Cluster signalled it to stop
	paused     bool
	starts     int
}

// ProcState is what the Cluster knows about one master's process.
type ProcState struct {
	Running bool
	Paused  bool // SIGSTOPped and not yet resumed
	PID     int  // 0 when not running
	Starts  int  // processes started so far
}

// Exit is how a stopped process ended.
type Exit struct {
	// Err is what waiting for the process returned: nil for exit status
	// 0, an *exec.ExitError otherwise.
	Err error
	// Killed means it outlived the grace period and was SIGKILLed.
	Killed bool
}

// New checks cfg and returns a Cluster with no process started yet. It
// does not edit cfg.
func New(cfg Config) (*Cluster, error) {
	if cfg.Binary == "" {
		return nil, fmt.Errorf("%w: no Binary", ErrBadSpec)
	}
	if len(cfg.Masters) == 0 {
		return nil, fmt.Errorf("%w: no Masters", ErrBadSpec)
	}
	c := &Cluster{cfg: cfg, httpc: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
	c.cfg.Masters = nil
	if c.cfg.StatusTimeout <= 0 {
		c.cfg.StatusTimeout = 2 * time.Second
	}
	if c.cfg.LogMode == 0 {
		c.cfg.LogMode = 0o600
	}
	if c.cfg.SysProcAttr != nil {
		attr := *cfg.SysProcAttr
		c.cfg.SysProcAttr = &attr
	}
	for _, s := range cfg.Masters {
		if err := s.check(); err != nil {
			return nil, err
		}
		c.procs = append(c.procs, &proc{spec: s.clone()})
	}
	return c, nil
}

// Len returns the number of masters.
func (c *Cluster) Len() int { return len(c.procs) }

// Spec returns master i's spec.
func (c *Cluster) Spec(i int) Spec {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[i].spec.clone()
}

// SetSpec replaces master i's spec; the next Start uses it.
func (c *Cluster) SetSpec(i int, s Spec) error {
	if err := s.check(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.procs[i].spec = s.clone()
	return nil
}

// State returns what is known about master i's process.
func (c *Cluster) State(i int) ProcState {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.procs[i]
	st := ProcState{Running: p.cmd != nil, Paused: p.paused, Starts: p.starts}
	if p.cmd != nil {
		st.PID = p.cmd.Process.Pid
	}
	return st
}

// PID returns the process ID of master i, or 0 if it is not running.
func (c *Cluster) PID(i int) int { return c.State(i).PID }

// Start starts master i from its data dir, unless it runs already. It
// returns once the process runs; it does not wait for the master to be
// ready.
func (c *Cluster) Start(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.procs[i]
	if p.cmd != nil {
		return nil
	}
	if c.closed {
		return fmt.Errorf("start %s: the cluster is closed", p.spec.ID)
	}
	f, err := os.OpenFile(p.spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, c.cfg.LogMode)
	if err != nil {
		return fmt.Errorf("open the log of %s: %w", p.spec.ID, err)
	}
	defer f.Close()
	p.starts++
	args := p.spec.Args()
	fmt.Fprintf(f, "=== proccluster: start #%d of %s at %s: %s %s\n", p.starts, p.spec.ID, time.Now().Format(time.RFC3339Nano), c.cfg.Binary, strings.Join(args, " "))
	cmd := exec.Command(c.cfg.Binary, args...)
	cmd.Env = p.spec.Env
	cmd.Stdout, cmd.Stderr = f, f
	if c.cfg.SysProcAttr != nil {
		attr := *c.cfg.SysProcAttr
		cmd.SysProcAttr = &attr
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s (%s): %w", p.spec.ID, c.cfg.Binary, err)
	}
	p.cmd, p.exited, p.exitErr, p.expectExit, p.paused = cmd, make(chan struct{}), nil, false, false
	exited := p.exited
	c.wg.Add(1) // under mu, and Close sets closed under mu before it waits
	go c.wait(i, cmd, exited)
	return nil
}

// wait reaps master i's process cmd and reports a crash to Config.Exited.
func (c *Cluster) wait(i int, cmd *exec.Cmd, exited chan struct{}) {
	defer c.wg.Done()
	defer close(exited)
	err := cmd.Wait()
	c.mu.Lock()
	p := c.procs[i]
	crashed := !p.expectExit
	p.cmd, p.paused, p.exitErr = nil, false, err
	c.mu.Unlock()
	if crashed && c.cfg.Exited != nil {
		c.cfg.Exited(i, err)
	}
}

// signal sends master i's process sig (marking its exit as expected if
// stop), and returns the channel closed when it exits; ErrNotRunning if
// there is no process.
func (c *Cluster) signal(i int, stop bool, send func(p *proc) error) (<-chan struct{}, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.procs[i]
	if p.cmd == nil {
		return nil, ErrNotRunning
	}
	if stop {
		p.expectExit = true
	}
	return p.exited, send(p)
}

// exitOf returns how master i's last process ended.
func (c *Cluster) exitOf(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[i].exitErr
}

// Kill SIGKILLs master i and waits until its process is reaped. A master
// that is not running is left alone.
func (c *Cluster) Kill(i int) error {
	id := c.Spec(i).ID
	exited, err := c.signal(i, true, func(p *proc) error { return p.cmd.Process.Kill() })
	if errors.Is(err, ErrNotRunning) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kill %s: %w", id, err)
	}
	if !waitClosed(exited, killWait) {
		return fmt.Errorf("%s did not exit within %v of SIGKILL", id, killWait)
	}
	return nil
}

// Terminate asks master i to shut down (SIGCONT first if it is paused,
// then SIGTERM), SIGKILLs it if it has not exited after grace, and
// returns how it exited. A master that is not running is left alone, with
// a zero Exit.
func (c *Cluster) Terminate(i int, grace time.Duration) (Exit, error) {
	id := c.Spec(i).ID
	exited, err := c.signal(i, true, func(p *proc) error {
		if p.paused {
			_ = signalCont(p.cmd.Process)
		}
		return signalTerm(p.cmd.Process)
	})
	if errors.Is(err, ErrNotRunning) {
		return Exit{}, nil
	}
	if err != nil {
		return Exit{}, fmt.Errorf("terminate %s: %w", id, err)
	}
	if waitClosed(exited, grace) {
		return Exit{Err: c.exitOf(i)}, nil
	}
	if err := c.Kill(i); err != nil {
		return Exit{Killed: true}, err
	}
	return Exit{Err: c.exitOf(i), Killed: true}, nil
}

// Restart terminates master i (see Terminate) and starts it again from
// its data dir.
func (c *Cluster) Restart(i int, grace time.Duration) (Exit, error) {
	exit, err := c.Terminate(i, grace)
	if err != nil {
		return exit, err
	}
	return exit, c.Start(i)
}

// Pause SIGSTOPs master i; ErrNotRunning if it is not running.
func (c *Cluster) Pause(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.procs[i]
	if p.cmd == nil {
		return fmt.Errorf("pause %s: %w", p.spec.ID, ErrNotRunning)
	}
	if err := signalStop(p.cmd.Process); err != nil {
		return fmt.Errorf("pause %s: %w", p.spec.ID, err)
	}
	p.paused = true
	return nil
}

// Resume SIGCONTs master i if it is paused, and does nothing otherwise.
func (c *Cluster) Resume(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.procs[i]
	if p.cmd == nil || !p.paused {
		return nil
	}
	if err := signalCont(p.cmd.Process); err != nil {
		return fmt.Errorf("resume %s: %w", p.spec.ID, err)
	}
	p.paused = false
	return nil
}

// Wipe removes the data dir of master i, which must be stopped
// (ErrRunning otherwise).
func (c *Cluster) Wipe(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.procs[i]
	if p.cmd != nil {
		return fmt.Errorf("wipe %s: %w", p.spec.ID, ErrRunning)
	}
	if err := os.RemoveAll(p.spec.DataDir); err != nil {
		return fmt.Errorf("wipe the data dir of %s: %w", p.spec.ID, err)
	}
	return nil
}

// Close SIGKILLs every master still running and waits until every
// process is reaped. Later Starts fail. It is safe to call twice. To stop
// the masters gracefully, Terminate them first.
func (c *Cluster) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	var wg sync.WaitGroup
	for i := range c.procs {
		wg.Go(func() { _ = c.Kill(i) })
	}
	wg.Wait()
	c.wg.Wait()
	c.httpc.CloseIdleConnections()
}

// Status fetches master i's status through Config.Status, bounded only
// by ctx.
func (c *Cluster) Status(ctx context.Context, i int) (client.Status, error) {
	if c.cfg.Status != nil {
		return c.cfg.Status(ctx, i)
	}
	s := c.Spec(i)
	return httpStatus(ctx, c.httpc, s.ID, s.HTTP)
}

// Statuses fetches every master's status in parallel, each call bounded
// by Config.StatusTimeout. A master that is not running has ErrNotRunning
// in its error slot, and one that does not answer its call's error.
func (c *Cluster) Statuses(ctx context.Context) ([]client.Status, []error) {
	sts := make([]client.Status, len(c.procs))
	errs := make([]error, len(c.procs))
	var wg sync.WaitGroup
	for i := range c.procs {
		if !c.State(i).Running {
			errs[i] = fmt.Errorf("%s: %w", c.Spec(i).ID, ErrNotRunning)
			continue
		}
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, c.cfg.StatusTimeout)
			defer cancel()
			sts[i], errs[i] = c.Status(sctx, i)
		})
	}
	wg.Wait()
	return sts, errs
}

// Leader returns the index of the master that calls itself leader in the
// highest term right now, or -1 if none does.
func (c *Cluster) Leader(ctx context.Context) int {
	return leaderOf(c.Statuses(ctx))
}

func leaderOf(sts []client.Status, errs []error) int {
	best, term := -1, uint64(0)
	for i, st := range sts {
		if errs[i] == nil && st.State == client.StateLeader && (best < 0 || st.Term > term) {
			best, term = i, st.Term
		}
	}
	return best
}

// WaitLeader polls until every running master answers and is ready and
// one other than exclude (-1: any) is leader, and returns that leader's
// index (the one in the highest term if several claim it). It fails with
// ErrNoLeader (wrapping ctx's error) once ctx ends.
func (c *Cluster) WaitLeader(ctx context.Context, exclude int) (int, error) {
	leader := -1
	err := poll.Wait(ctx, func() bool {
		sts, errs := c.Statuses(ctx)
		leader = -1
		for i := range sts {
			if errors.Is(errs[i], ErrNotRunning) {
				continue // leaderOf skips it too
			}
			if errs[i] != nil || !sts[i].Ready {
				return false
			}
		}
		leader = leaderOf(sts, errs)
		return leader >= 0 && leader != exclude
	})
	if err != nil {
		return -1, fmt.Errorf("%w: %w", ErrNoLeader, err)
	}
	return leader, nil
}

// waitClosed reports whether ch closed within d.
func waitClosed(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}
