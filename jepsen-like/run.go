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
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"fileshare/client"
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
	log := cfg.Logger
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
	res := &Results{
		Seed: cfg.Seed, Nodes: cfg.Nodes, Time: Duration(cfg.Time), Interval: Duration(cfg.Interval),
		Kinds: cfg.Kinds, Workloads: cfg.Workloads, Rate: cfg.Rate, Concurrency: cfg.Concurrency, Files: cfg.Files,
		OpTimeout: Duration(cfg.OpTimeout), UnsafeFault: envValue(cfg.Env, "FILESHARE_UNSAFE_FAULT"),
		UnsafeNoFsync: envValue(cfg.Env, noFsyncEnv) == "1",
	}
	if res.Kinds == nil {
		res.Kinds = []Kind{}
	}
	faults := PlanSchedule(Plan{Seed: cfg.Seed, Nodes: cfg.Nodes, Time: cfg.Time, Interval: cfg.Interval, Kinds: cfg.Kinds})

	// The network fault mechanism, and every master's addresses.
	mode, why := netNone, "no network faults were asked for"
	if cfg.needsNetwork() {
		if mode, why, err = ResolveNet(cfg.Net); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	addrs, perNodeIP, err := planAddrs(cfg.Nodes, mode == NetProxy)
	if err != nil {
		return nil, err
	}
	if !perNodeIP {
		if mode != netNone {
			return nil, fmt.Errorf("%w: network faults need each master on its own loopback address (127.0.0.11 and up), which this system does not route; on macOS add them with 'sudo ifconfig lo0 alias 127.0.0.11' (and .12 …), or choose only kill, pause, kill-leader, rolling-restart and membership faults", ErrConfig)
		}
		log.Warn("127.0.0.11 and up are not usable here; every master uses 127.0.0.1 with its own ports")
	}
	var inj netInjector = noNet{}
	switch mode {
	case NetProxy:
		inj, err = newProxyNet(addrs, log)
	case NetIptables:
		ips := make([]string, len(addrs))
		for i, a := range addrs {
			ips[i] = a.IP
		}
		inj, err = newIptablesNet(ctx, ips, InPrivateNetns())
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := inj.Close(); err != nil {
			log.Error("network cleanup failed", "err", err)
		}
	}()
	for _, k := range cfg.Kinds {
		if k.NeedsNetwork() {
			if err := inj.Supports(k); err != nil {
				return nil, configErr("Kinds", "{Kinds} %s: %v", k, err)
			}
		}
	}
	res.Net = inj.Describe() + " (" + why + ")"
	log.Info("network faults", "mechanism", res.Net)
	if res.UnsafeNoFsync {
		log.Warn("the masters skip fsync (FILESHARE_UNSAFE_NO_FSYNC=1); under power-loss faults the verdict should be invalid")
	}
	if res.UnsafeFault != "" {
		log.Warn("the masters run with a deliberate bug (FILESHARE_UNSAFE_FAULT); the verdict should be invalid", "fault", res.UnsafeFault)
	}

	hf, err := os.Create(filepath.Join(cfg.Out, HistoryFile))
	if err != nil {
		return nil, fmt.Errorf("create the history file: %w", err)
	}
	defer hf.Close()

	// Disk-full faults: every master's data dir on a small filesystem of
	// its own. Unmounting is deferred before the cluster's stop, so it
	// runs after it.
	var dsk *disks
	var dataDirs []string
	diskSkip := ""
	if slices.Contains(cfg.Kinds, KindDiskFull) {
		ids := make([]string, cfg.Nodes)
		for i := range ids {
			ids[i] = fmt.Sprintf("m%d", i+1)
		}
		if diskSkip = diskSupported(); diskSkip == "" {
			if !InPrivateNetns() {
				log.Warn("the masters' filesystems are mounted in the host's mount namespace; they are unmounted at the end, but a harness killed with SIGKILL leaves them mounted", "under", filepath.Join(cfg.Out, "disks"))
			}
			if dsk, err = newDisks(filepath.Join(cfg.Out, "disks"), ids); err != nil {
				diskSkip = err.Error()
			}
		}
		if dsk == nil {
			res.Skipped = append(res.Skipped, "disk-full faults were skipped: "+diskSkip)
			log.Warn("disk-full faults are skipped", "why", diskSkip)
		} else {
			for i := range ids {
				dataDirs = append(dataDirs, dsk.dataDir(i))
			}
			log.Info("every master's data dir is on its own filesystem", "size_mib", diskSize>>20, "under", dsk.root)
			defer func() {
				keep := ""
				if cfg.KeepData {
					keep = filepath.Join(cfg.Out, "data")
				}
				if err := dsk.close(keep); err != nil {
					log.Error("unmount the masters' filesystems", "err", err)
				}
			}()
		}
	}
	// Power-loss faults: every master's data dir on a FUSE filesystem
	// that keeps what was written since the last fsync (on the master's
	// own tmpfs with disk-full faults). Unmounting is deferred after the
	// disks' and before the cluster's stop, so it runs between them.
	var power []*powerFS
	powerSkip := ""
	if slices.ContainsFunc(cfg.Kinds, isPowerLoss) {
		if powerSkip = powerSupported(); powerSkip == "" {
			if !InPrivateNetns() {
				log.Warn("the masters' power-loss filesystems are mounted in the host's mount namespace; they are unmounted at the end, but a harness killed with SIGKILL leaves them mounted", "under", filepath.Join(cfg.Out, "power"))
			}
			for i := range cfg.Nodes {
				id := fmt.Sprintf("m%d", i+1)
				base := filepath.Join(cfg.Out, "power", id+".backing")
				if dsk != nil {
					base = dsk.mounts[i]
				}
				p, err := newPowerFS(base, filepath.Join(cfg.Out, "power", id))
				if err != nil {
					powerSkip = err.Error()
					break
				}
				power = append(power, p)
			}
			defer func() {
				for i, p := range power {
					if cfg.KeepData {
						if err := copyTree(filepath.Join(cfg.Out, "data", fmt.Sprintf("m%d", i+1)), filepath.Join(p.mnt, "data")); err != nil {
							log.Error("keep a master's data dir", "err", err)
						}
					}
					if err := p.close(); err != nil {
						log.Error("unmount a power-loss filesystem", "err", err)
					}
				}
			}()
		}
		if powerSkip != "" {
			power = nil
			res.Skipped = append(res.Skipped, "power-loss faults were skipped: "+powerSkip)
			log.Warn("power-loss faults are skipped", "why", powerSkip)
		} else {
			dataDirs = nil
			for _, p := range power {
				dataDirs = append(dataDirs, filepath.Join(p.mnt, "data"))
			}
			log.Info("every master's data dir is on a power-loss filesystem", "under", filepath.Join(cfg.Out, "power"))
		}
	}
	if slices.ContainsFunc(cfg.Kinds, isUDP) && !cfg.has(WorkloadTracker) {
		res.Skipped = append(res.Skipped, "UDP faults were skipped: they act on the tracker workload's UDP announces; add the tracker workload")
	}
	// Clock faults: every master reads its clock offset from a file.
	var clockFiles []string
	if slices.Contains(cfg.Kinds, KindClock) {
		dir := filepath.Join(cfg.Out, "clock")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
		for i := range cfg.Nodes {
			path := filepath.Join(dir, fmt.Sprintf("m%d", i+1))
			if err := writeClockOffset(path, 0); err != nil {
				return nil, err
			}
			clockFiles = append(clockFiles, path)
		}
	}

	// The cluster. Stopping it is deferred after the network cleanup, so
	// it runs first: masters stop, then rules go.
	cl, err := newCluster(cfg.Binary, cfg.Env, addrs, cfg.Out, dataDirs, clockFiles, cfg.PeerLease, cfg.has(WorkloadTracker), cfg.udpFaults(), log)
	if err != nil {
		return nil, err
	}
	defer cl.close()
	if power != nil {
		// A wipe (replacing a master) is the harness's, not the
		// master's: no power loss may bring the old files back.
		cl.wiped = func(i int) { power[i].sync() }
	}
	for i := range cl.nodes {
		if err := cl.start(i); err != nil {
			return nil, err
		}
	}
	log.Info("masters started; waiting for a leader", "nodes", cl.ids(), "masters", cl.advertised())
	if _, err := cl.waitHealthy(ctx, 60*time.Second); err != nil {
		return nil, fmt.Errorf("the cluster did not form: %w; see the masters' logs in %s", err, filepath.Join(cfg.Out, "logs"))
	}

	t0 := time.Now()
	cl.mu.Lock()
	cl.t0 = t0
	cl.mu.Unlock()
	res.Start = t0
	rec := newRecorder(t0, hf)
	adminCreds, err := cl.adminTLS()
	if err != nil {
		return nil, err
	}
	ca, err := cl.caTLS()
	if err != nil {
		return nil, err
	}
	admin, err := client.New(client.Config{Masters: cl.advertised(), AttemptTimeout: time.Second, TLS: adminCreds})
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	wl := &workload{
		masters: cl.advertised(), files: makeFiles(cfg.Files), rec: rec,
		pace: newPacer(cfg.Rate, cfg.Concurrency), seed: cfg.Seed,
		opTimeout: cfg.OpTimeout, attemptTimeout: max(cfg.OpTimeout/3, 100*time.Millisecond),
		ca: ca,
	}
	nm := &nemesis{cl: cl, net: inj, admin: admin, t0: t0, logger: log, pace: wl.pace, opTimeout: cfg.OpTimeout,
		disks: dsk, diskSkip: diskSkip, clockFiles: clockFiles, power: power, powerSkip: powerSkip}
	var trk *trackerWorkload
	if cfg.has(WorkloadTracker) {
		res.Torrents = cfg.Torrents
		var tms []trackerMaster
		for i, n := range cl.nodes {
			tm := trackerMaster{ID: n.id, URL: "http://" + n.addrs.Tracker + "/announce"}
			if cfg.udpFaults() {
				p, err := newUDPProxy(n.addrs.IP, n.addrs.Tracker, cfg.Seed+int64(i), log)
				if err != nil {
					return nil, err
				}
				defer p.close()
				nm.udp = append(nm.udp, p)
				tm.UDP = p.addr()
			}
			tms = append(tms, tm)
		}
		trk = newTrackerWorkload(tms, cfg.Torrents, rec, wl.pace, cfg.Seed, cfg.OpTimeout, wl.newProcess)
		defer trk.close()
	}

	log.Info("workload and nemesis start", "time", cfg.Time, "faults", len(faults))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if cfg.has(WorkloadIndex) {
		wg.Go(func() { wl.run(ctx, stop, cfg.Concurrency) })
	}
	if trk != nil {
		wg.Go(func() { trk.run(ctx, stop, cfg.Concurrency) })
	}
	wg.Go(func() { nm.run(ctx, stop, faults) })
	sleepCtx(ctx, cfg.Time)
	close(stop)
	wg.Wait()
	res.Interrupted = ctx.Err() != nil
	log.Info("workload stopped; healing", "ops", len(rec.history()), "interrupted", res.Interrupted)

	// Heal, settle, read everything once more, compare the replicas.
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer cancel()
	res.Problems = append(res.Problems, nm.healAll(tctx)...)
	var digests DigestResult
	if res.Interrupted {
		res.Problems = append(res.Problems, "the run was interrupted: no final reads were made")
		digests = DigestResult{Verdict: Unknown, Explanation: "not compared: the run was interrupted"}
	} else {
		if _, err := cl.waitHealthy(ctx, 60*time.Second); err != nil {
			res.Problems = append(res.Problems, fmt.Sprintf("after the final heal: %v", err))
		}
		log.Info("cluster healed; final reads")
		if cfg.has(WorkloadIndex) {
			if err := wl.finalReads(ctx, 60*time.Second); err != nil {
				res.Problems = append(res.Problems, err.Error())
			}
		}
		if trk != nil {
			// The watcher joins every swarm; once every master has
			// applied that (equal digests), each read is a renewal and
			// changes nothing, so the masters are read in one state.
			if err := trk.startWatcher(tctx); err != nil {
				res.Problems = append(res.Problems, err.Error())
			}
			if d := settleDigests(ctx, cl, 30*time.Second); d.Verdict != Valid {
				res.Problems = append(res.Problems, "before the final peer-list reads: "+d.Explanation)
			}
			if err := trk.readFinal(tctx, 60*time.Second); err != nil {
				res.Problems = append(res.Problems, err.Error())
			}
		}
		digests = settleDigests(ctx, cl, 30*time.Second)
	}
	cl.close()
	if err := rec.flush(); err != nil {
		res.Problems = append(res.Problems, fmt.Sprintf("write %s: %v", HistoryFile, err))
	}

	// Check.
	log.Info("checking the history")
	history := rec.history()
	windows := nm.realised()
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
	if trk != nil {
		t := CheckTracker(history, cl.ids())
		res.Tracker = &t
		res.Checkers["tracker-set"] = CheckerResult{t.Verdict, t.Explanation}
		res.Checkers["tracker-agree"] = CheckerResult{t.Agreement.Verdict, t.Agreement.Explanation}
		if cfg.udpFaults() {
			res.Checkers["tracker-once"] = checkTrackerOnce(history, windows, t)
		}
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
	res.Elapsed = Duration(time.Since(t0))

	// Write.
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
		return writeReport(f, res, history, windows, cl.ids())
	}))
	if !cfg.KeepData {
		errs = append(errs, os.RemoveAll(filepath.Join(cfg.Out, "data")))
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("write the results to %s: %w", cfg.Out, err)
	}
	log.Info("done", "verdict", res.Verdict, "report", filepath.Join(cfg.Out, ReportFile))
	return res, nil
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
	for _, name := range []string{"linearizable", "set-full", "tracker-set", "tracker-agree", "tracker-once", "restart-recall", "digests", "heal-digests", "logs", "availability"} {
		if _, ok := r.Checkers[name]; ok {
			out = append(out, name)
		}
	}
	return out
}
