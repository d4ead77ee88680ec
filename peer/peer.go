package peer

// This file owns the Peer's configuration and lifecycle: Config, New,
// Close, Leave, and the accessors. New sets every field before it starts a
// goroutine, and the set fields are read-only after, except those whose
// doc names an owner (served, joined, conns, closing). The goroutines of a
// Peer and their owners are listed at Peer.syncWG and Peer.wg; the
// registration loops are in registry.go, the piece server in server.go,
// downloads in download.go.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/internal/connset"
	"fileshare/internal/defaults"
	"fileshare/relay"
	"fileshare/transport"
)

// Config configures a Peer. A zero field means its default; New copies the
// Config and never edits the caller's.
type Config struct {
	// Masters lists the cluster ports of the masters (host:port). Any
	// subset that includes a live master will do. Required.
	Masters []string
	// DataDir holds the peer's identity (peer.key, mode 0600: an Ed25519
	// key from which the peer ID is derived), its hash cache and a lock
	// that keeps a second process out. Created if missing. It is never
	// shared, even when it lies inside ShareDir. Required.
	DataDir string
	// CA verifies the masters (the cluster CA, from --trusted-ca-file):
	// with it the peer talks to masters only over TLS, presenting its key
	// as its client certificate. Nil means the masters run without TLS
	// (--insecure); piece connections between peers are TLS either way.
	CA *transport.TLS
	// ShareDir is the share folder: every regular file under it,
	// recursively, is registered in the index and served to other peers,
	// and a rescan keeps the index in step as files come and go. Created
	// if missing. Empty means a download-only peer: it never joins the
	// index (it has nothing to offer) and cannot seed.
	ShareDir string
	// IncludeHidden shares dotfiles and dot-folders (".env", ".git/")
	// too; by default they are skipped, as they often hold secrets.
	IncludeHidden bool
	// Listen is the host:port of the peer's one listener, where it serves
	// pieces. Empty means ":0" (any interface, a free port). If the host is
	// a specific IP, the peer's outgoing connections leave from it too.
	Listen string
	// Advertise is the address other peers dial to fetch pieces. Empty
	// means the listen address, or, if that is a wildcard, the local IP
	// the kernel would use to reach the first master, with the listen port.
	Advertise string

	// RescanInterval is how often the share folder is scanned for new,
	// changed and removed files. Zero means 2 s.
	RescanInterval time.Duration
	// HeartbeatInterval is how often the peer renews its lease. Zero means
	// a third of the lease the masters report (5 s for their default 15 s).
	HeartbeatInterval time.Duration
	// MaxUploads caps the piece connections served at once. Zero means 16.
	MaxUploads int
	// IOTimeout bounds each piece-protocol step: a response must begin
	// arriving, and a piece must be sent, within it. Zero means 20 s.
	IOTimeout time.Duration
	// IdleTimeout is how long the piece server keeps a connection with no
	// request. Zero means 2 min.
	IdleTimeout time.Duration
	// MasterTimeout bounds one call to one master before the client tries
	// another. Zero means 5 s.
	MasterTimeout time.Duration

	// NATInterval is how often the peer asks a master which address its
	// connections come from and whether the master can dial it back
	// (reachability). Zero means DefaultNATInterval.
	NATInterval time.Duration
	// Relay offers this peer as a relay for peers that cannot connect
	// otherwise, when a master finds it reachable. It relays only
	// ciphertext, within RelayLimits. Off by default.
	Relay bool

	// Logger receives the peer's logs. Nil discards them.
	Logger *slog.Logger

	// corruptPieces, if set, may modify each piece just before the piece
	// server sends it: a test-only hook that turns the peer into a liar.
	corruptPieces func(fileID string, index int, b []byte)
	// relayTap, if set with Relay, sees every chunk this peer relays: a
	// test-only hook that proves a relay never holds plaintext.
	relayTap func([]byte)
	// skipPaths, if set, are connection paths (PathPunch…) the ladder
	// skips: a test-only hook to reach the rungs below them.
	skipPaths []string
}

// DefaultConfig returns the value every tunable field of Config takes when
// it is zero, so a caller (the CLI's flags) can show and start from them.
// HeartbeatInterval stays zero: its default derives from the masters'
// lease. Listen's default, ":0", is filled by New.
func DefaultConfig() Config {
	return Config{
		RescanInterval: 2 * time.Second,
		MaxUploads:     16,
		IOTimeout:      20 * time.Second,
		IdleTimeout:    2 * time.Minute,
		MasterTimeout:  5 * time.Second,
		NATInterval:    DefaultNATInterval,
	}
}

func (c Config) withDefaults() (Config, error) {
	if c.DataDir == "" {
		return c, configErr("DataDir", "{DataDir} is required (the peer keeps its identity and hash cache there)")
	}
	if len(c.Masters) == 0 {
		return c, fieldErr(fmt.Errorf("%w: %w", ErrConfig, client.ErrNoMasters), "Masters", "give the masters' cluster ports in {Masters}, e.g. 127.0.0.1:7001,127.0.0.1:7002")
	}
	c.Masters = slices.Clone(c.Masters)
	defaults.Fill(&c.Listen, ":0")
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return c, configErr("Listen", "{Listen} %q is not host:port: %v", c.Listen, err)
	}
	if c.Advertise != "" {
		if _, port, err := net.SplitHostPort(c.Advertise); err != nil || port == "0" {
			return c, configErr("Advertise", "{Advertise} %q must be host:port with a fixed port", c.Advertise)
		}
	}
	d := DefaultConfig()
	defaults.Fill(&c.RescanInterval, d.RescanInterval)
	defaults.Fill(&c.IOTimeout, d.IOTimeout)
	defaults.Fill(&c.IdleTimeout, d.IdleTimeout)
	defaults.Fill(&c.MasterTimeout, d.MasterTimeout)
	defaults.Fill(&c.NATInterval, d.NATInterval)
	defaults.Fill(&c.MaxUploads, d.MaxUploads)
	for _, f := range []struct {
		field string
		d     time.Duration
	}{{"RescanInterval", c.RescanInterval}, {"HeartbeatInterval", c.HeartbeatInterval}, {"IOTimeout", c.IOTimeout}, {"IdleTimeout", c.IdleTimeout}, {"MasterTimeout", c.MasterTimeout}} {
		if f.d < 0 {
			return c, configErr(f.field, "{%s} is negative (%v)", f.field, f.d)
		}
	}
	if c.MaxUploads < 0 {
		return c, configErr("MaxUploads", "{MaxUploads} is negative (%d)", c.MaxUploads)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Peer is a FileShare peer: it shares the files of its share folder, serves
// their pieces to other peers, searches the index and downloads files from
// several holders at once. Create it with New and stop it with Close (keeps
// the registrations until the lease expires) or Leave (removes them at
// once). All methods are safe for concurrent use.
type Peer struct {
	cfg    Config
	logger *slog.Logger
	id     client.Identity
	addr   string // advertised piece-server address
	lock   *os.File
	mux    *transport.Mux // nil for a download-only peer: it listens nowhere
	tls    *transport.TLS // the peer's key as a certificate, and the cluster CA
	client *client.Client
	store  *store // nil for a download-only peer

	counters peerCounters  // for /metrics (httpstatus.go)
	nat      natState      // reachability and pending reversals (nat.go)
	lastPath sync.Map      // holder peer ID -> the path that last reached it (nat.go)
	quicMu   sync.Mutex    // guards quic
	quic     *quicState    // UDP socket and QUIC transport, started on first use (punch.go)
	relaySrv *relay.Server // circuits relayed for others, with Config.Relay (relay.go)

	// served maps file ID to the file the piece server may send: files
	// found by the last scan that the index has acknowledged. Written by
	// the sync goroutine only, read by the piece server.
	served atomic.Pointer[map[string]*sharedFile]
	// joined is true once the index accepted this peer's JoinPeer, and
	// false again when a heartbeat learns that the index expired it.
	joined atomic.Bool

	// reach is what the sync and heartbeat goroutines know of whether
	// the masters answer; it reports outages at a slow pace (registry.go).
	reach reachability
	// changed holds the share-folder paths the piece server found no
	// longer matching the hashes they were registered with; the sync
	// goroutine takes them, drops their cache entries and rescans.
	changedMu sync.Mutex
	changed   map[string]bool

	// done is closed, once, when the peer stops for good: on a permanent
	// refusal by the index, or when Close begins. stopErr, set before
	// done is closed, says why (see Err).
	done     chan struct{}
	stopOnce sync.Once
	stopErr  error

	syncKick  chan struct{} // wakes the sync goroutine (cap 1)
	hbKick    chan struct{} // wakes the heartbeat goroutine (cap 1)
	rescanReq chan rescanRequest

	conns connset.Set // upload connections (server.go, nat.go, punch.go, relay.go)

	// Goroutines and who owns them. syncWG counts the sync and heartbeat
	// goroutines (registry.go), started by New and stopped by syncCancel.
	// wg counts everything else that runs peer code: the piece server's
	// accept loop, started by New; one goroutine per upload connection,
	// started by that loop (which holds its own count meanwhile, so these
	// Adds never race Close's Wait); and each Download call, on its
	// caller's goroutine, admitted by enter. A download's own goroutines
	// (workers, lookups, verifiers) are owned by the download, which waits
	// for them before Download returns (coordinator.go, verify.go).
	ctx        context.Context // ends on Close
	cancel     context.CancelFunc
	syncCancel context.CancelFunc // stops the sync and heartbeat goroutines
	syncWG     sync.WaitGroup
	wg         sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error
	leaveOnce  sync.Once

	// lifeMu orders enter against Close: once closing is set, no caller
	// joins wg, so wg.Add never runs while Close may be in wg.Wait (the
	// rule transport.Server.Serve follows too).
	lifeMu  sync.Mutex
	closing bool
}

// New starts a peer: it takes the data dir's lock, loads or creates the
// identity, listens, and starts serving pieces. A peer with a share folder
// then joins the index through any master, scans and registers its files,
// and heartbeats, all in the background: New does not wait for the masters
// (call Rescan to wait until the index holds the share folder's files).
// After a restart with the same data dir the peer keeps its ID, re-announces
// what it shares, and unregisters what it shared before but no longer has.
func New(cfg Config) (*Peer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, configErr("DataDir", "cannot create the data dir %s: %v; choose a {DataDir} this user can write", cfg.DataDir, err)
	}
	p := &Peer{
		cfg:       cfg,
		syncKick:  make(chan struct{}, 1),
		hbKick:    make(chan struct{}, 1),
		rescanReq: make(chan rescanRequest),
		done:      make(chan struct{}),
	}
	ok := false
	defer func() {
		if !ok {
			p.release()
		}
	}()
	if p.lock, err = lockDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	if p.id, err = loadIdentity(cfg.DataDir); err != nil {
		return nil, err
	}
	p.logger = cfg.Logger.With("peer", p.id.PeerID)
	if p.tls, err = p.id.TLS(cfg.CA); err != nil {
		return nil, err
	}
	// Only a sharing peer listens: a download-only peer (fileshare get
	// without --seed) opens no port at all.
	if cfg.ShareDir != "" {
		if p.mux, err = transport.ListenMux(transport.MuxConfig{Addr: cfg.Listen, Logger: p.logger, TLS: p.tls}); err != nil {
			return nil, configErr("Listen", "{Listen} %s: %v; choose another port or stop the process using it", cfg.Listen, err)
		}
		if p.addr, err = advertiseAddr(cfg.Advertise, p.mux.Addr().String(), cfg.Masters); err != nil {
			return nil, err
		}
	}
	if p.client, err = client.New(client.Config{Masters: cfg.Masters, AttemptTimeout: cfg.MasterTimeout, Dial: p.dialMaster}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if cfg.ShareDir != "" {
		if p.store, err = openStore(cfg.ShareDir, cfg.DataDir, cfg.IncludeHidden, p.logger); err != nil {
			return nil, err
		}
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	syncCtx, syncCancel := context.WithCancel(p.ctx)
	p.syncCancel = syncCancel
	if p.mux != nil {
		ln := p.mux.Listener(transport.StreamPiece)
		p.wg.Go(func() { p.servePieces(ln) })
	}
	p.startNAT(syncCtx)
	if p.store != nil {
		p.syncWG.Go(func() { p.syncLoop(syncCtx) })
		p.syncWG.Go(func() { p.heartbeatLoop(syncCtx) })
	}
	p.logger.Info("peer running", "addr", p.addr, "share", cfg.ShareDir, "data_dir", cfg.DataDir)
	ok = true
	return p, nil
}

// dialMaster dials a master: over TLS, verifying the cluster CA and
// presenting the peer's key, if the peer has a CA; plaintext otherwise.
// Connections leave from the peer's own IP when it listens on one.
func (p *Peer) dialMaster(addr string, kind byte, timeout time.Duration) (net.Conn, error) {
	var cfg *tls.Config
	if p.cfg.CA != nil {
		cfg = p.tls.MasterClientConfig()
	}
	if p.mux != nil {
		return p.mux.DialStreamTLS(addr, kind, timeout, cfg)
	}
	return transport.DialStreamTLS(addr, kind, timeout, cfg)
}

// advertiseAddr picks the address other peers dial: adv if given, else the
// listen address, else (wildcard listen) the local IP routed towards the
// first master with the listen port.
func advertiseAddr(adv, listen string, masters []string) (string, error) {
	if adv != "" {
		return adv, nil
	}
	host, port, _ := net.SplitHostPort(listen)
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		return listen, nil
	}
	// A UDP "dial" sends nothing; it only asks the kernel for a route.
	c, err := net.Dial("udp", strings.TrimSpace(masters[0]))
	if err != nil {
		return "", configErr("Advertise", "listening on the wildcard address %s and cannot find a local IP routed to %s (%v); set {Advertise} to HOST:PORT", listen, masters[0], err)
	}
	defer c.Close()
	local := c.LocalAddr().(*net.UDPAddr)
	return net.JoinHostPort(local.IP.String(), port), nil
}

// ID returns the peer's stable ID.
func (p *Peer) ID() string { return p.id.PeerID }

// Addr returns the address other peers dial to fetch pieces from this peer.
// It starts as Config.Advertise or the listen address; without
// Config.Advertise, once a master reaches the peer at the address its
// connections come from (a home router forwarding the port), it is that
// address, which the index then lists.
func (p *Peer) Addr() string {
	if a := p.nat.public.Load(); a != nil {
		return *a
	}
	return p.addr
}

// Client returns the peer's client.Client, for calls the Peer does not wrap
// (Peers, ClusterStatus…). It is closed by Close.
func (p *Peer) Client() *client.Client { return p.client }

// SharedFile describes a file this peer shares and the index has
// acknowledged.
type SharedFile struct {
	ID        string
	Name      string // as registered: the path relative to the share folder
	Size      int64
	PieceSize int64
}

// Shared returns the files this peer currently serves (found by the last
// scan and acknowledged by the index), sorted by name.
func (p *Peer) Shared() []SharedFile {
	m := p.served.Load()
	if m == nil {
		return nil
	}
	out := make([]SharedFile, 0, len(*m))
	for _, f := range *m {
		out = append(out, SharedFile{ID: f.ID, Name: f.Name, Size: f.Size, PieceSize: f.PieceSize})
	}
	slices.SortFunc(out, func(a, b SharedFile) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Rescan scans the share folder now and brings the index in step: it joins
// first if needed, registers new and changed files, unregisters removed
// ones. It blocks until a scan that began after the call has finished and
// returns that scan's error (a master error, once ctx allows no more
// retries), or ctx's error, or ErrClosed. A download-only peer returns
// ErrConfig.
func (p *Peer) Rescan(ctx context.Context) error {
	return p.rescan(ctx, nil)
}

// Close stops the peer without telling the index: it stops scanning and
// heartbeating, stops serving (severing uploads in progress), aborts
// downloads in progress (they resume when started again), and releases the
// data dir. The index keeps this peer's registrations until its lease
// expires — or, if the peer starts again first with the same data dir, for
// good. Use Leave to remove them at once. Safe to call more than once.
func (p *Peer) Close() error {
	p.closeOnce.Do(func() {
		p.stop(ErrClosed)
		p.lifeMu.Lock()
		p.closing = true
		p.lifeMu.Unlock()
		p.cancel()
		p.syncWG.Wait()
		if p.mux != nil {
			_ = p.mux.Close()
		}
		p.conns.Close()
		p.wg.Wait()
		p.release()
		p.logger.Info("peer stopped")
	})
	return p.closeErr
}

// Done returns a channel that is closed when the peer stops for good:
// when the index refuses its join, registrations or heartbeats for a reason
// retrying cannot change (Err then returns an error wrapping ErrRefused),
// or when Close or Leave begins (Err returns ErrClosed). Transient trouble
// (no master reachable, no leader, timeouts) never closes it: the peer
// keeps retrying and logs the outage. After a refusal the peer no longer
// registers or heartbeats, so the index drops it when its lease expires;
// it still serves what it had registered and may download until closed.
// A program running a peer as a daemon selects on Done to exit with Err.
func (p *Peer) Done() <-chan struct{} { return p.done }

// Err returns nil while the peer runs; once Done is closed, it returns
// why: an error wrapping ErrRefused (and the masters' error, for
// errors.Is) that says what was refused and what to do, or ErrClosed.
func (p *Peer) Err() error {
	select {
	case <-p.done:
		return p.stopErr
	default:
		return nil
	}
}

// stop records err as the reason the peer stopped and closes done, the
// first time it is called; later calls do nothing. On a refusal (any err
// but ErrClosed) it also stops the sync and heartbeat goroutines. Safe
// from any goroutine.
func (p *Peer) stop(err error) {
	p.stopOnce.Do(func() {
		p.stopErr = err
		// Log before closing done: whoever waits on Done may read the
		// log next.
		if err != ErrClosed {
			p.logger.Error("stopping: the index refuses this peer; it no longer registers files or heartbeats", "err", err)
		}
		close(p.done)
		if err != ErrClosed && p.syncCancel != nil {
			p.syncCancel()
		}
	})
}

// enter admits a caller that must finish before Close returns (a
// Download) by adding it to wg, and returns true; the caller must call
// wg.Done when it ends. It returns false, adding nothing, once Close has
// begun.
func (p *Peer) enter() bool {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	if p.closing {
		return false
	}
	p.wg.Add(1)
	return true
}

// release frees what New acquired, in reverse order.
func (p *Peer) release() {
	var errs []error
	p.closeQUIC()
	if p.client != nil {
		errs = append(errs, p.client.Close())
	}
	if p.mux != nil {
		_ = p.mux.Close()
	}
	if p.store != nil {
		errs = append(errs, p.store.close())
	}
	if p.lock != nil {
		errs = append(errs, p.lock.Close())
	}
	p.closeErr = errors.Join(errs...)
}

// Leave removes this peer and all its registrations from the index (only
// this peer can: the masters check its secret), then closes it. It first
// stops scanning and heartbeating so nothing is registered again. It blocks
// until the index acknowledges or ctx ends; the peer is closed either way.
// A download-only peer, which never joined, just closes.
func (p *Peer) Leave(ctx context.Context) error {
	var err error
	p.leaveOnce.Do(func() {
		p.stop(ErrClosed)
		p.syncCancel()
		p.syncWG.Wait()
		if p.store != nil {
			p.served.Store(nil)
			if _, lerr := p.client.Leave(ctx, p.id); lerr != nil && !errors.Is(lerr, fsm.ErrUnknownPeer) {
				err = fmt.Errorf("leave the index: %w", lerr)
			} else {
				p.joined.Store(false)
				p.logger.Info("left the index")
			}
		}
	})
	return errors.Join(err, p.Close())
}
