package jepsenlike

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"fileshare/client"
	"fileshare/transport"
)

// testbed is everything one run sets up: the network fault mechanism,
// the masters' filesystems, the cluster, the clients, the workloads and
// the nemesis. Run builds it phase by phase (the setup methods, in
// order); a phase that fails leaves what it built for release, which
// Run defers once, so teardown has one owner and one order instead of a
// stack of defers.
type testbed struct {
	cfg Config
	log *slog.Logger
	res *Results

	inj        netInjector
	addrs      []nodeAddrs
	hf         *os.File
	dsk        *disks
	diskSkip   string
	power      []*powerFS
	powerSkip  string
	dataDirs   []string
	clockFiles []string
	cl         *cluster
	t0         time.Time
	rec        *recorder
	admin      *client.Client
	udp        []*udpProxy
	wl         *workload
	trk        *trackerWorkload
	acct       *accountingWorkload
	adminCreds *transport.TLS
	nm         *nemesis
}

// release tears down what the setup phases built, whichever got done, in
// this order: the tracker workload and its UDP proxies stop, the admin
// client closes, the masters stop; then the power-loss filesystems
// (keeping the masters' data when asked) and the disk-full filesystems
// beneath them unmount; then the network rules go (after the masters, so
// none sees a healed link at its end); last the history file closes.
func (tb *testbed) release() {
	if tb.trk != nil {
		tb.trk.close()
	}
	if tb.acct != nil {
		tb.acct.close()
	}
	for _, p := range slices.Backward(tb.udp) {
		p.close()
	}
	if tb.admin != nil {
		tb.admin.Close()
	}
	if tb.cl != nil {
		tb.cl.close()
	}
	for i, p := range tb.power {
		if tb.cfg.KeepData {
			if err := copyTree(filepath.Join(tb.cfg.Out, "data", fmt.Sprintf("m%d", i+1)), filepath.Join(p.mnt, "data")); err != nil {
				tb.log.Error("keep a master's data dir", "err", err)
			}
		}
		if err := p.close(); err != nil {
			tb.log.Error("unmount a power-loss filesystem", "err", err)
		}
	}
	if tb.dsk != nil {
		keep := ""
		if tb.cfg.KeepData {
			keep = filepath.Join(tb.cfg.Out, "data")
		}
		if err := tb.dsk.close(keep); err != nil {
			tb.log.Error("unmount the masters' filesystems", "err", err)
		}
	}
	if tb.inj != nil {
		if err := tb.inj.Close(); err != nil {
			tb.log.Error("network cleanup failed", "err", err)
		}
	}
	if tb.hf != nil {
		tb.hf.Close()
	}
}

// setupNet resolves the network fault mechanism, plans every master's
// addresses and sets the mechanism up.
func (tb *testbed) setupNet(ctx context.Context) error {
	cfg, log := tb.cfg, tb.log
	mode, why := netNone, "no network faults were asked for"
	var err error
	if cfg.needsNetwork() {
		if mode, why, err = ResolveNet(cfg.Net); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	addrs, perNodeIP, err := planAddrs(cfg.Nodes, mode == NetProxy)
	if err != nil {
		return err
	}
	tb.addrs = addrs
	if !perNodeIP {
		if mode != netNone {
			return fmt.Errorf("%w: network faults need each master on its own loopback address (127.0.0.11 and up), which this system does not route; on macOS add them with 'sudo ifconfig lo0 alias 127.0.0.11' (and .12 …), or choose only kill, pause, kill-leader, rolling-restart and membership faults", ErrConfig)
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
		return err
	}
	tb.inj = inj
	for _, k := range cfg.Kinds {
		if k.NeedsNetwork() {
			if err := inj.Supports(k); err != nil {
				return configErr("Kinds", "{Kinds} %s: %v", k, err)
			}
		}
	}
	tb.res.Net = inj.Describe() + " (" + why + ")"
	log.Info("network faults", "mechanism", tb.res.Net)
	if tb.res.UnsafeNoFsync {
		log.Warn("the masters skip fsync (FILESHARE_UNSAFE_NO_FSYNC=1); under power-loss faults the verdict should be invalid")
	}
	if tb.res.UnsafeFault != "" {
		log.Warn("the masters run with a deliberate bug (FILESHARE_UNSAFE_FAULT); the verdict should be invalid", "fault", tb.res.UnsafeFault)
	}
	return nil
}

// setupHistory creates the history file.
func (tb *testbed) setupHistory(context.Context) error {
	hf, err := os.Create(filepath.Join(tb.cfg.Out, HistoryFile))
	if err != nil {
		return fmt.Errorf("create the history file: %w", err)
	}
	tb.hf = hf
	return nil
}

// setupDisks puts, for disk-full faults, every master's data dir on a
// small filesystem of its own, or records why the faults are skipped.
func (tb *testbed) setupDisks(context.Context) error {
	cfg, log := tb.cfg, tb.log
	if !slices.Contains(cfg.Kinds, KindDiskFull) {
		return nil
	}
	ids := make([]string, cfg.Nodes)
	for i := range ids {
		ids[i] = fmt.Sprintf("m%d", i+1)
	}
	if tb.diskSkip = diskSupported(); tb.diskSkip == "" {
		if !InPrivateNetns() {
			log.Warn("the masters' filesystems are mounted in the host's mount namespace; they are unmounted at the end, but a harness killed with SIGKILL leaves them mounted", "under", filepath.Join(cfg.Out, "disks"))
		}
		var err error
		if tb.dsk, err = newDisks(filepath.Join(cfg.Out, "disks"), ids); err != nil {
			tb.dsk, tb.diskSkip = nil, err.Error()
		}
	}
	if tb.dsk == nil {
		tb.res.Skipped = append(tb.res.Skipped, "disk-full faults were skipped: "+tb.diskSkip)
		log.Warn("disk-full faults are skipped", "why", tb.diskSkip)
		return nil
	}
	for i := range ids {
		tb.dataDirs = append(tb.dataDirs, tb.dsk.dataDir(i))
	}
	log.Info("every master's data dir is on its own filesystem", "size_mib", diskSize>>20, "under", tb.dsk.root)
	return nil
}

// setupPower puts, for power-loss faults, every master's data dir on a
// FUSE filesystem that keeps what was written since the last fsync (on
// the master's own disk-full filesystem when there is one), or records
// why the faults are skipped.
func (tb *testbed) setupPower(context.Context) error {
	cfg, log := tb.cfg, tb.log
	if slices.ContainsFunc(cfg.Kinds, isUDP) && !cfg.tracks() {
		tb.res.Skipped = append(tb.res.Skipped, "UDP faults were skipped: they act on the tracker workload's UDP announces; add the tracker or accounting workload")
	}
	if !slices.ContainsFunc(cfg.Kinds, isPowerLoss) {
		return nil
	}
	if tb.powerSkip = powerSupported(); tb.powerSkip == "" {
		if !InPrivateNetns() {
			log.Warn("the masters' power-loss filesystems are mounted in the host's mount namespace; they are unmounted at the end, but a harness killed with SIGKILL leaves them mounted", "under", filepath.Join(cfg.Out, "power"))
		}
		for i := range cfg.Nodes {
			id := fmt.Sprintf("m%d", i+1)
			base := filepath.Join(cfg.Out, "power", id+".backing")
			if tb.dsk != nil {
				base = tb.dsk.mounts[i]
			}
			p, err := newPowerFS(base, filepath.Join(cfg.Out, "power", id))
			if err != nil {
				tb.powerSkip = err.Error()
				break
			}
			tb.power = append(tb.power, p)
		}
	}
	if tb.powerSkip != "" {
		// Those mounted are unmounted by release, with no data to keep.
		for _, p := range tb.power {
			if err := p.close(); err != nil {
				log.Error("unmount a power-loss filesystem", "err", err)
			}
		}
		tb.power = nil
		tb.res.Skipped = append(tb.res.Skipped, "power-loss faults were skipped: "+tb.powerSkip)
		log.Warn("power-loss faults are skipped", "why", tb.powerSkip)
		return nil
	}
	tb.dataDirs = nil
	for _, p := range tb.power {
		tb.dataDirs = append(tb.dataDirs, filepath.Join(p.mnt, "data"))
	}
	log.Info("every master's data dir is on a power-loss filesystem", "under", filepath.Join(cfg.Out, "power"))
	return nil
}

// setupClocks gives, for clock faults, every master a file it reads its
// clock offset from.
func (tb *testbed) setupClocks(context.Context) error {
	if !slices.Contains(tb.cfg.Kinds, KindClock) {
		return nil
	}
	dir := filepath.Join(tb.cfg.Out, "clock")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for i := range tb.cfg.Nodes {
		path := filepath.Join(dir, fmt.Sprintf("m%d", i+1))
		if err := writeClockOffset(path, 0); err != nil {
			return err
		}
		tb.clockFiles = append(tb.clockFiles, path)
	}
	return nil
}

// startCluster starts the masters and waits until they form a healthy
// cluster; the run's clock (t0) starts then.
func (tb *testbed) startCluster(ctx context.Context) error {
	cfg := tb.cfg
	cl, err := newCluster(cfg.Binary, cfg.Env, tb.addrs, cfg.Out, tb.dataDirs, tb.clockFiles, cfg.PeerLease, cfg.tracks(), cfg.udpFaults(), tb.log)
	if err != nil {
		return err
	}
	tb.cl = cl
	if power := tb.power; power != nil {
		// A wipe (replacing a master) is the harness's, not the
		// master's: no power loss may bring the old files back.
		cl.wiped = func(i int) { power[i].sync() }
	}
	for i := range cl.nodes {
		if err := cl.start(i); err != nil {
			return err
		}
	}
	tb.log.Info("masters started; waiting for a leader", "nodes", cl.ids(), "masters", cl.advertised())
	if _, err := cl.waitHealthy(ctx, 60*time.Second); err != nil {
		return fmt.Errorf("the cluster did not form: %w; see the masters' logs in %s", err, filepath.Join(cfg.Out, "logs"))
	}
	tb.t0 = time.Now()
	cl.mu.Lock()
	cl.t0 = tb.t0
	cl.mu.Unlock()
	tb.res.Start = tb.t0
	tb.rec = newRecorder(tb.t0, tb.hf)
	return nil
}

// setupClients builds the workloads and the nemesis. A new workload is
// built here, run in exercise, read finally in settle and checked in
// check.
func (tb *testbed) setupClients(ctx context.Context) error {
	cfg, cl := tb.cfg, tb.cl
	adminCreds, err := cl.adminTLS()
	if err != nil {
		return err
	}
	tb.adminCreds = adminCreds
	ca, err := cl.caTLS()
	if err != nil {
		return err
	}
	if tb.admin, err = client.New(client.Config{Masters: cl.advertised(), AttemptTimeout: time.Second, TLS: adminCreds}); err != nil {
		return err
	}
	tb.wl = &workload{
		masters: cl.advertised(), files: makeFiles(cfg.Files), rec: tb.rec,
		pace: newPacer(cfg.Rate, cfg.Concurrency), seed: cfg.Seed,
		opTimeout: cfg.OpTimeout, attemptTimeout: max(cfg.OpTimeout/3, 100*time.Millisecond),
		ca: ca,
	}
	tb.nm = &nemesis{cl: cl, net: tb.inj, admin: tb.admin, t0: tb.t0, logger: tb.log, pace: tb.wl.pace, opTimeout: cfg.OpTimeout,
		disks: tb.dsk, diskSkip: tb.diskSkip, clockFiles: tb.clockFiles, power: tb.power, powerSkip: tb.powerSkip}
	if cfg.tracks() {
		tb.res.Torrents = cfg.Torrents
		var tms []trackerMaster
		for i, n := range cl.nodes {
			tm := trackerMaster{ID: n.id, URL: "http://" + n.addrs.Tracker + "/announce"}
			if cfg.udpFaults() {
				p, err := newUDPProxy(n.addrs.IP, n.addrs.Tracker, cfg.Seed+int64(i), tb.log)
				if err != nil {
					return err
				}
				tb.udp = append(tb.udp, p)
				tb.nm.udp = append(tb.nm.udp, p)
				tm.UDP = p.addr()
			}
			tms = append(tms, tm)
		}
		if cfg.has(WorkloadTracker) {
			tb.trk = newTrackerWorkload(tms, cfg.Torrents, tb.rec, tb.wl.pace, cfg.Seed, cfg.OpTimeout, tb.wl.newProcess)
		} else if tb.acct, err = startAccounting(ctx, cfg, tms, tb.rec, tb.wl, tb.admin); err != nil {
			return err
		}
	}
	return nil
}

// exercise runs the workloads and the nemesis for cfg.Time, or until ctx
// ends.
func (tb *testbed) exercise(ctx context.Context, faults []Fault) {
	tb.log.Info("workload and nemesis start", "time", tb.cfg.Time, "faults", len(faults))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if tb.cfg.has(WorkloadIndex) {
		wg.Go(func() { tb.wl.run(ctx, stop, tb.cfg.Concurrency) })
	}
	if tb.trk != nil {
		wg.Go(func() { tb.trk.run(ctx, stop, tb.cfg.Concurrency) })
	}
	if tb.acct != nil {
		wg.Go(func() { tb.acct.run(ctx, stop, tb.cfg.Concurrency) })
	}
	wg.Go(func() { tb.nm.run(ctx, stop, faults) })
	sleepCtx(ctx, tb.cfg.Time)
	close(stop)
	wg.Wait()
	tb.res.Interrupted = ctx.Err() != nil
	tb.log.Info("workload stopped; healing", "ops", len(tb.rec.history()), "interrupted", tb.res.Interrupted)
}

// settle heals every fault, waits for the cluster to settle, reads
// everything once more and compares the replicas.
func (tb *testbed) settle(ctx context.Context) DigestResult {
	res, cl := tb.res, tb.cl
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer cancel()
	res.Problems = append(res.Problems, tb.nm.healAll(tctx)...)
	if res.Interrupted {
		res.Problems = append(res.Problems, "the run was interrupted: no final reads were made")
		return DigestResult{Verdict: Unknown, Explanation: "not compared: the run was interrupted"}
	}
	if _, err := cl.waitHealthy(ctx, 60*time.Second); err != nil {
		res.Problems = append(res.Problems, fmt.Sprintf("after the final heal: %v", err))
	}
	tb.log.Info("cluster healed; final reads")
	if tb.cfg.has(WorkloadIndex) {
		if err := tb.wl.finalReads(ctx, 60*time.Second); err != nil {
			res.Problems = append(res.Problems, err.Error())
		}
	}
	if tb.trk != nil {
		// The watcher joins every swarm; once every master has
		// applied that (equal digests), each read is a renewal and
		// changes nothing, so the masters are read in one state.
		if err := tb.trk.startWatcher(tctx); err != nil {
			res.Problems = append(res.Problems, err.Error())
		}
		if d := settleDigests(ctx, cl, 30*time.Second); d.Verdict != Valid {
			res.Problems = append(res.Problems, "before the final peer-list reads: "+d.Explanation)
		}
		if err := tb.trk.readFinal(tctx, 60*time.Second); err != nil {
			res.Problems = append(res.Problems, err.Error())
		}
	}
	if tb.acct != nil {
		res.Problems = append(res.Problems, tb.acct.final(tctx, cl, tb.adminCreds)...)
	}
	return settleDigests(ctx, cl, 30*time.Second)
}
