package jepsenlike

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Results is everything a run concluded; results.json holds it.
type Results struct {
	// Verdict is the run's overall verdict: invalid if any checker found
	// a violation, else unknown if any could not decide, else valid.
	Verdict Verdict `json:"verdict"`
	// Summary says in plain words what the verdict means.
	Summary string `json:"summary"`

	Seed     int64    `json:"seed"`
	Nodes    int      `json:"nodes"`
	Time     Duration `json:"time"`
	Interval Duration `json:"interval"`
	Kinds    []Kind   `json:"nemesis"`
	// Workloads are what the clients did: index, tracker or both.
	Workloads   []Workload `json:"workloads"`
	Torrents    int        `json:"torrents,omitempty"`
	Rate        float64    `json:"rate"`
	Concurrency int        `json:"concurrency"`
	Files       int        `json:"files"`
	OpTimeout   Duration   `json:"op_timeout"`
	// Net describes the network fault mechanism and why it was chosen.
	Net string `json:"net"`
	// UnsafeFault is the masters' FILESHARE_UNSAFE_FAULT, if any: a
	// deliberately broken build the checkers must catch.
	UnsafeFault string `json:"unsafe_fault,omitempty"`
	// UnsafeNoFsync records FILESHARE_UNSAFE_NO_FSYNC=1: masters that
	// acknowledge writes they never fsynced, which power-loss faults
	// must catch.
	UnsafeNoFsync bool `json:"unsafe_no_fsync,omitempty"`
	// TrackerCmd is the command of the tracker under test, when the run
	// judged another tracker instead of FileShare masters.
	TrackerCmd  string    `json:"tracker_cmd,omitempty"`
	Start       time.Time `json:"start"`
	Elapsed     Duration  `json:"elapsed"`
	Interrupted bool      `json:"interrupted,omitempty"`
	// Problems are things the harness could not do (heal, final reads).
	Problems []string `json:"problems,omitempty"`
	// Skipped says which asked-for faults could not be injected here and
	// why (disk-full without root); the CLI prints it.
	Skipped []string `json:"skipped,omitempty"`

	Ops          OpCounts              `json:"ops"`
	OpsByType    map[OpType]OpCounts   `json:"ops_by_type"`
	Linearizable LinearizabilityResult `json:"linearizable"`
	SetFull      SetFullResult         `json:"set_full"`
	Digests      DigestResult          `json:"digests"`
	Availability AvailabilityResult    `json:"availability"`
	Logs         LogsResult            `json:"logs"`
	// Tracker is the tracker workload's checkers (tracker-set and
	// tracker-agree); nil when the tracker workload did not run.
	Tracker  *TrackerResult           `json:"tracker,omitempty"`
	Checkers map[string]CheckerResult `json:"checkers"`
}

// CheckerResult is one checker's verdict, for the summary table.
type CheckerResult struct {
	Verdict     Verdict `json:"verdict"`
	Explanation string  `json:"explanation"`
}

// OpCounts counts operations by outcome.
type OpCounts struct {
	Total int `json:"total"`
	OK    int `json:"ok"`
	Fail  int `json:"fail"`
	Info  int `json:"info"`
}

func (c *OpCounts) add(o Outcome) {
	c.Total++
	switch o {
	case OK:
		c.OK++
	case Fail:
		c.Fail++
	default:
		c.Info++
	}
}

// The files a run writes into its output directory.
const (
	HistoryFile   = "history.jsonl"
	ScheduleFile  = "schedule.json"
	ResultsFile   = "results.json"
	LinearizeFile = "linearizability.html"
	LatencyFile   = "latency.svg"
	ReportFile    = "report.html"
)

// ScheduleDoc is schedule.json: the plan drawn from the seed and what
// actually happened.
type ScheduleDoc struct {
	Seed     int64    `json:"seed"`
	Nodes    int      `json:"nodes"`
	Time     Duration `json:"time"`
	Interval Duration `json:"interval"`
	Kinds    []Kind   `json:"nemesis"`
	Planned  []Fault  `json:"planned"`
	Realised []Window `json:"realised"`
}

// Run carries out one test: it starts cfg.Nodes masters, runs the
// workload with the nemesis for cfg.Time, heals everything, waits for the
// cluster to settle, reads every file one last time, stops the masters,
// checks the history and writes the output directory (see the package
// documentation). It blocks until all that is done.
//
// Cancelling ctx (Ctrl-C) stops the workload and the nemesis early; Run
// still heals, stops every master and removes every rule it added, checks
// what it has, and returns results whose verdict is at best Unknown.
//
// It returns an error, and no results, only if the run could not be
// carried out at all: a bad Config (wrapping ErrConfig), a network
// mechanism that cannot work here, masters that never formed a cluster.
// The error says what to do.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.TrackerCmd != "" {
		if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
			return nil, fmt.Errorf("create the output directory: %w", err)
		}
		return runExternal(ctx, cfg)
	}
	if st, err := os.Stat(cfg.Binary); err != nil || st.IsDir() {
		return nil, fmt.Errorf("%w: the fileshare binary %q cannot be run: %v", ErrConfig, cfg.Binary, err)
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("create the output directory: %w", err)
	}
	tb := &testbed{cfg: cfg, log: cfg.Logger, res: newResults(cfg)}
	defer tb.release() // the one owner of teardown, in its stated order
	faults := PlanSchedule(Plan{Seed: cfg.Seed, Nodes: cfg.Nodes, Time: cfg.Time, Interval: cfg.Interval, Kinds: cfg.Kinds})
	for _, setup := range []func(context.Context) error{
		tb.setupNet,     // the network fault mechanism and every master's addresses
		tb.setupHistory, // the history file
		tb.setupDisks,   // disk-full faults: a small filesystem per master
		tb.setupPower,   // power-loss faults: a FUSE filesystem per master
		tb.setupClocks,  // clock faults: a clock-offset file per master
		tb.startCluster, // the masters, until they form a healthy cluster
		tb.setupClients, // the workloads (registered in setupClients) and the nemesis
	} {
		if err := setup(ctx); err != nil {
			return nil, err
		}
	}
	tb.exercise(ctx, faults)
	digests := tb.settle(ctx)
	tb.cl.close()
	if err := tb.rec.flush(); err != nil {
		tb.res.Problems = append(tb.res.Problems, fmt.Sprintf("write %s: %v", HistoryFile, err))
	}
	history, windows := tb.check(digests)
	return tb.res, tb.write(faults, history, windows)
}

// newResults returns the results of a run of cfg before it starts.
func newResults(cfg Config) *Results {
	res := &Results{
		Seed: cfg.Seed, Nodes: cfg.Nodes, Time: Duration(cfg.Time), Interval: Duration(cfg.Interval),
		Kinds: cfg.Kinds, Workloads: cfg.Workloads, Rate: cfg.Rate, Concurrency: cfg.Concurrency, Files: cfg.Files,
		OpTimeout: Duration(cfg.OpTimeout), UnsafeFault: envValue(cfg.Env, "FILESHARE_UNSAFE_FAULT"),
		UnsafeNoFsync: envValue(cfg.Env, noFsyncEnv) == "1",
	}
	if res.Kinds == nil {
		res.Kinds = []Kind{}
	}
	return res
}

// check runs every checker on the history and concludes.
func (tb *testbed) check(digests DigestResult) ([]Op, []Window) {
	cfg, res, cl := tb.cfg, tb.res, tb.cl
	tb.log.Info("checking the history")
	history := tb.rec.history()
	windows := tb.nm.realised()
	for _, op := range history {
		res.Ops.add(op.Outcome)
		if res.OpsByType == nil {
			res.OpsByType = map[OpType]OpCounts{}
		}
		c := res.OpsByType[op.Type]
		c.add(op.Outcome)
		res.OpsByType[op.Type] = c
	}
	res.Checkers = map[string]CheckerResult{}
	if cfg.has(WorkloadIndex) {
		index := slices.DeleteFunc(slices.Clone(history), func(op Op) bool { return op.Type.IsTracker() })
		res.Linearizable = CheckLinearizable(index, cfg.CheckTimeout, filepath.Join(cfg.Out, LinearizeFile), faultAnnotations(windows))
		if res.Linearizable.Visualization != "" {
			res.Linearizable.Visualization = filepath.Base(res.Linearizable.Visualization)
		}
		res.SetFull = CheckSetFull(index)
		res.Checkers["linearizable"] = CheckerResult{res.Linearizable.Verdict, res.Linearizable.Explanation}
		res.Checkers["set-full"] = CheckerResult{res.SetFull.Verdict, res.SetFull.Explanation}
	}
	if tb.trk != nil {
		t := CheckTracker(history, cl.ids())
		res.Tracker = &t
		res.Checkers["tracker-set"] = CheckerResult{t.Verdict, t.Explanation}
		res.Checkers["tracker-agree"] = CheckerResult{t.Agreement.Verdict, t.Agreement.Explanation}
		if cfg.udpFaults() {
			res.Checkers["tracker-once"] = checkTrackerOnce(history, windows, t)
		}
	}
	if tb.acct != nil {
		res.Checkers["accounting"] = tb.acct.check(history, filepath.Join(cfg.Out, AccountingFile))
	}
	res.Digests = digests
	res.Availability = checkAvailability(history, windows)
	var logs []string
	for _, n := range cl.nodes {
		logs = append(logs, n.logPath)
	}
	crashes, slowStops, selfStops := cl.crashList()
	res.Logs = checkLogs(logs, crashes, slowStops, selfStops)
	res.Checkers["heal-digests"] = checkHealDigests(windows)
	res.Checkers["digests"] = CheckerResult{res.Digests.Verdict, res.Digests.Explanation}
	res.Checkers["availability"] = CheckerResult{res.Availability.Verdict, res.Availability.Explanation}
	res.Checkers["logs"] = CheckerResult{res.Logs.Verdict, res.Logs.Explanation}
	res.Verdict, res.Summary = conclude(res)
	res.Elapsed = Duration(time.Since(tb.t0))
	return history, windows
}

// write writes the output directory.
func (tb *testbed) write(faults []Fault, history []Op, windows []Window) error {
	cfg, res := tb.cfg, tb.res
	var errs []error
	errs = append(errs, writeJSON(filepath.Join(cfg.Out, ScheduleFile), ScheduleDoc{
		Seed: cfg.Seed, Nodes: cfg.Nodes, Time: Duration(cfg.Time), Interval: Duration(cfg.Interval),
		Kinds: res.Kinds, Planned: faults, Realised: windows,
	}))
	errs = append(errs, writeJSON(filepath.Join(cfg.Out, ResultsFile), res))
	errs = append(errs, writeFile(filepath.Join(cfg.Out, LatencyFile), func(f *os.File) error {
		return writeLatencySVG(f, history, windows, cfg.OpTimeout)
	}))
	errs = append(errs, writeFile(filepath.Join(cfg.Out, ReportFile), func(f *os.File) error {
		return writeReport(f, res, history, windows, tb.cl.ids())
	}))
	if !cfg.KeepData {
		errs = append(errs, os.RemoveAll(filepath.Join(cfg.Out, "data")))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("write the results to %s: %w", cfg.Out, err)
	}
	tb.log.Info("done", "verdict", res.Verdict, "report", filepath.Join(cfg.Out, ReportFile))
	return nil
}

// settleDigests polls every master's status until all report the same
// digest or d passes, and judges the last answers.
func settleDigests(ctx context.Context, cl *cluster, d time.Duration) DigestResult {
	deadline := time.Now().Add(d)
	for {
		sts, errs := cl.statuses(ctx)
		digests, applied, why := map[string]string{}, map[string]uint64{}, map[string]string{}
		for i, id := range cl.ids() {
			if errs[i] != nil {
				why[id] = errs[i].Error()
				continue
			}
			digests[id], applied[id] = sts[i].Digest, sts[i].AppliedIndex
		}
		res := checkDigests(cl.ids(), digests, applied, why)
		if res.Verdict == Valid || time.Now().After(deadline) || !sleepCtx(ctx, 250*time.Millisecond) {
			return res
		}
	}
}

// conclude combines the checkers into the run's verdict and says it in
// plain words.
func conclude(r *Results) (Verdict, string) {
	names := checkerNames(r)
	var vs []Verdict
	for _, name := range names {
		vs = append(vs, r.Checkers[name].Verdict)
	}
	v := worst(vs...)
	if v == Valid && r.Interrupted {
		v = Unknown
	}
	var bad []string
	for _, name := range names {
		if c := r.Checkers[name]; c.Verdict != Valid {
			bad = append(bad, fmt.Sprintf("%s (%s): %s", name, c.Verdict, c.Explanation))
		}
	}
	faults := "no faults"
	if len(r.Kinds) > 0 {
		ks := make([]string, len(r.Kinds))
		for i, k := range r.Kinds {
			ks[i] = string(k)
		}
		faults = strings.Join(ks, ", ") + " faults"
	}
	switch v {
	case Valid:
		var kept []string
		if _, ok := r.Checkers["set-full"]; ok {
			kept = append(kept, fmt.Sprintf("every read was linearizable, all %d acknowledged registrations survived, no acknowledged unregistration came back", r.SetFull.Acknowledged))
		}
		if r.Tracker != nil {
			kept = append(kept, fmt.Sprintf("all %d acknowledged swarm entries are in every master's peer list, none of %d acknowledged stops came back, every master lists the same peers", r.Tracker.Acknowledged, r.Tracker.Removed))
		}
		if c, ok := r.Checkers["tracker-once"]; ok {
			kept = append(kept, c.Explanation)
		}
		if c, ok := r.Checkers["accounting"]; ok {
			kept = append(kept, c.Explanation)
		}
		if r.TrackerCmd != "" {
			return v, fmt.Sprintf("VALID: over %v of %s, %d operations (%d acknowledged) against the tracker under test kept every promise: %s.",
				time.Duration(r.Time), faults, r.Ops.Total, r.Ops.OK, strings.Join(kept, "; "))
		}
		return v, fmt.Sprintf("VALID: over %v of %s, %d operations (%d acknowledged) kept every promise: %s, all %d masters ended with the same index, and no master panicked.",
			time.Duration(r.Time), faults, r.Ops.Total, r.Ops.OK, strings.Join(kept, "; "), r.Nodes)
	case Invalid:
		if r.TrackerCmd != "" {
			return v, "INVALID: the tracker under test broke a promise. " + strings.Join(bad, " ")
		}
		return v, "INVALID: the cluster broke a promise. " + strings.Join(bad, " ")
	}
	extra := ""
	if r.Interrupted {
		extra = "The run was interrupted. "
	}
	if len(r.Problems) > 0 {
		extra += "Problems: " + strings.Join(r.Problems, "; ") + ". "
	}
	return v, "UNKNOWN: nothing was found wrong, but not everything could be checked. " + extra + strings.Join(bad, " ")
}

// faultAnnotations marks every fault window on porcupine's timeline.
func faultAnnotations(windows []Window) []porcupine.Annotation {
	var out []porcupine.Annotation
	for _, w := range windows {
		desc := string(w.Kind)
		if len(w.Targets) > 0 {
			desc += " " + strings.Join(w.Targets, ",")
		}
		details := fmt.Sprintf("fault %d: %s from %v to %v", w.Seq, w.Kind, time.Duration(w.StartOffset).Round(time.Millisecond), time.Duration(w.EndOffset).Round(time.Millisecond))
		if len(w.Cuts) > 0 {
			details += "; cut " + strings.Join(w.Cuts, " ")
		}
		if len(w.Notes) > 0 {
			details += "; " + strings.Join(w.Notes, "; ")
		}
		out = append(out, porcupine.Annotation{
			Tag: "nemesis", Start: int64(w.StartOffset), End: int64(w.EndOffset),
			Description: desc, Details: details, BackgroundColor: kindColor(w.Kind),
		})
	}
	return out
}

func envValue(env []string, key string) string {
	for _, kv := range slices.Backward(env) {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

func writeJSON(path string, v any) error {
	return writeFile(path, func(f *os.File) error {
		enc := json.NewEncoder(f)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	})
}

func writeFile(path string, fill func(*os.File) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := fill(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// checkerNames lists the checkers a run has, in report order.
func checkerNames(r *Results) []string {
	var out []string
	for _, name := range []string{"linearizable", "set-full", "tracker-set", "tracker-agree", "tracker-once", "accounting", "restart-recall", "digests", "heal-digests", "logs", "availability"} {
		if _, ok := r.Checkers[name]; ok {
			out = append(out, name)
		}
	}
	return out
}
