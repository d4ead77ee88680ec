package master

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"fileshare/fsm"
	"fileshare/transport"
)

// Master is one SwarmMaster node. Create it with New; it serves until
// Shutdown or Close (graceful: hands off leadership first) or CloseNow
// (abrupt).
type Master struct {
	cfg       Config
	logger    *slog.Logger
	advertise string

	fsm       *fsm.FSM
	raft      *raft.Raft
	store     *raftboltdb.BoltStore
	mux       *transport.Mux
	raftTrans *raft.NetworkTransport
	rpc       *transport.Server
	client    *transport.Client
	httpSrv   *http.Server
	httpLn    net.Listener

	raftReady atomic.Bool // m.raft is set (read by the Mux's Authorize hook)
	gate      *trustGate  // who has rights now: membership and the deny list (trust.go)
	raftLayer *raftLayer  // raft's stream layer over the mux's Raft stream
	joins     joinQuota   // peers joined through this master, per remote IP

	notifyCh chan bool
	batcher  *batcher    // group commit of every write proposed here
	reads    *readGate   // read levels, leader readiness, VerifyLeader rounds
	leases   *leaseTable // peer liveness while this master leads
	expirer  *expirer    // proposes expiry of silent peers while leading
	clock    *cmdClock   // times for commands and swarm seen times (clock.go)
	backups  *backups    // backup sessions served here (backup.go)
	metrics  *metrics    // /metrics registry and instruments (metrics.go)
	dash     *dashboard  // /ui/ and its event stream (dashboard.go)
	renewals renewQueue  // tracker re-announces to pass to the leader
	credits  creditQueue // private tracker counters to credit (private_tracker.go)
	trackers trackerServers
	rdv      *rendezvous // observed addresses and push channels (rendezvous.go)

	removed chan struct{}              // closed by watchRemoval; see Removed
	pilot   atomic.Pointer[apDelegate] // autopilot's view while leading; nil otherwise

	// ctx ends when shutdown begins; every goroutine in wg watches it.
	ctx    context.Context
	cancel context.CancelFunc
	// wg tracks the goroutines New starts, each with wg.Go before New
	// returns (so no Go races Wait in shutdown): watchLeadership (which
	// itself owns the leader sessions), the batcher's run loop, the RPC
	// server and the HTTP server. Short-lived helpers that wait on raft
	// futures are owned by the batcher, the verifier and shutdown; each
	// says so where it starts.
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// ErrDataDirLocked means another master process is using the data dir.
var ErrDataDirLocked = errors.New("the data dir is in use by another running master")

// New starts a master: it opens the data dir, listens, starts Raft,
// bootstraps or joins as configured, and serves RPC and HTTP. It returns
// once the node is running (for --join, once the cluster has accepted it).
// ctx bounds only that start-up (a --join that keeps retrying stops when
// ctx ends); the running master lives until Close.
func New(ctx context.Context, cfg Config) (*Master, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &Master{cfg: cfg, logger: cfg.Logger, fsm: fsm.New(), notifyCh: make(chan bool, 8), removed: make(chan struct{})}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			m.closeNow()
		}
	}()
	if err := prepareDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	m.joins.max = cfg.MaxPeersPerIP
	m.gate = newTrustGate(m)
	lim := cfg.ClusterPort
	if m.mux, err = transport.ListenMux(transport.MuxConfig{Addr: cfg.Listen, Logger: m.logger, TLS: cfg.TLS, Authorize: m.authorizeStream,
		Gate: m.gate, MaxConns: lim.MaxConns, MaxConnsPerIP: lim.MaxConnsPerIP, MaxMemberConns: lim.MaxMemberConns}); err != nil {
		return nil, portError("cluster", "Listen", cfg.Listen, err)
	}
	m.advertise = cfg.Advertise
	if m.advertise == "" {
		m.advertise = m.mux.Addr().String()
		if err := checkDialable(m.advertise); err != nil {
			return nil, configErr("Advertise", "{Listen} %s %v; set {Advertise}", cfg.Listen, err)
		}
	}
	for _, mem := range cfg.InitialCluster {
		if mem.ID == cfg.ID && mem.Addr != m.advertise {
			return nil, configErr("InitialCluster", "{InitialCluster} gives %s the address %s, but this master listens at %s", cfg.ID, mem.Addr, m.advertise)
		}
	}
	m.client = transport.NewClient(transport.ClientConfig{Dial: m.mux.DialStream})

	if err := checkBolt(cfg.DataDir, filepath.Join(cfg.DataDir, "raft.db")); err != nil {
		return nil, err
	}
	m.store, err = raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(cfg.DataDir, "raft.db"),
		BoltOptions: &bbolt.Options{
			Timeout: time.Second,
			// The freelist is rebuilt on open instead of rewritten on
			// every commit; without this, appends slow down after write
			// bursts as the freelist grows (consul#12141).
			NoFreelistSync: true,
			FreelistType:   bbolt.FreelistMapType,
			NoGrowSync:     cfg.Storage.NoSync,
		},
		NoSync: cfg.Storage.NoSync, // unsafe; see StorageHooks.NoSync
	})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, dataDirLocked(cfg.DataDir)
		}
		return nil, fmt.Errorf("open raft log in %s: %w", cfg.DataDir, err)
	}
	hcl := newHCLogBridge(m.logger, "raft")
	fileSnaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hcl)
	if err != nil {
		return nil, fmt.Errorf("open snapshot store in %s: %w", cfg.DataDir, err)
	}
	var boltLog raft.LogStore = m.store
	if h := cfg.Storage.WrapLogStore; h != nil {
		boltLog = h(boltLog)
	}
	disk := &diskLog{LogStore: boltLog, dir: cfg.DataDir, logger: m.logger}
	var snaps raft.SnapshotStore = snapStore{SnapshotStore: fileSnaps, log: disk}
	var logStore raft.LogStore = disk
	if h := cfg.Storage.WrapSnapshotStore; h != nil {
		snaps = h(snaps)
	}
	// Refuse damaged state before raft reads it (storage.go).
	snapIndex, err := checkSnapshots(cfg.DataDir, snaps)
	if err != nil {
		return nil, err
	}
	if err := checkLogs(cfg.DataDir, disk, snapIndex); err != nil {
		return nil, err
	}
	advAddr, err := net.ResolveTCPAddr("tcp", m.advertise)
	if err != nil {
		return nil, fmt.Errorf("%w: advertise address %s: %v", ErrConfig, m.advertise, err)
	}
	m.raftLayer = newRaftLayer(m.mux, advAddr, m.checkRaftHeader)
	m.raftTrans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  m.raftLayer,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hcl,
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = 10 * time.Millisecond
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.MaxAppendEntries = 256
	rc.BatchApplyCh = true
	rc.NotifyCh = m.notifyCh
	rc.Logger = hcl
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}

	logs, err := raft.NewLogCache(1024, logStore)
	if err != nil {
		return nil, err
	}
	hasState, err := raft.HasExistingState(logs, m.store, snaps)
	if err != nil {
		return nil, fmt.Errorf("read raft state in %s: %w", cfg.DataDir, err)
	}
	if cfg.Restore != "" { // a new cluster from a backup (restore.go)
		restored, err := restoreBackup(cfg, hasState, m.store, snaps, m.raftTrans)
		if err != nil {
			return nil, err
		}
		hasState = hasState || restored
	}
	// Lost-quorum recovery, if the data dir holds a recovery file (recover.go).
	if _, err := m.recoverFromFile(ctx, rc, hasState, logs, snaps); err != nil {
		return nil, err
	}
	guard := &restoreGuard{FSM: m.fsm}
	m.raft, err = raft.NewRaft(rc, guard, logs, m.store, snaps, pipelineTransport{m.raftTrans}) // raftpipe.go
	// A failed restore is damage whether raft then fell back to an older
	// snapshot or, having none that restores, failed itself ("failed to
	// load any existing snapshots").
	if rerr := guard.restoreFailed(); rerr != nil {
		return nil, damaged(cfg.DataDir, "the newest snapshot (state.bin)", rerr)
	}
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	m.raftReady.Store(true)
	m.gate.refresh(ctx)
	if !hasState && len(cfg.InitialCluster) > 0 {
		var servers []raft.Server
		for _, mem := range cfg.InitialCluster {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(mem.ID), Address: raft.ServerAddress(mem.Addr)})
		}
		// Every member of --initial-cluster bootstraps the same
		// configuration, once: HasExistingState is true on every later
		// start, so a restart with the same flags never bootstraps again.
		if err := m.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return nil, fmt.Errorf("bootstrap cluster: %w", err)
		}
		m.logger.Info("bootstrapped new cluster", "members", len(servers))
	} else if hasState {
		m.logger.Info("restarting from existing raft state", "data_dir", cfg.DataDir)
		if err := m.checkNotRemoved(ctx); err != nil {
			return nil, err
		}
	}

	if m.metrics, err = newMetrics(m, cfg.Metrics); err != nil {
		return nil, err
	}
	m.dash = newDashboard(m)
	m.batcher = newBatcher(m.raft, cfg.ApplyTimeout, cfg.Fault, m.raftError)
	m.batcher.observe = m.metrics
	m.reads = newReadGate(m.raft, m.notLeader, m.raftError)
	m.leases = newLeaseTable()
	m.clock = newCmdClock(cfg.Now, m.fsm.LastCommandTime)
	m.expirer = &expirer{
		leases: m.leases,
		peers:  m.fsm.Peers,
		propose: func(ctx context.Context, data []byte) (fsm.Response, error) {
			resp, _, err := m.batcher.submit(ctx, data)
			return resp, err
		},
		now:     time.Now, // monotonic: lease ages ignore wall-clock jumps
		cmdTime: m.clock.next,
		lease:   cfg.PeerLease,
		timeout: cfg.ApplyTimeout,
		logger:  m.logger,
	}
	m.backups = newBackups()
	m.rpc = transport.NewServerLimits(m.logger, cfg.ClusterPort.Calls)
	m.rpc.SetObserver(m.metrics)
	m.registerHandlers()

	// Owned by m (m.wg); each ends once shutdown cancels m.ctx or closes
	// the RPC listener.
	m.wg.Go(m.watchLeadership)
	m.wg.Go(m.gate.watch)
	m.wg.Go(func() { m.metrics.observeRaft(m.ctx) })
	m.wg.Go(func() { m.batcher.run(m.ctx) })
	m.wg.Go(func() { m.backups.run(m.ctx) })
	m.wg.Go(func() { m.runRenewals(m.ctx) })
	m.wg.Go(func() {
		if err := m.rpc.Serve(m.mux.Listener(transport.StreamRPC)); err != nil {
			m.logger.Error("rpc server stopped", "err", err)
		}
	})
	if cfg.HTTP != "" {
		if err := m.startHTTP(); err != nil {
			return nil, err
		}
	}
	if err := m.startTrackers(); err != nil {
		return nil, err
	}
	if !hasState && len(cfg.Join) > 0 {
		if err := m.join(ctx); err != nil {
			return nil, err
		}
	}
	// Owned by m (m.wg); started after a --join succeeded, so it never
	// mistakes a master that is still joining for a removed one.
	m.wg.Go(m.watchRemoval)
	if cfg.Fault != NoFault {
		m.logger.Warn("UNSAFE FAULT ENABLED: this master is deliberately broken for harness self-tests", "fault", cfg.Fault)
	}
	m.logger.Info("master running", "id", cfg.ID, "addr", m.advertise, "http", m.HTTPAddr())
	ok = true
	return m, nil
}

func prepareDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fieldErr(err, "DataDir", "cannot create the data dir %s; choose a {DataDir} this user can write", dir)
	}
	f, err := os.CreateTemp(dir, ".write-probe-*")
	if err != nil {
		return fieldErr(err, "DataDir", "the data dir %s is not writable; choose a {DataDir} this user can write", dir)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// portError is a *ConfigError for the field whose address addr could not
// be listened on.
func portError(what, field, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fieldErr(err, field, "the %s port %s is already in use: choose another {%s} or stop the process using it", what, addr, field)
	}
	return fieldErr(err, field, "cannot listen on %s for the %s port ({%s})", addr, what, field)
}

// ID returns this master's ID.
func (m *Master) ID() string { return m.cfg.ID }

// Addr returns the address other nodes dial for Raft and RPC.
func (m *Master) Addr() string { return m.advertise }

// HTTPAddr returns the HTTP listen address, or "" if HTTP is off.
func (m *Master) HTTPAddr() string {
	if m.httpLn == nil {
		return ""
	}
	return m.httpLn.Addr().String()
}

// IsLeader reports whether this master is the Raft leader right now.
func (m *Master) IsLeader() bool { return m.raft.State() == raft.Leader }

// Leader returns the leader this master knows of ("" if none).
func (m *Master) Leader() (id, addr string) {
	a, i := m.raft.LeaderWithID()
	return string(i), string(a)
}

// shutdownStepGrace bounds each shutdown step that can hang on something
// outside this process: draining HTTP requests, and raft's stop, which
// waits for replication to followers that may be paused or cut off.
const shutdownStepGrace = time.Second

// raftStuckGrace is how long shutdown waits for raft after closing the
// connections under it, before it abandons raft (see shutdown), unless
// Shutdown's context ends first.
const raftStuckGrace = 10 * time.Second

// DefaultShutdownTimeout is the shutdown budget a caller should give
// Shutdown's context when it has no other (the CLI's --shutdown-timeout):
// a hand-off, draining HTTP and stopping raft take well under a second; a
// raft held by a paused follower is cut loose after a second and, if it
// still has not stopped when the budget ends, abandoned. It fits inside
// the systemd unit's TimeoutStopSec (20 s).
const DefaultShutdownTimeout = 10 * time.Second

// afterDeadlineGrace is what raft gets to stop, once its connections are
// closed, when Shutdown's context has already ended: closing them
// normally frees it at once.
const afterDeadlineGrace = 200 * time.Millisecond

// errRaftStuck is returned by a shutdown that had to abandon raft.
var errRaftStuck = errors.New("raft did not stop within its grace period; abandoned it (the log store stays open until the process exits)")

// Shutdown stops the master gracefully, in this order: stop serving HTTP,
// hand leadership to another voter if this master leads, stop serving
// RPC, stop the background work, stop Raft, close the transport, close the
// log store. It blocks until every goroutine the master tracks has ended
// (all but helpers blocked on a raft future that raft abandoned when it
// stopped; see batcher.apply and verifier.startLocked).
//
// ctx bounds the graceful part. HTTP requests get until ctx ends or
// shutdownStepGrace passes, then their connections are closed; the
// leadership hand-off is abandoned when ctx ends; raft gets until ctx ends
// or shutdownStepGrace passes to stop, then the connections under it are
// closed so that a hung follower cannot hold it; if raft still has not
// stopped when ctx ends (or raftStuckGrace passes, for a ctx without a
// deadline), it is abandoned (errRaftStuck). So with a ctx that ends,
// Shutdown returns shortly after it: the steps left only close files.
// Whatever ctx does, Shutdown releases everything before it returns.
//
// It returns raft's and the log store's errors, joined with ctx's error if
// ctx ended before the graceful steps finished. Only the first call of
// Shutdown, Close or CloseNow does the work; later calls wait for it and
// return its result.
func (m *Master) Shutdown(ctx context.Context) error {
	m.closeOnce.Do(func() { m.closeErr = m.shutdown(ctx, true) })
	return m.closeErr
}

// Close is Shutdown with no deadline beyond each step's own grace
// (shutdownStepGrace). Safe to call more than once.
func (m *Master) Close() error { return m.Shutdown(context.Background()) }

// CloseNow stops the master without handing off leadership: the closest an
// in-process test gets to a crash (followers notice only by timeout).
func (m *Master) CloseNow() error {
	m.closeOnce.Do(func() { m.closeErr = m.shutdown(context.Background(), false) })
	return m.closeErr
}

func (m *Master) closeNow() { _ = m.CloseNow() }

// waitStep waits for done until ctx ends or grace passes. It reports
// whether done arrived, and whether ctx ended first.
func waitStep[T any](ctx context.Context, done <-chan T, grace time.Duration) (v T, ok, ctxEnded bool) {
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case v = <-done:
		return v, true, false
	case <-ctx.Done():
		return v, false, true
	case <-t.C:
		return v, false, false
	}
}

func (m *Master) shutdown(ctx context.Context, graceful bool) error {
	var errs []error
	cut := false // ctx ended before a graceful step finished
	m.stopTrackers(ctx)
	if m.httpSrv != nil {
		hctx, cancel := context.WithTimeout(ctx, shutdownStepGrace)
		if err := m.httpSrv.Shutdown(hctx); err != nil {
			cut = cut || ctx.Err() != nil
			_ = m.httpSrv.Close()
		}
		cancel()
	}
	if m.dash != nil {
		m.dash.close() // ends the event streams and waits for their poller
	}
	if graceful && m.raft != nil && m.IsLeader() && m.otherVoters() > 0 && ctx.Err() != nil {
		cut = true // no time left to hand off leadership
	} else if graceful && m.raft != nil && m.IsLeader() && m.otherVoters() > 0 {
		f := m.raft.LeadershipTransfer()
		// Owned by shutdown; ends when raft answers the transfer,
		// which it does within its election timeout or when it stops.
		done := make(chan error, 1)
		go func() { done <- f.Error() }()
		select {
		case err := <-done:
			if err != nil {
				m.logger.Warn("leadership transfer before shutdown failed", "err", err)
			} else {
				m.logger.Info("handed off leadership before shutdown")
			}
		case <-ctx.Done():
			cut = true
			m.logger.Warn("shutdown deadline passed during leadership hand-off; stopping without it")
		}
	}
	if m.rpc != nil {
		m.rpc.Close()
	}
	m.cancel()
	if m.raft != nil {
		// raft.Shutdown waits for its replication goroutines, and one
		// blocked on a paused or cut-off follower would hold it for the
		// transport's whole I/O timeout. If it has not finished promptly,
		// close the connections under it.
		f := m.raft.Shutdown()
		// Owned by shutdown, which waits for it below.
		done := make(chan error, 1)
		go func() { done <- f.Error() }()
		err, ok, ctxEnded := waitStep(ctx, done, shutdownStepGrace)
		if !ok {
			cut = cut || ctxEnded
			m.logger.Warn("raft is slow to stop; closing its connections")
			m.mux.Close()
			m.mux.CloseConns()
			_ = m.raftTrans.Close()
			wctx := ctx
			if ctx.Err() != nil {
				// The budget is spent: give raft only a moment.
				var cancel context.CancelFunc
				wctx, cancel = context.WithTimeout(context.Background(), afterDeadlineGrace)
				defer cancel()
			}
			if err, ok, _ = waitStep(wctx, done, raftStuckGrace); !ok {
				// hashicorp/raft can leave a goroutine blocked for good
				// when leadership moves during a hand-off (raft#696):
				// its Shutdown then never returns. Abandon it rather
				// than hang the process; the log store stays open (a
				// goroutine of raft's may still hold it) until the
				// process exits.
				m.logger.Error("raft did not stop; abandoning it", "shutdown_budget_ended", ctx.Err() != nil)
				m.cancel()
				return errors.Join(append(errs, errRaftStuck)...)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
	}
	m.wg.Wait()
	if m.raftTrans != nil {
		_ = m.raftTrans.Close()
	}
	if m.raftLayer != nil {
		// No raft handler may touch the stable store once it is closed.
		m.raftLayer.quiesce(shutdownStepGrace)
	}
	if m.client != nil {
		_ = m.client.Close()
	}
	if m.mux != nil {
		_ = m.mux.Close()
	}
	if m.store != nil {
		if err := m.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft log: %w", err))
		}
	}
	if cut {
		errs = append(errs, fmt.Errorf("shutdown was cut short: %w", context.Cause(ctx)))
	}
	m.logger.Info("master stopped", "id", m.cfg.ID)
	return errors.Join(errs...)
}

func (m *Master) otherVoters() int {
	f := m.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	n := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != raft.ServerID(m.cfg.ID) {
			n++
		}
	}
	return n
}

// watchLeadership drains raft's NotifyCh (an unread NotifyCh would block
// raft) and runs a leader session for each term this master leads. It owns
// the sessions: each is cancelled when leadership changes, and it waits for
// all of them before it returns, once m.ctx ends.
func (m *Master) watchLeadership() {
	var sessions sync.WaitGroup
	defer sessions.Wait()
	var cancel context.CancelFunc
	stop := func() {
		if cancel != nil {
			cancel()
			cancel = nil
		}
	}
	defer stop()
	for {
		select {
		case isLeader := <-m.notifyCh:
			stop()
			if isLeader {
				ctx, c := context.WithCancel(m.ctx)
				cancel = c
				// Only this goroutine calls sessions.Go, and it calls
				// sessions.Wait only after its last Go.
				sessions.Go(func() { m.leaderSession(ctx) })
			}
		case <-m.ctx.Done():
			return
		}
	}
}

// leaderSession runs while this master leads, until ctx ends: it waits for
// a Barrier so the FSM holds every entry of earlier terms (only then may
// reads be served here), gives every peer a full lease, and expires silent
// peers.
func (m *Master) leaderSession(ctx context.Context) {
	m.logger.Info("became leader; waiting for barrier before serving reads")
	var term uint64
	for {
		term = m.raft.CurrentTerm()
		err := m.barrier(ctx)
		if err == nil && m.raft.CurrentTerm() == term {
			break
		}
		if ctx.Err() != nil || m.raft.State() != raft.Leader {
			return
		}
		m.logger.Warn("barrier failed; retrying", "err", err)
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return
		}
	}
	if ctx.Err() != nil {
		return // leadership moved on while the barrier completed
	}
	// Re-anchor the command clock on this master's wall clock, never
	// before what the FSM has applied, and give every swarm record a full
	// lifetime on it (clock.go). Lease ages are monotonic.
	m.clock.anchor()
	m.fsm.TouchAllSwarmPeers(m.clock.read())
	since := time.Now()
	m.leases.reset(since)
	m.reads.markReady(term)
	m.logger.Info("leader ready", "applied_index", m.fsm.AppliedIndex())
	// Owned by this session, which waits for it; it ends with ctx.
	var ap sync.WaitGroup
	defer ap.Wait()
	ap.Go(func() { m.runAutopilot(ctx) })
	var expiries sync.WaitGroup
	defer expiries.Wait()
	expiries.Go(func() { m.expireSwarms(ctx, since) })
	m.expirer.run(ctx)
}

// barrier runs a raft Barrier and waits for it to apply, or for ctx to end.
// A barrier future carries no shutdown channel, so one that raft never
// answers (seen once under load, as raft stopped) would otherwise hold the
// leader session, and with it Close, for good. The goroutine waiting on the
// future ends when raft answers it.
func (m *Master) barrier(ctx context.Context) error {
	f := m.raft.Barrier(m.cfg.ApplyTimeout)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// leaderReady reports whether this master leads and its FSM has caught up
// with its term's barrier.
func (m *Master) leaderReady() bool { return m.reads.leaderReady() }
