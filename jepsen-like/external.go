//go:build !windows

package jepsenlike

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"fileshare/internal/freeport"
)

// The tracker under test: with Config.TrackerCmd the harness runs the
// tracker workload against one tracker process started from a command
// template (opentracker, say), with the faults that apply to a single
// process: kill (SIGKILL, restarted at the heal) and pause (SIGSTOP,
// SIGCONT at the heal). The history, checkers and report are the same as
// for FileShare, so the results say in the same words what the other
// tracker kept and lost.

// externalID is the name the tracker under test goes by in the history.
const externalID = "t1"

// extTracker is the tracker process under test. Its methods are called
// by one goroutine at a time (the fault loop, then the cleanup).
type extTracker struct {
	args    []string
	dir     string
	logPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	paused  bool
	expect  bool     // the harness killed it
	crashes []string // exits the harness did not cause
	t0      time.Time
}

// expandTrackerCmd fills in a --tracker-cmd template: {port} (TCP and UDP),
// {host}, {dir} (a directory others can read, the process's working
// directory) and {whitelist} (a file there listing the workload's
// info-hashes in hex, one a line, for trackers that track only listed
// torrents, as Debian's opentracker does).
func expandTrackerCmd(tmpl, host, port, dir, whitelist string) []string {
	r := strings.NewReplacer("{port}", port, "{host}", host, "{dir}", dir, "{whitelist}", whitelist)
	return strings.Fields(r.Replace(tmpl))
}

func (t *extTracker) start() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cmd != nil {
		return nil
	}
	f, err := os.OpenFile(t.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "=== jepsen: start at %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(t.args, " "))
	cmd := exec.Command(t.args[0], t.args[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr, cmd.SysProcAttr = t.dir, f, f, procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the tracker under test (%s): %w", t.args[0], err)
	}
	t.cmd, t.exited, t.paused, t.expect = cmd, make(chan struct{}), false, false
	exited := t.exited
	go func() {
		err := cmd.Wait()
		t.mu.Lock()
		if !t.expect {
			t.crashes = append(t.crashes, fmt.Sprintf("%v after start: %v", time.Since(t.t0).Round(time.Millisecond), err))
		}
		if t.cmd == cmd {
			t.cmd = nil
		}
		t.mu.Unlock()
		close(exited)
	}()
	return nil
}

// kill SIGKILLs the tracker and waits until it is gone.
func (t *extTracker) kill() error {
	t.mu.Lock()
	cmd, exited := t.cmd, t.exited
	if cmd == nil {
		t.mu.Unlock()
		return errors.New("the tracker under test is not running")
	}
	t.expect = true
	t.mu.Unlock()
	_ = cmd.Process.Kill()
	<-exited
	return nil
}

// signal sends sig (SIGSTOP or SIGCONT) to the running tracker.
func (t *extTracker) signal(sig syscall.Signal) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cmd == nil {
		return errors.New("the tracker under test is not running")
	}
	t.paused = sig == syscall.SIGSTOP
	return t.cmd.Process.Signal(sig)
}

func (t *extTracker) running() (running, paused bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cmd != nil, t.paused
}

// stop resumes and kills the tracker if it runs.
func (t *extTracker) stop() {
	if running, paused := t.running(); running {
		if paused {
			_ = t.signal(syscall.SIGCONT)
		}
		_ = t.kill()
	}
}

// waitServing polls the tracker's HTTP port until it accepts a
// connection, for up to d.
func waitServing(ctx context.Context, addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 50*time.Millisecond) {
			return fmt.Errorf("the tracker under test does not accept connections on %s after %v: %w", addr, d, err)
		}
	}
}

// runExternal is Run for Config.TrackerCmd.
func runExternal(ctx context.Context, cfg Config) (*Results, error) {
	log := cfg.Logger
	res := &Results{
		Seed: cfg.Seed, Nodes: 1, Time: Duration(cfg.Time), Interval: Duration(cfg.Interval),
		Kinds: cfg.Kinds, Workloads: cfg.Workloads, Rate: cfg.Rate, Concurrency: cfg.Concurrency,
		OpTimeout: Duration(cfg.OpTimeout), TrackerCmd: cfg.TrackerCmd, Torrents: cfg.Torrents,
		Net: "none (a single tracker process: only kill and pause apply)",
	}
	if res.Kinds == nil {
		res.Kinds = []Kind{}
	}
	faults := PlanSchedule(Plan{Seed: cfg.Seed, Nodes: 1, Time: cfg.Time, Interval: cfg.Interval, Kinds: cfg.Kinds})
	port, err := freeport.Port("127.0.0.1")
	if err != nil {
		return nil, err
	}
	// A directory the tracker can read after dropping privileges
	// (opentracker becomes nobody).
	dir, err := os.MkdirTemp("", "fileshare-jepsen-tracker-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	var wl strings.Builder
	for _, t := range makeTorrents(cfg.Torrents) {
		wl.WriteString(hex.EncodeToString(t.Hash[:]) + "\n")
	}
	whitelist := filepath.Join(dir, "whitelist.txt")
	if err := os.WriteFile(whitelist, []byte(wl.String()), 0o644); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.Out, "logs"), 0o755); err != nil {
		return nil, err
	}
	host := "127.0.0.1"
	addr := net.JoinHostPort(host, port)
	tr := &extTracker{args: expandTrackerCmd(cfg.TrackerCmd, host, port, dir, whitelist), dir: dir,
		logPath: filepath.Join(cfg.Out, "logs", externalID+".log"), t0: time.Now()}
	if len(tr.args) == 0 {
		return nil, configErr("TrackerCmd", "{TrackerCmd} is empty")
	}
	if err := tr.start(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	defer tr.stop()
	if err := waitServing(ctx, addr, 10*time.Second); err != nil {
		return nil, fmt.Errorf("%w; see %s", err, tr.logPath)
	}
	log.Info("tracker under test started", "cmd", strings.Join(tr.args, " "), "addr", addr)

	hf, err := os.Create(filepath.Join(cfg.Out, HistoryFile))
	if err != nil {
		return nil, fmt.Errorf("create the history file: %w", err)
	}
	defer hf.Close()
	t0 := time.Now()
	res.Start = t0
	rec := newRecorder(t0, hf)
	pace := newPacer(cfg.Rate, cfg.Concurrency)
	var procMu sync.Mutex
	process := 0
	newProcess := func() int {
		procMu.Lock()
		defer procMu.Unlock()
		process++
		return process
	}
	trk := newTrackerWorkload([]trackerMaster{{ID: externalID, URL: "http://" + addr + "/announce"}},
		cfg.Torrents, rec, pace, cfg.Seed, cfg.OpTimeout, newProcess)
	trk.compact = true // opentracker refuses compact=0
	defer trk.close()

	var windows []Window
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { trk.run(ctx, stop, cfg.Concurrency) })
	wg.Go(func() { windows = externalFaults(ctx, stop, tr, addr, t0, faults, log) })
	sleepCtx(ctx, cfg.Time)
	close(stop)
	wg.Wait()
	res.Interrupted = ctx.Err() != nil

	// Heal, then read every swarm once more.
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if running, paused := tr.running(); paused {
		_ = tr.signal(syscall.SIGCONT)
	} else if !running {
		if err := tr.start(); err != nil {
			res.Problems = append(res.Problems, err.Error())
		}
	}
	if err := waitServing(tctx, addr, 10*time.Second); err != nil {
		res.Problems = append(res.Problems, err.Error())
	}
	if !res.Interrupted {
		if err := trk.startWatcher(tctx); err != nil {
			res.Problems = append(res.Problems, err.Error())
		}
		if err := trk.readFinal(tctx, 60*time.Second); err != nil {
			res.Problems = append(res.Problems, err.Error())
		}
	}
	tr.stop()
	if err := rec.flush(); err != nil {
		res.Problems = append(res.Problems, fmt.Sprintf("write %s: %v", HistoryFile, err))
	}

	history := rec.history()
	res.OpsByType = map[OpType]OpCounts{}
	for _, op := range history {
		res.Ops.add(op.Outcome)
		c := res.OpsByType[op.Type]
		c.add(op.Outcome)
		res.OpsByType[op.Type] = c
	}
	t := CheckTracker(history, []string{externalID})
	res.Tracker = &t
	res.Availability = checkAvailability(history, windows)
	tr.mu.Lock()
	crashes := slices.Clone(tr.crashes)
	tr.mu.Unlock()
	res.Logs = LogsResult{Verdict: Valid, Explanation: "the tracker under test never exited unless killed"}
	if len(crashes) > 0 {
		res.Logs = LogsResult{Verdict: Invalid, Explanation: fmt.Sprintf("the tracker under test exited %d times without being killed: %s", len(crashes), strings.Join(crashes, "; "))}
	}
	res.Checkers = map[string]CheckerResult{
		"restart-recall": checkRestartRecall(history, windows),
		"tracker-set":    {t.Verdict, t.Explanation},
		"availability":   {res.Availability.Verdict, res.Availability.Explanation},
		"logs":           {res.Logs.Verdict, res.Logs.Explanation},
	}
	res.Verdict, res.Summary = conclude(res)
	res.Elapsed = Duration(time.Since(t0))

	errs := []error{
		writeJSON(filepath.Join(cfg.Out, ScheduleFile), ScheduleDoc{Seed: cfg.Seed, Nodes: 1, Time: Duration(cfg.Time),
			Interval: Duration(cfg.Interval), Kinds: res.Kinds, Planned: faults, Realised: windows}),
		writeJSON(filepath.Join(cfg.Out, ResultsFile), res),
		writeFile(filepath.Join(cfg.Out, LatencyFile), func(f *os.File) error {
			return writeLatencySVG(f, history, windows, cfg.OpTimeout)
		}),
		writeFile(filepath.Join(cfg.Out, ReportFile), func(f *os.File) error {
			return writeReport(f, res, history, windows, []string{externalID})
		}),
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("write the results to %s: %w", cfg.Out, err)
	}
	log.Info("done", "verdict", res.Verdict, "report", filepath.Join(cfg.Out, ReportFile))
	return res, nil
}

// externalFaults carries out the schedule against the tracker under
// test: kill (SIGKILL; the heal starts it again and waits until it
// accepts connections) and pause (SIGSTOP; SIGCONT at the heal).
func externalFaults(ctx context.Context, stop <-chan struct{}, tr *extTracker, addr string, t0 time.Time, faults []Fault, log interface {
	Info(string, ...any)
}) []Window {
	var out []Window
	for _, f := range faults {
		if !waitUntil(ctx, stop, t0.Add(time.Duration(f.At))) {
			return out
		}
		w := Window{Fault: f, Start: time.Now(), Targets: []string{externalID}}
		w.StartOffset = Duration(w.Start.Sub(t0))
		log.Info("fault starts", "seq", f.Seq, "kind", f.Kind)
		var err error
		if f.Kind == KindKill {
			err = tr.kill()
		} else {
			err = tr.signal(syscall.SIGSTOP)
		}
		if err != nil {
			w.Notes = append(w.Notes, err.Error())
		}
		stopped := !waitUntil(ctx, stop, time.Now().Add(time.Duration(f.For)))
		if f.Kind == KindKill {
			err = tr.start()
			if err == nil {
				err = waitServing(ctx, addr, 10*time.Second)
			}
			w.Notes = append(w.Notes, "killed with SIGKILL and started again: whatever it kept only in memory is gone")
		} else {
			err = tr.signal(syscall.SIGCONT)
		}
		if err != nil {
			w.Notes = append(w.Notes, "heal: "+err.Error())
		}
		w.End = time.Now()
		w.EndOffset = Duration(w.End.Sub(t0))
		out = append(out, w)
		if stopped {
			return out
		}
	}
	return out
}
