package peer

import (
	"context"
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
	"fileshare/transport"
)

// Config configures a Peer. A zero field means its default; New copies the
// Config and never edits the caller's.
type Config struct {
	// Masters lists the cluster ports of the masters (host:port). Any
	// subset that includes a live master will do. Required.
	Masters []string
	// DataDir holds the peer's identity (identity.json, mode 0600: a stable
	// peer ID and a 32-byte random secret), its hash cache and a lock that
	// keeps a second process out. Created if missing. Required.
	DataDir string
	// ShareDir is the share folder: every regular file under it,
	// recursively, is registered in the index and served to other peers,
	// and a rescan keeps the index in step as files come and go. Created
	// if missing. Empty means a download-only peer: it never joins the
	// index (it has nothing to offer) and cannot seed.
	ShareDir string
	// Listen is the host:port of the peer's one listener, where it serves
	// pieces. Empty means ":0" (any interface, a free port). If the host is
	// a specific IP, the peer's outgoing connections leave from it too.
	Listen string
	// Advertise is the address other peers dial to fetch pieces. Empty
	// means the listen address, or, if that is a wildcard, the local IP
	// the kernel would use to reach the first master, with the listen port.
	Advertise string
	// PeerID is the ID used when the data dir has no identity yet. Empty
	// means "peer-" and 12 random hex digits. If the data dir already holds
	// an identity with another ID, New fails with ErrIdentity.
	PeerID string

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

	// Logger receives the peer's logs. Nil discards them.
	Logger *slog.Logger

	// corruptPieces, if set, may modify each piece just before the piece
	// server sends it: a test-only hook that turns the peer into a liar.
	corruptPieces func(fileID string, index int, b []byte)
}

func (c Config) withDefaults() (Config, error) {
	if c.DataDir == "" {
		return c, fmt.Errorf("%w: --data-dir is required (the peer keeps its identity and hash cache there)", ErrConfig)
	}
	if len(c.Masters) == 0 {
		return c, fmt.Errorf("%w: %w", ErrConfig, client.ErrNoMasters)
	}
	c.Masters = slices.Clone(c.Masters)
	if c.Listen == "" {
		c.Listen = ":0"
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return c, fmt.Errorf("%w: --listen %q is not host:port: %v", ErrConfig, c.Listen, err)
	}
	if c.Advertise != "" {
		if _, port, err := net.SplitHostPort(c.Advertise); err != nil || port == "0" {
			return c, fmt.Errorf("%w: --advertise %q must be host:port with a fixed port", ErrConfig, c.Advertise)
		}
	}
	if c.PeerID != "" {
		if err := fsm.PeerID(c.PeerID).Validate(); err != nil {
			return c, fmt.Errorf("%w: peer ID: %v", ErrConfig, err)
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.RescanInterval, 2*time.Second)
	def(&c.IOTimeout, 20*time.Second)
	def(&c.IdleTimeout, 2*time.Minute)
	def(&c.MasterTimeout, 5*time.Second)
	if c.MaxUploads == 0 {
		c.MaxUploads = 16
	}
	for name, d := range map[string]time.Duration{"rescan interval": c.RescanInterval, "heartbeat interval": c.HeartbeatInterval, "I/O timeout": c.IOTimeout, "idle timeout": c.IdleTimeout, "master timeout": c.MasterTimeout} {
		if d < 0 {
			return c, fmt.Errorf("%w: %s is negative (%v)", ErrConfig, name, d)
		}
	}
	if c.MaxUploads < 0 {
		return c, fmt.Errorf("%w: max uploads is negative (%d)", ErrConfig, c.MaxUploads)
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
	mux    *transport.Mux
	client *client.Client
	store  *store // nil for a download-only peer

	// served maps file ID to the file the piece server may send: files
	// found by the last scan that the index has acknowledged. Written by
	// the sync goroutine only, read by the piece server.
	served atomic.Pointer[map[string]*sharedFile]
	// joined is true once the index accepted this peer's JoinPeer, and
	// false again when a heartbeat learns that the index expired it.
	joined atomic.Bool

	syncKick  chan struct{} // wakes the sync goroutine (cap 1)
	hbKick    chan struct{} // wakes the heartbeat goroutine (cap 1)
	rescanReq chan rescanRequest

	connMu sync.Mutex
	conns  map[net.Conn]struct{} // upload connections; nil once closing

	ctx        context.Context // ends on Close
	cancel     context.CancelFunc
	syncCancel context.CancelFunc // stops the sync and heartbeat goroutines
	syncWG     sync.WaitGroup
	wg         sync.WaitGroup // every other goroutine, downloads included
	closeOnce  sync.Once
	closeErr   error
	leaveOnce  sync.Once
}

type rescanRequest struct {
	add  *cacheEntry // hashes to add to the cache first (a seeded download)
	done chan error
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
		return nil, fmt.Errorf("%w: create data dir %s: %v; choose a --data-dir this user can write", ErrConfig, cfg.DataDir, err)
	}
	p := &Peer{
		cfg:       cfg,
		syncKick:  make(chan struct{}, 1),
		hbKick:    make(chan struct{}, 1),
		rescanReq: make(chan rescanRequest),
		conns:     make(map[net.Conn]struct{}),
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
	if p.id, err = loadIdentity(cfg.DataDir, cfg.PeerID); err != nil {
		return nil, err
	}
	p.logger = cfg.Logger.With("peer", p.id.PeerID)
	if p.mux, err = transport.Listen(cfg.Listen, p.logger); err != nil {
		return nil, fmt.Errorf("%w: --listen %s: %v; choose another port or stop the process using it", ErrConfig, cfg.Listen, err)
	}
	if p.addr, err = advertiseAddr(cfg.Advertise, p.mux.Addr().String(), cfg.Masters); err != nil {
		return nil, err
	}
	if p.client, err = client.New(client.Config{Masters: cfg.Masters, AttemptTimeout: cfg.MasterTimeout, Dial: p.mux.DialStream}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if cfg.ShareDir != "" {
		if p.store, err = openStore(cfg.ShareDir, cfg.DataDir, p.logger); err != nil {
			return nil, err
		}
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	syncCtx, syncCancel := context.WithCancel(p.ctx)
	p.syncCancel = syncCancel
	p.wg.Add(1)
	go p.servePieces(p.mux.Listener(transport.StreamPiece))
	if p.store != nil {
		p.syncWG.Add(2)
		go func() { defer p.syncWG.Done(); p.syncLoop(syncCtx) }()
		go func() { defer p.syncWG.Done(); p.heartbeatLoop(syncCtx) }()
	}
	p.logger.Info("peer running", "addr", p.addr, "share", cfg.ShareDir, "data_dir", cfg.DataDir)
	ok = true
	return p, nil
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
		return "", fmt.Errorf("%w: listening on the wildcard address %s and cannot find a local IP routed to %s (%v); set --advertise HOST:PORT", ErrConfig, listen, masters[0], err)
	}
	defer c.Close()
	local := c.LocalAddr().(*net.UDPAddr)
	return net.JoinHostPort(local.IP.String(), port), nil
}

// ID returns the peer's stable ID.
func (p *Peer) ID() string { return p.id.PeerID }

// Addr returns the address other peers dial to fetch pieces from this peer.
func (p *Peer) Addr() string { return p.addr }

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

func (p *Peer) rescan(ctx context.Context, add *cacheEntry) error {
	if p.store == nil {
		return fmt.Errorf("%w: this peer has no share folder", ErrConfig)
	}
	req := rescanRequest{add: add, done: make(chan error, 1)}
	select {
	case p.rescanReq <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-p.ctx.Done():
		return ErrClosed
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Peer) kickSync() {
	select {
	case p.syncKick <- struct{}{}:
	default:
	}
}

// syncState is what the sync goroutine knows of the index's view of this
// peer. It is owned by that goroutine.
type syncState struct {
	// announced is what the index holds from this peer, as far as this
	// peer knows: the entries it registered and did not unregister since
	// it last joined.
	announced map[string]client.FileEntry
	// stale are IDs this peer shared when it last ran (from the hash
	// cache); those no longer present are unregistered once.
	stale map[string]bool
	// conflicts are entries the index refused because it holds the same
	// ID with another size or piece size; not retried until they change.
	conflicts map[string]client.FileEntry
}

// syncLoop owns the share store and the registrations: it scans every
// RescanInterval, when kicked (a heartbeat learnt of an expiry, the piece
// server saw a file change) and on Rescan requests, until ctx ends.
func (p *Peer) syncLoop(ctx context.Context) {
	st := &syncState{announced: map[string]client.FileEntry{}, stale: p.store.cachedIDs(), conflicts: map[string]client.FileEntry{}}
	tick := time.NewTicker(p.cfg.RescanInterval)
	defer tick.Stop()
	var waiters []chan error
	for {
		err := p.syncOnce(ctx, st)
		if err != nil && ctx.Err() == nil {
			p.logger.Warn("sync with the index failed; will retry", "err", err)
		}
		for _, w := range waiters {
			w <- err
		}
		waiters = nil
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-p.syncKick:
		case req := <-p.rescanReq:
			for {
				if req.add != nil {
					p.store.addCache(*req.add)
				}
				waiters = append(waiters, req.done)
				select {
				case req = <-p.rescanReq:
					continue
				default:
				}
				break
			}
		}
	}
}

// Registration batches: at most fsm.MaxFilesPerCommand files per call, and
// about 256 KiB of entries, so each lands in one Raft log entry well under
// raft's suggested 512 KiB.
const (
	maxFilesPerCall = fsm.MaxFilesPerCommand
	maxBytesPerCall = 256 << 10
)

// syncOnce joins if needed, scans, and registers and unregisters the
// difference. On fsm.ErrUnknownPeer (the index expired this peer) it joins
// again and registers everything, once.
func (p *Peer) syncOnce(ctx context.Context, st *syncState) error {
	files, err := p.store.scan(ctx)
	if err != nil {
		return fmt.Errorf("scan share folder %s: %w", p.store.dir, err)
	}
	// Stop serving removed files at once, before the index hears of it.
	p.publish(files, st.announced)
	for attempt := 0; ; attempt++ {
		err = p.reconcile(ctx, st, files)
		if errors.Is(err, fsm.ErrUnknownPeer) && attempt == 0 {
			p.logger.Warn("the index no longer knows this peer (its lease expired); joining again and re-registering its files")
			p.joined.Store(false)
			continue
		}
		p.publish(files, st.announced)
		return err
	}
}

func (p *Peer) reconcile(ctx context.Context, st *syncState, files map[string]*sharedFile) error {
	if !p.joined.Load() {
		if _, err := p.client.Join(ctx, p.id, p.addr); err != nil {
			return fmt.Errorf("join the index: %w", err)
		}
		clear(st.announced) // the index may have dropped everything: register it all again
		p.joined.Store(true)
		select {
		case p.hbKick <- struct{}{}:
		default:
		}
		p.logger.Info("joined the index", "addr", p.addr)
	}
	var remove []string
	for id := range st.announced {
		if files[id] == nil {
			remove = append(remove, id)
		}
	}
	for id := range st.stale {
		if files[id] == nil {
			if _, ok := st.announced[id]; !ok {
				remove = append(remove, id)
			}
		}
	}
	slices.Sort(remove)
	for chunk := range slices.Chunk(remove, maxFilesPerCall) {
		if _, err := p.client.Unregister(ctx, p.id, chunk); err != nil {
			return fmt.Errorf("unregister %d removed files: %w", len(chunk), err)
		}
		for _, id := range chunk {
			delete(st.announced, id)
		}
		p.logger.Info("unregistered removed files", "files", len(chunk))
	}
	st.stale = nil
	var add []client.FileEntry
	for id, f := range files {
		e := f.entry()
		if st.announced[id] == e || st.conflicts[id] == e {
			continue
		}
		add = append(add, e)
	}
	slices.SortFunc(add, func(a, b client.FileEntry) int { return strings.Compare(a.Name, b.Name) })
	for len(add) > 0 {
		n, bytes := 0, 0
		for n < len(add) && n < maxFilesPerCall && (n == 0 || bytes+len(add[n].ID)+len(add[n].Name)+32 <= maxBytesPerCall) {
			bytes += len(add[n].ID) + len(add[n].Name) + 32
			n++
		}
		if err := p.register(ctx, st, add[:n]); err != nil {
			return err
		}
		add = add[n:]
	}
	return nil
}

// register registers files in one call; if the index refuses the batch for
// a conflict (a file it holds with the same ID but another size or piece
// size) it bisects to register all the others and sets the culprits aside.
func (p *Peer) register(ctx context.Context, st *syncState, files []client.FileEntry) error {
	_, err := p.client.Register(ctx, p.id, files)
	switch {
	case err == nil:
		for _, f := range files {
			st.announced[f.ID] = f
		}
		p.logger.Info("registered files", "files", len(files))
		return nil
	case !errors.Is(err, fsm.ErrConflict):
		return fmt.Errorf("register %d files: %w", len(files), err)
	case len(files) == 1:
		p.logger.Warn("the index refuses this file: it holds the same ID with another size or piece size", "name", files[0].Name, "file", files[0].ID, "err", err)
		st.conflicts[files[0].ID] = files[0]
		return nil
	}
	half := len(files) / 2
	if err := p.register(ctx, st, files[:half]); err != nil {
		return err
	}
	return p.register(ctx, st, files[half:])
}

// publish makes the piece server serve exactly the scanned files the index
// has acknowledged.
func (p *Peer) publish(files map[string]*sharedFile, announced map[string]client.FileEntry) {
	m := make(map[string]*sharedFile, len(files))
	for id, f := range files {
		if announced[id] == f.entry() {
			m[id] = f
		}
	}
	p.served.Store(&m)
}

// heartbeatLoop renews the lease every HeartbeatInterval (default: a third
// of the lease the masters report) while the peer is joined. When the index
// answers fsm.ErrUnknownPeer — the peer was expired, e.g. after a long pause
// — it wakes the sync goroutine to join again and re-register everything.
func (p *Peer) heartbeatLoop(ctx context.Context) {
	interval := p.cfg.HeartbeatInterval
	if interval == 0 {
		interval = time.Second // until the first reply tells the lease
	}
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-p.hbKick:
		}
		if p.joined.Load() {
			hctx, cancel := context.WithTimeout(ctx, max(interval, time.Second))
			lease, err := p.client.Heartbeat(hctx, p.id)
			cancel()
			switch {
			case err == nil:
				if p.cfg.HeartbeatInterval == 0 && lease > 0 {
					interval = max(lease/3, 10*time.Millisecond)
				}
			case errors.Is(err, fsm.ErrUnknownPeer):
				p.logger.Warn("heartbeat: the index no longer knows this peer (its lease expired); joining again")
				p.joined.Store(false)
				p.kickSync()
			case ctx.Err() != nil:
				return
			default:
				p.logger.Warn("heartbeat failed; will retry", "err", err)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(interval)
	}
}

// Close stops the peer without telling the index: it stops scanning and
// heartbeating, stops serving (severing uploads in progress), aborts
// downloads in progress (they resume when started again), and releases the
// data dir. The index keeps this peer's registrations until its lease
// expires — or, if the peer starts again first with the same data dir, for
// good. Use Leave to remove them at once. Safe to call more than once.
func (p *Peer) Close() error {
	p.closeOnce.Do(func() {
		p.cancel()
		p.syncWG.Wait()
		_ = p.mux.Close()
		p.closeConns()
		p.wg.Wait()
		p.release()
		p.logger.Info("peer stopped")
	})
	return p.closeErr
}

// release frees what New acquired, in reverse order.
func (p *Peer) release() {
	var errs []error
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
