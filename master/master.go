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
// Close (graceful: hands off leadership first) or CloseNow (abrupt).
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

	notifyCh chan bool
	batcher  *batcher
	verifier *verifier
	leases   *leaseTable

	// readyTerm is the term in which this master, as leader, saw its
	// Barrier complete: from then on its FSM holds every entry committed
	// before the term began. Leader reads are served only while the
	// current term equals readyTerm.
	readyTerm atomic.Uint64

	ctx       context.Context
	cancel    context.CancelFunc
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
	m := &Master{cfg: cfg, logger: cfg.Logger, fsm: fsm.New(), notifyCh: make(chan bool, 8)}
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
	if m.mux, err = transport.Listen(cfg.Listen, m.logger); err != nil {
		return nil, portError("cluster", "--listen", cfg.Listen, err)
	}
	m.advertise = cfg.Advertise
	if m.advertise == "" {
		m.advertise = m.mux.Addr().String()
		if err := checkDialable(m.advertise); err != nil {
			return nil, fmt.Errorf("%w: --listen %s %v; set --advertise", ErrConfig, cfg.Listen, err)
		}
	}
	for _, mem := range cfg.InitialCluster {
		if mem.ID == cfg.ID && mem.Addr != m.advertise {
			return nil, fmt.Errorf("%w: --initial-cluster gives %s the address %s, but this master listens at %s", ErrConfig, cfg.ID, mem.Addr, m.advertise)
		}
	}
	m.client = transport.NewClient(transport.ClientConfig{Dial: m.mux.DialStream})

	m.store, err = raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(cfg.DataDir, "raft.db"),
		BoltOptions: &bbolt.Options{
			Timeout: time.Second,
			// The freelist is rebuilt on open instead of rewritten on
			// every commit; without this, appends slow down after write
			// bursts as the freelist grows (consul#12141).
			NoFreelistSync: true,
			FreelistType:   bbolt.FreelistMapType,
		},
	})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("open %s: %w; stop the other master or choose another --data-dir", cfg.DataDir, ErrDataDirLocked)
		}
		return nil, fmt.Errorf("open raft log in %s: %w", cfg.DataDir, err)
	}
	hcl := newHCLogBridge(m.logger, "raft")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hcl)
	if err != nil {
		return nil, fmt.Errorf("open snapshot store in %s: %w", cfg.DataDir, err)
	}
	advAddr, err := net.ResolveTCPAddr("tcp", m.advertise)
	if err != nil {
		return nil, fmt.Errorf("%w: advertise address %s: %v", ErrConfig, m.advertise, err)
	}
	m.raftTrans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  newRaftLayer(m.mux, advAddr),
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

	logs, err := raft.NewLogCache(1024, m.store)
	if err != nil {
		return nil, err
	}
	hasState, err := raft.HasExistingState(logs, m.store, snaps)
	if err != nil {
		return nil, fmt.Errorf("read raft state in %s: %w", cfg.DataDir, err)
	}
	m.raft, err = raft.NewRaft(rc, m.fsm, logs, m.store, snaps, m.raftTrans)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
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
	}

	m.batcher = newBatcher(m)
	m.verifier = newVerifier(m.raft)
	m.leases = newLeaseTable()
	m.rpc = transport.NewServer(m.logger)
	m.registerHandlers()

	m.wg.Add(3)
	go func() { defer m.wg.Done(); m.watchLeadership() }()
	go func() { defer m.wg.Done(); m.batcher.run(m.ctx) }()
	go func() {
		defer m.wg.Done()
		if err := m.rpc.Serve(m.mux.Listener(transport.StreamRPC)); err != nil {
			m.logger.Error("rpc server stopped", "err", err)
		}
	}()
	if cfg.HTTP != "" {
		if err := m.startHTTP(); err != nil {
			return nil, err
		}
	}
	if !hasState && len(cfg.Join) > 0 {
		if err := m.join(ctx); err != nil {
			return nil, err
		}
	}
	if cfg.Fault != NoFault {
		m.logger.Warn("UNSAFE FAULT ENABLED: this master is deliberately broken for harness self-tests", "fault", cfg.Fault)
	}
	m.logger.Info("master running", "id", cfg.ID, "addr", m.advertise, "http", m.HTTPAddr())
	ok = true
	return m, nil
}

func prepareDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w; choose a --data-dir this user can write", dir, err)
	}
	f, err := os.CreateTemp(dir, ".write-probe-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w; choose a --data-dir this user can write", dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

func portError(what, flag, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s port %s is already in use: choose another %s or stop the process using it", what, addr, flag)
	}
	return fmt.Errorf("cannot listen on %s (%s): %w", addr, flag, err)
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

// Close shuts the master down gracefully, in this order: stop serving
// HTTP, hand leadership to another voter if this master leads, stop
// serving RPC, stop the background work, stop Raft, close the transport,
// close the log store. Safe to call more than once.
func (m *Master) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.shutdown(true) })
	return m.closeErr
}

// CloseNow stops the master without handing off leadership: the closest an
// in-process test gets to a crash (followers notice only by timeout).
func (m *Master) CloseNow() error {
	m.closeOnce.Do(func() { m.closeErr = m.shutdown(false) })
	return m.closeErr
}

func (m *Master) closeNow() { _ = m.CloseNow() }

func (m *Master) shutdown(graceful bool) error {
	var errs []error
	if m.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = m.httpSrv.Shutdown(ctx)
		cancel()
	}
	if graceful && m.raft != nil && m.IsLeader() && m.otherVoters() > 0 {
		if err := m.raft.LeadershipTransfer().Error(); err != nil {
			m.logger.Warn("leadership transfer before shutdown failed", "err", err)
		} else {
			m.logger.Info("handed off leadership before shutdown")
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
		done := make(chan error, 1)
		go func() { done <- f.Error() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(time.Second):
			m.logger.Warn("raft is slow to stop; closing its connections")
			m.mux.Close()
			m.mux.CloseConns()
			err = <-done
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
	}
	m.wg.Wait()
	if m.raftTrans != nil {
		_ = m.raftTrans.Close()
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
// raft) and runs a leader session for each term this master leads.
func (m *Master) watchLeadership() {
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
				m.wg.Add(1)
				go func() { defer m.wg.Done(); m.leaderSession(ctx) }()
			}
		case <-m.ctx.Done():
			return
		}
	}
}

// leaderSession runs while this master leads: it waits for a Barrier so
// the FSM holds every entry of earlier terms (only then may reads be
// served here), gives every peer a full lease, and expires silent peers.
func (m *Master) leaderSession(ctx context.Context) {
	m.logger.Info("became leader; waiting for barrier before serving reads")
	var term uint64
	for {
		term = m.raft.CurrentTerm()
		err := m.raft.Barrier(m.cfg.ApplyTimeout).Error()
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
	start := m.cfg.Now()
	m.leases.reset(start)
	m.readyTerm.Store(term)
	m.logger.Info("leader ready", "applied_index", m.fsm.AppliedIndex())
	m.expireLoop(ctx)
}

// leaderReady reports whether this master leads and its FSM has caught up
// with its term's barrier.
func (m *Master) leaderReady() bool {
	return m.raft.State() == raft.Leader && m.readyTerm.Load() == m.raft.CurrentTerm()
}
