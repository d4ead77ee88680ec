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

	"github.com/hashicorp/go-hclog"
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
	httpAddr  boundAddr // httpLn's address

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
//
// The phases run in order: prepareDataDir, listen, openStorage, startRaft,
// bootstrapOrRestart, startServices, then the join. If any phase fails,
// New tears down whatever the earlier phases started (closeNow) and
// returns the error.
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
	if err := m.listen(); err != nil {
		return nil, err
	}
	st, err := m.openStorage()
	if err != nil {
		return nil, err
	}
	hasState, err := m.startRaft(ctx, st)
	if err != nil {
		return nil, err
	}
	if err := m.bootstrapOrRestart(ctx, hasState); err != nil {
		return nil, err
	}
	if err := m.startServices(); err != nil {
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

// listen is New's first phase after the data dir check: it opens the
// cluster port (m.mux) behind the trust gate, settles the advertised
// address and checks it against InitialCluster, and makes the RPC client
// that dials through the mux.
func (m *Master) listen() error {
	cfg := m.cfg
	var err error
	m.joins.max = cfg.MaxPeersPerIP
	m.gate = newTrustGate(m)
	lim := cfg.ClusterPort
	if m.mux, err = transport.ListenMux(transport.MuxConfig{Addr: cfg.Listen, Logger: m.logger, TLS: cfg.TLS, Authorize: m.authorizeStream,
		Gate: m.gate, MaxConns: lim.MaxConns, MaxConnsPerIP: lim.MaxConnsPerIP, MaxMemberConns: lim.MaxMemberConns}); err != nil {
		return portError("cluster", "Listen", cfg.Listen, err)
	}
	m.advertise = cfg.Advertise
	if m.advertise == "" {
		m.advertise = m.mux.Addr().String()
		if err := checkDialable(m.advertise); err != nil {
			return configErr("Advertise", "{Listen} %s %v; set {Advertise}", cfg.Listen, err)
		}
	}
	for _, mem := range cfg.InitialCluster {
		if mem.ID == cfg.ID && mem.Addr != m.advertise {
			return configErr("InitialCluster", "{InitialCluster} gives %s the address %s, but this master listens at %s", cfg.ID, mem.Addr, m.advertise)
		}
	}
	m.client = transport.NewClient(transport.ClientConfig{Dial: m.mux.DialStream})
	return nil
}

// raftStorage is what openStorage hands to startRaft: the log, stable and
// snapshot stores raft runs on, and the logger raft writes through.
type raftStorage struct {
	logStore raft.LogStore      // the log store raft runs on (disk checks over bolt)
	snaps    raft.SnapshotStore // the snapshot store raft runs on
	hcl      hclog.Logger       // raft's logger, bridged to m.logger
}

// openStorage is New's storage phase: it opens the raft log (m.store,
// refusing a data dir another master holds) and the snapshot store, applies
// the StorageHooks wrappers, and refuses damaged snapshots or logs before
// raft reads them (storage.go).
func (m *Master) openStorage() (raftStorage, error) {
	cfg := m.cfg
	var err error
	if err := checkBolt(cfg.DataDir, filepath.Join(cfg.DataDir, "raft.db")); err != nil {
		return raftStorage{}, err
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
			return raftStorage{}, dataDirLocked(cfg.DataDir)
		}
		return raftStorage{}, fmt.Errorf("open raft log in %s: %w", cfg.DataDir, err)
	}
	hcl := newHCLogBridge(m.logger, "raft")
	fileSnaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hcl)
	if err != nil {
		return raftStorage{}, fmt.Errorf("open snapshot store in %s: %w", cfg.DataDir, err)
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
		return raftStorage{}, err
	}
	if err := checkLogs(cfg.DataDir, disk, snapIndex); err != nil {
		return raftStorage{}, err
	}
	return raftStorage{logStore: logStore, snaps: snaps, hcl: hcl}, nil
}

// startRaft is New's raft phase: it makes raft's transport over the mux,
// configures raft from m.cfg, applies a Restore backup and a lost-quorum
// recovery file if there is one, and starts raft (m.raft). hasState says
// whether the data dir held raft state (or a restored backup) before.
func (m *Master) startRaft(ctx context.Context, st raftStorage) (hasState bool, err error) {
	cfg := m.cfg
	hcl, snaps, logStore := st.hcl, st.snaps, st.logStore
	advAddr, err := net.ResolveTCPAddr("tcp", m.advertise)
	if err != nil {
		return false, fmt.Errorf("%w: advertise address %s: %v", ErrConfig, m.advertise, err)
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
		return false, fmt.Errorf("%w: %v", ErrConfig, err)
	}

	logs, err := raft.NewLogCache(1024, logStore)
	if err != nil {
		return false, err
	}
	hasState, err = raft.HasExistingState(logs, m.store, snaps)
	if err != nil {
		return false, fmt.Errorf("read raft state in %s: %w", cfg.DataDir, err)
	}
	if cfg.Restore != "" { // a new cluster from a backup (restore.go)
		restored, err := restoreBackup(cfg, hasState, m.store, snaps, m.raftTrans)
		if err != nil {
			return false, err
		}
		hasState = hasState || restored
	}
	// Lost-quorum recovery, if the data dir holds a recovery file (recover.go).
	if _, err := m.recoverFromFile(ctx, rc, hasState, logs, snaps); err != nil {
		return false, err
	}
	guard := &restoreGuard{FSM: m.fsm}
	m.raft, err = raft.NewRaft(rc, guard, logs, m.store, snaps, pipelineTransport{m.raftTrans}) // raftpipe.go
	// A failed restore is damage whether raft then fell back to an older
	// snapshot or, having none that restores, failed itself ("failed to
	// load any existing snapshots").
	if rerr := guard.restoreFailed(); rerr != nil {
		return false, damaged(cfg.DataDir, "the newest snapshot (state.bin)", rerr)
	}
	if err != nil {
		return false, fmt.Errorf("start raft: %w", err)
	}
	m.raftReady.Store(true)
	m.gate.refresh(ctx)
	return hasState, nil
}

// bootstrapOrRestart is New's phase after raft starts: a master with no
// raft state and an InitialCluster bootstraps that configuration; one
// restarting from its own state checks that it was not removed.
func (m *Master) bootstrapOrRestart(ctx context.Context, hasState bool) error {
	cfg := m.cfg
	if !hasState && len(cfg.InitialCluster) > 0 {
		var servers []raft.Server
		for _, mem := range cfg.InitialCluster {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(mem.ID), Address: raft.ServerAddress(mem.Addr)})
		}
		// Every member of --initial-cluster bootstraps the same
		// configuration, once: HasExistingState is true on every later
		// start, so a restart with the same flags never bootstraps again.
		if err := m.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("bootstrap cluster: %w", err)
		}
		m.logger.Info("bootstrapped new cluster", "members", len(servers))
	} else if hasState {
		m.logger.Info("restarting from existing raft state", "data_dir", cfg.DataDir)
		if err := m.checkNotRemoved(ctx); err != nil {
			return err
		}
	}
	return nil
}

// startServices is New's serving phase: it builds the metrics, dashboard,
// batcher, read gate, leases, expirer and backup sessions, registers the
// RPC handlers, starts the goroutines m owns (m.wg), and opens the HTTP
// and tracker ports.
func (m *Master) startServices() error {
	cfg := m.cfg
	var err error
	if m.metrics, err = newMetrics(m, cfg.Metrics); err != nil {
		return err
	}
	m.dash = newDashboard(m, m.metrics, m.logger, cfg)
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
			return err
		}
	}
	return m.startTrackers()
}

// prepareDataDir is New's first phase: it creates the data dir if need
// be and checks that this user can write in it.
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
func (m *Master) HTTPAddr() string { return m.httpAddr.String() }

// boundAddr is a listener's address, set once it listens: the RPC server
// (Status) may read it while New is still opening the other ports.
type boundAddr struct{ p atomic.Pointer[string] }

func (b *boundAddr) set(a net.Addr) {
	s := a.String()
	b.p.Store(&s)
}

// String returns the address, or "" before it is set.
func (b *boundAddr) String() string {
	if s := b.p.Load(); s != nil {
		return *s
	}
	return ""
}

// IsLeader reports whether this master is the Raft leader right now.
func (m *Master) IsLeader() bool { return m.raft.State() == raft.Leader }

// Leader returns the leader this master knows of ("" if none).
func (m *Master) Leader() (id, addr string) {
	a, i := m.raft.LeaderWithID()
	return string(i), string(a)
}

// nextTick waits for t's next tick and reports true, or false once ctx
// ends: the background loops New starts read 'for nextTick(ctx, t) { … }'.
func nextTick(ctx context.Context, t *time.Ticker) bool {
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
