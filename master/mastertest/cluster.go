package mastertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"fileshare/client"
	"fileshare/internal/freeport"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/transport"
)

// Errors the Cluster's methods return.
var (
	// ErrNotRunning means the member is stopped (killed and not restarted).
	ErrNotRunning = errors.New("mastertest: the master is not running")
	// ErrRunning means Restart was asked for a member that is running.
	ErrRunning = errors.New("mastertest: the master is already running")
	// ErrClosed means the Cluster has been closed.
	ErrClosed = errors.New("mastertest: the cluster is closed")
	// ErrSharedIP means Isolate was asked of a cluster whose members share
	// one IP, where a link cannot be cut by address; set Options.OwnIPs.
	ErrSharedIP = errors.New("mastertest: the masters share one IP; set Options.OwnIPs to cut links")
)

// Options configures a Cluster. The zero value is a cluster on 127.0.0.1
// in a temporary folder that discards its logs.
type Options struct {
	// Dir is the parent of the masters' data dirs, Dir/m1 … Dir/mN; it is
	// kept after Close. Empty means a new temporary folder that Close
	// removes (New: the test's TempDir).
	Dir string
	// OwnIPs gives member i (from 0) the loopback IP 127.0.0.(11+i) instead
	// of 127.0.0.1, so that Isolate can cut its links by IP. Linux routes
	// all of 127.0.0.0/8 to loopback; other systems may route only
	// 127.0.0.1.
	OwnIPs bool
	// Logger receives every master's logs, each tagged master=ID. Nil
	// discards them (New: the test's output if FILESHARE_TEST_LOG is set).
	Logger *slog.Logger
	// TLS runs the masters with TLS, as in production: New writes a CA, a
	// certificate per master and an admin certificate (transport.InitFiles)
	// to Dir/tls, and sets each master's Config.TLS. CA and AdminTLS give
	// clients what they need. False is plaintext on loopback.
	TLS bool
	// Config, if set, adjusts each master's Config after the harness has
	// filled in ID, DataDir, Listen, InitialCluster and Logger, before the
	// master first starts. Restarts reuse the adjusted Config.
	Config func(*master.Config)
}

// startRetry bounds how long starting one master is retried: the port
// was free when chosen, but after a member stops the OS may need a moment
// before it can be bound again, and a crashed member's data dir lock may
// take a moment to release.
const startRetry = 10 * time.Second

// Cluster is N masters running in this process. Create it with Start (or
// NewUnstarted and then Start); stop it with Close or CloseNow. Member i
// (from 0) is master "m(i+1)". All methods are safe for concurrent use.
type Cluster struct {
	cfgs    []master.Config // fixed at creation
	tlsDir  string          // the certificates with Options.TLS; "" without
	tempDir string          // removed at Close if not ""

	mu      sync.Mutex
	masters []*master.Master // nil while stopped
	closed  bool
}

// Start creates a cluster of n masters and starts every member (see
// Cluster.Start). It does not wait for a leader: use WaitLeader. On error
// it stops whatever it started and removes its temporary folder.
func Start(ctx context.Context, n int, opts Options) (*Cluster, error) {
	c, err := NewUnstarted(n, opts)
	if err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		_ = c.CloseNow()
		return nil, err
	}
	return c, nil
}

// NewUnstarted chooses n free addresses and writes each member's Config,
// but starts no master, so a caller can announce the addresses first;
// call Start next. It creates the temporary folder if Options.Dir is
// empty: Close or CloseNow removes it.
func NewUnstarted(n int, opts Options) (*Cluster, error) {
	if n < 1 || n > 200 {
		return nil, fmt.Errorf("mastertest: %d masters; want 1 to 200", n)
	}
	c := &Cluster{masters: make([]*master.Master, n)}
	dir := opts.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "mastertest-*"); err != nil {
			return nil, fmt.Errorf("mastertest: create a temporary folder: %w", err)
		}
		c.tempDir = dir
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	members := make([]master.Member, n)
	for i := range members {
		ip := "127.0.0.1"
		if opts.OwnIPs {
			ip = fmt.Sprintf("127.0.0.%d", 11+i)
		}
		addr, err := freeport.Addr(ip)
		if err != nil {
			c.removeTemp()
			return nil, fmt.Errorf("mastertest: find a free port on %s: %w", ip, err)
		}
		members[i] = master.Member{ID: fmt.Sprintf("m%d", i+1), Addr: addr}
	}
	if opts.TLS {
		c.tlsDir = filepath.Join(dir, "tls")
		ids, hosts := make([]string, n), []string{"127.0.0.1", "localhost"}
		for i, mem := range members {
			ids[i] = mem.ID
			if h, _, _ := net.SplitHostPort(mem.Addr); !slices.Contains(hosts, h) {
				hosts = append(hosts, h)
			}
		}
		if _, err := transport.InitFiles(c.tlsDir, ids, hosts, 24*time.Hour); err != nil {
			c.removeTemp()
			return nil, fmt.Errorf("mastertest: %w", err)
		}
	}
	for _, mem := range members {
		cfg := master.Config{
			ID:             mem.ID,
			DataDir:        filepath.Join(dir, mem.ID),
			Listen:         mem.Addr,
			InitialCluster: members,
			Logger:         logger.With("master", mem.ID),
		}
		if c.tlsDir != "" {
			var err error
			if cfg.TLS, err = c.load(mem.ID); err != nil {
				c.removeTemp()
				return nil, err
			}
		}
		if opts.Config != nil {
			opts.Config(&cfg)
		}
		c.cfgs = append(c.cfgs, cfg)
	}
	return c, nil
}

// Start starts every member that is not running, one after another; each
// start is retried for a few seconds while its port or data dir is still
// held (see Restart). ctx bounds the starting only. If a member fails to
// start, the members started before it keep running until Close.
func (c *Cluster) Start(ctx context.Context) error {
	for i := range c.cfgs {
		if err := c.Restart(ctx, i); err != nil && !errors.Is(err, ErrRunning) {
			return err
		}
	}
	return nil
}

// Restart starts member i again with the Config it had before (so it
// recovers from its data dir and does not bootstrap again), retrying for
// up to 10 s while its port or data dir is still held by the member's last
// run. It blocks until the master runs or ctx ends; it fails with
// ErrRunning if i is running.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return ErrClosed
	case c.masters[i] != nil:
		c.mu.Unlock()
		return fmt.Errorf("restart %s: %w", c.cfgs[i].ID, ErrRunning)
	}
	cfg := c.cfgs[i]
	c.mu.Unlock()

	m, err := startMaster(ctx, cfg)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.masters[i] != nil {
		// Closed, or restarted by another goroutine, while this one started.
		_ = m.CloseNow()
		if c.closed {
			return ErrClosed
		}
		return fmt.Errorf("restart %s: %w", cfg.ID, ErrRunning)
	}
	c.masters[i] = m
	return nil
}

func startMaster(ctx context.Context, cfg master.Config) (*master.Master, error) {
	ctx, cancel := context.WithTimeout(ctx, startRetry)
	defer cancel()
	var m *master.Master
	var err error
	// A configuration error or a damaged data dir will not go away:
	// give up on it at once.
	_ = poll.Wait(ctx, func() bool {
		m, err = master.New(ctx, cfg)
		return err == nil || errors.Is(err, master.ErrConfig) || errors.Is(err, master.ErrDamaged)
	})
	if err != nil {
		return nil, fmt.Errorf("start master %s: %w", cfg.ID, err)
	}
	return m, nil
}

// Kill stops member i abruptly (Master.CloseNow: no leadership hand-off,
// the closest an in-process test gets to a crash) and returns CloseNow's
// error. It does nothing if i is not running.
func (c *Cluster) Kill(i int) error {
	if m := c.take(i); m != nil {
		return m.CloseNow()
	}
	return nil
}

// Stop stops member i gracefully (Master.Close: a leader hands off first)
// and returns Close's error. It does nothing if i is not running.
func (c *Cluster) Stop(i int) error {
	if m := c.take(i); m != nil {
		return m.Close()
	}
	return nil
}

// take marks member i stopped and returns the master that ran, if any.
func (c *Cluster) take(i int) *master.Master {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.masters[i]
	c.masters[i] = nil
	return m
}

// Len returns the number of members, running or not.
func (c *Cluster) Len() int { return len(c.cfgs) }

// Config returns member i's Config (a copy; changing it changes nothing).
func (c *Cluster) Config(i int) master.Config {
	cfg := c.cfgs[i]
	cfg.InitialCluster = append([]master.Member(nil), cfg.InitialCluster...)
	cfg.Join = append([]string(nil), cfg.Join...)
	return cfg
}

// ID returns member i's master ID, "m(i+1)".
func (c *Cluster) ID(i int) string { return c.cfgs[i].ID }

// Addr returns member i's cluster address (Raft and RPC), which stays the
// same across restarts.
func (c *Cluster) Addr(i int) string { return c.cfgs[i].Listen }

// Addrs returns every member's cluster address, in member order: the
// master list for a client.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.cfgs))
	for i := range c.cfgs {
		out[i] = c.Addr(i)
	}
	return out
}

// Master returns member i's running master, or nil while it is stopped.
// The master may be stopped by another goroutine at any time after.
func (c *Cluster) Master(i int) *master.Master {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.masters[i]
}

// running returns the running masters by member index (nil while stopped).
func (c *Cluster) running() []*master.Master {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*master.Master(nil), c.masters...)
}

// Status returns member i's own view (Master.Status without asking the
// other members), or ErrNotRunning.
func (c *Cluster) Status(ctx context.Context, i int) (client.Status, error) {
	m := c.Master(i)
	if m == nil {
		return client.Status{}, fmt.Errorf("status of %s: %w", c.cfgs[i].ID, ErrNotRunning)
	}
	return m.Status(ctx, false), nil
}

// Leader returns the index of the one running member that leads and has
// passed its term's barrier (Master.LeaderReady); ok is false if none or
// more than one does right now.
func (c *Cluster) Leader() (i int, ok bool) {
	i = -1
	for j, m := range c.running() {
		if m != nil && m.LeaderReady() {
			if i >= 0 {
				return -1, false
			}
			i = j
		}
	}
	return i, i >= 0
}

// WaitLeader waits until exactly one running member leads and is ready
// (see Leader) and returns its index, or fails when ctx ends.
func (c *Cluster) WaitLeader(ctx context.Context) (int, error) {
	var i int
	var ok bool
	if err := poll.Wait(ctx, func() bool { i, ok = c.Leader(); return ok }); err != nil {
		return -1, fmt.Errorf("wait for one ready leader: %w", err)
	}
	return i, nil
}

// Converged reports whether the running members agree: each has applied
// its whole log, all at the same index, and all hold the same index
// (fsm digest), which it returns. It is false while no member runs.
func (c *Cluster) Converged(ctx context.Context) (digest string, ok bool) {
	var applied uint64
	n := 0
	for _, m := range c.running() {
		if m == nil {
			continue
		}
		st := m.Status(ctx, false)
		if st.AppliedIndex != st.LastIndex {
			return "", false
		}
		if n == 0 {
			digest, applied = st.Digest, st.AppliedIndex
		} else if st.Digest != digest || st.AppliedIndex != applied {
			return "", false
		}
		n++
	}
	return digest, n > 0
}

// WaitConverged waits until the running members agree (see Converged)
// and returns their index's digest, or fails when ctx ends.
func (c *Cluster) WaitConverged(ctx context.Context) (string, error) {
	var digest string
	var ok bool
	if err := poll.Wait(ctx, func() bool { digest, ok = c.Converged(ctx); return ok }); err != nil {
		return "", fmt.Errorf("wait for every running master to hold the same index: %w", err)
	}
	return digest, nil
}

// Isolate cuts every link between member i and the other members, both
// ways, as a network partition would (Master.Block on each side); clients
// on other IPs still reach every member. It needs Options.OwnIPs
// (ErrSharedIP otherwise) and a running member i (ErrNotRunning). A member
// that restarts comes back with no links cut.
func (c *Cluster) Isolate(i int) error {
	ips := make([]string, len(c.cfgs))
	for j := range c.cfgs {
		host, _, err := net.SplitHostPort(c.cfgs[j].Listen)
		if err != nil {
			return fmt.Errorf("isolate %s: %w", c.cfgs[i].ID, err)
		}
		ips[j] = host
	}
	ms := c.running()
	if ms[i] == nil {
		return fmt.Errorf("isolate %s: %w", c.cfgs[i].ID, ErrNotRunning)
	}
	var others []string
	for j, ip := range ips {
		if j == i {
			continue
		}
		if ip == ips[i] {
			return fmt.Errorf("isolate %s: %w", c.cfgs[i].ID, ErrSharedIP)
		}
		others = append(others, ip)
	}
	for j, m := range ms {
		if j != i && m != nil {
			m.Block(ips[i])
		}
	}
	ms[i].Block(others...)
	return nil
}

// Heal restores every link that Isolate cut on the running members.
func (c *Cluster) Heal() {
	for _, m := range c.running() {
		if m != nil {
			m.Unblock()
		}
	}
}

// Close stops every running member gracefully (Master.Close) and removes
// the temporary folder, if the Cluster made one. Safe to call more than
// once; a closed Cluster cannot restart its members.
func (c *Cluster) Close() error { return c.close((*master.Master).Close) }

// CloseNow stops every running member abruptly (Master.CloseNow) and
// removes the temporary folder, if the Cluster made one. Safe to call more
// than once.
func (c *Cluster) CloseNow() error { return c.close((*master.Master).CloseNow) }

func (c *Cluster) close(stop func(*master.Master) error) error {
	c.mu.Lock()
	c.closed = true
	ms := c.masters
	c.masters = make([]*master.Master, len(ms))
	c.mu.Unlock()
	var errs []error
	for i, m := range ms {
		if m != nil {
			if err := stop(m); err != nil {
				errs = append(errs, fmt.Errorf("stop %s: %w", c.cfgs[i].ID, err))
			}
		}
	}
	if err := c.removeTemp(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Cluster) removeTemp() error {
	if c.tempDir == "" {
		return nil
	}
	if err := os.RemoveAll(c.tempDir); err != nil {
		return fmt.Errorf("mastertest: remove %s: %w", c.tempDir, err)
	}
	return nil
}

// TLSDir returns the folder of the cluster's certificates (ca.pem,
// mI.pem, admin.pem and their keys), or "" if the cluster runs without TLS.
func (c *Cluster) TLSDir() string { return c.tlsDir }

// CA returns the cluster CA for clients and peers to verify the masters
// with, or nil if the cluster runs without TLS.
func (c *Cluster) CA() *transport.TLS {
	if c.tlsDir == "" {
		return nil
	}
	t, err := transport.LoadTLS("", "", filepath.Join(c.tlsDir, "ca.pem"))
	if err != nil {
		panic(fmt.Sprintf("mastertest: the CA written at start no longer loads: %v", err))
	}
	return t
}

// AdminTLS returns the admin's credentials, or nil if the cluster runs
// without TLS.
func (c *Cluster) AdminTLS() *transport.TLS {
	if c.tlsDir == "" {
		return nil
	}
	t, err := c.load("admin")
	if err != nil {
		panic(fmt.Sprintf("mastertest: the admin certificate written at start no longer loads: %v", err))
	}
	return t
}

// load reads the certificate and key named name, and the CA, from tlsDir.
func (c *Cluster) load(name string) (*transport.TLS, error) {
	return transport.LoadTLS(filepath.Join(c.tlsDir, name+".pem"), filepath.Join(c.tlsDir, name+"-key.pem"), filepath.Join(c.tlsDir, "ca.pem"))
}
