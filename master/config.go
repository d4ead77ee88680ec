package master

import (
	"errors"
	"fileshare/internal/httplimit"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"fileshare/fsm"
	"fileshare/transport"
)

// Member names one master of the initial cluster.
type Member struct {
	ID   string
	Addr string // host:port of its cluster (Raft + RPC) listener
}

// Config configures one SwarmMaster. A zero field means its default; New
// copies the Config and never edits the caller's.
type Config struct {
	// ID names this master in the Raft configuration. Required; 1..64 bytes
	// of [A-Za-z0-9._-].
	ID string
	// DataDir holds the Raft log (raft.db) and snapshots. Required.
	DataDir string
	// Listen is the host:port of the cluster listener (Raft and RPC share
	// it). Port 0 picks a free port. Required.
	Listen string
	// Advertise is the address other masters and peers dial. Empty means
	// the listen address, which then must not be a wildcard.
	Advertise string
	// HTTP is the host:port of the status endpoints. Empty disables them.
	HTTP string
	// HTTPLimits bounds the HTTP port: timeouts, open connections and
	// dashboard streams, in all and per client. Zero fields take
	// httplimit.DefaultLimits.
	HTTPLimits httplimit.Limits

	// InitialCluster bootstraps a new cluster whose voters are exactly
	// these members, one of which must be this master (same ID and
	// address). Bootstrap happens once: a master that already has Raft
	// state ignores it, so restarting with the same flags is safe.
	InitialCluster []Member
	// Join lists masters of a running cluster to join through (any member
	// will do; it forwards to the leader). Ignored if this master already
	// has Raft state.
	Join []string
	// Restore names a backup archive ('fileshare cluster backup') to start
	// a new cluster from: with InitialCluster, in an empty data dir, the
	// master starts from the backup's index under the new membership;
	// every member restores the same file with the same InitialCluster.
	// A data dir that holds other raft state is refused; one restored from
	// this same file starts normally. See restore.go.
	Restore string
	// JoinTimeout bounds the retries of Join. Zero means 60 s.
	JoinTimeout time.Duration

	// PeerLease is how long a peer stays in the index without a heartbeat.
	// Zero means 15 s.
	PeerLease time.Duration

	// Raft timing. Zero means our LAN defaults: heartbeat and election
	// timeouts of 400 ms and a leader lease of 200 ms. hashicorp/raft's own
	// defaults (1 s / 1 s / 500 ms) are sized for WANs; on one LAN a round
	// trip is well under a millisecond, so 400 ms still leaves ample margin
	// for GC pauses and a loaded 2-core machine while a follower notices a
	// dead leader within 400–800 ms and the election finishes within a
	// similar window.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration

	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger a new one; zero means 8192. SnapshotInterval is how often the
	// check runs; zero means 30 s. TrailingLogs is how many entries are kept
	// after a snapshot so a lagging follower can catch up from the log
	// instead of by snapshot; zero means 10240 (far above what a follower
	// falls behind in one snapshot interval, which avoids the
	// InstallSnapshot loop of a too-small value; 0 itself is unsafe).
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64

	// ApplyTimeout bounds how long a write may wait to enter the Raft
	// pipeline at the leader. Zero means 5 s.
	ApplyTimeout time.Duration

	// TLS is this master's certificate and the cluster CA. With it, the
	// cluster port speaks only TLS: masters authenticate each other, admin
	// calls need an admin or master certificate, and peers act only as the
	// key they present. Nil is plaintext, which New accepts only on a
	// loopback address unless Insecure is set.
	TLS *transport.TLS
	// Insecure allows plaintext on a non-loopback address: anyone who can
	// reach the port can then rewrite the index and the membership.
	Insecure bool
	// EnablePprof serves /debug/pprof on the HTTP port. Off by default:
	// profiles reveal memory contents and cost CPU.
	EnablePprof bool
	// Metrics is what /metrics serves: MetricsBasic (the default, for "")
	// or MetricsExtensive, which adds raft's own go-metrics.
	Metrics string

	// MaxFilesPerPeer caps the files one peer may hold in the index. Zero
	// means 1,000,000; negative means no cap.
	MaxFilesPerPeer int
	// MaxPeersPerIP caps the peers that may join through this master from
	// one remote IP. Zero means 1,024; negative means no cap.
	MaxPeersPerIP int
	// MaxCommandBytes caps one peer write's encoded log entry, so a
	// single request never makes an entry near raft's 512 KiB suggestion.
	// Zero means 256 KiB; it may not exceed fsm.MaxCommandSize.
	MaxCommandBytes int

	// CleanupDeadMasters lets the leader remove a master it has not
	// reached for DeadMasterTimeout from the configuration, as long as at
	// least MinQuorum voters remain (see autopilot.go). Off by default: a
	// removed master must be wiped before it can join again.
	CleanupDeadMasters bool
	// MinQuorum is the fewest voters dead-master cleanup leaves. Zero
	// means 3.
	MinQuorum int
	// DeadMasterTimeout is how long the leader must fail to reach a master
	// before cleanup counts it as dead. Zero means 30 s.
	DeadMasterTimeout time.Duration
	// ServerStabilizationTime is how long a master that joined must be
	// healthy as a non-voter before it is promoted to voter. Zero means
	// 10 s.
	ServerStabilizationTime time.Duration
	// AutopilotInterval is how often the leader probes the members and
	// promotes or removes them. Zero means 2 s.
	AutopilotInterval time.Duration
	// ReadyMaxLag is how many committed entries a master may not yet have
	// applied and still report ready on /v1/readyz. Zero means 128.
	ReadyMaxLag uint64
	// ReadyMaxContact is how long a follower may go without hearing from
	// the leader and still report ready. Zero means 2 s.
	ReadyMaxContact time.Duration
	// ClusterPort bounds what callers may hold on the cluster port:
	// connections, handler slots and reply bytes, in total and per source
	// address, with capacity kept for members. Zero fields mean
	// transport's defaults.
	ClusterPort ClusterPortLimits
	// Tracker configures the BitTorrent tracker this master serves; see
	// TrackerConfig. With neither HTTP nor UDP set there is none, but the
	// replicated swarms and policy still apply through other masters.
	Tracker TrackerConfig

	// RelayBudget is how many relay circuits (package relay) this master
	// carries at once for peers that cannot connect otherwise, each
	// within relay.DefaultMaxBytes and relay.DefaultMaxDuration, all
	// together at most 2 MiB/s per circuit of the budget. Zero (the
	// default) relays nothing.
	RelayBudget int

	// Fault deliberately breaks the master for harness self-tests; see
	// Fault. Zero is correct operation.
	Fault Fault

	// Storage wraps the raft storage for tests that inject disk faults;
	// see StorageHooks. The zero value is the real storage.
	Storage StorageHooks

	// Logger receives all logs, including Raft's. Nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests replace it.
	Now func() time.Time
}

// Errors returned by New for configurations that cannot work.
var (
	// ErrConfig wraps every configuration mistake New rejects.
	ErrConfig = errors.New("invalid master configuration")
)

func (c Config) withDefaults() (Config, error) {
	if err := validID(c.ID); err != nil {
		return c, fmt.Errorf("%w: --id: %v", ErrConfig, err)
	}
	if c.DataDir == "" {
		return c, fmt.Errorf("%w: --data-dir is required", ErrConfig)
	}
	if c.Listen == "" {
		return c, fmt.Errorf("%w: --listen is required (host:port of the cluster port)", ErrConfig)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return c, fmt.Errorf("%w: --listen %q is not host:port: %v", ErrConfig, c.Listen, err)
	}
	if c.Advertise != "" {
		if err := checkDialable(c.Advertise); err != nil {
			return c, fmt.Errorf("%w: --advertise %q: %v", ErrConfig, c.Advertise, err)
		}
	}
	if c.HTTP != "" {
		if _, _, err := net.SplitHostPort(c.HTTP); err != nil {
			return c, fmt.Errorf("%w: --http %q is not host:port: %v", ErrConfig, c.HTTP, err)
		}
	}
	if len(c.InitialCluster) > 0 && len(c.Join) > 0 {
		return c, fmt.Errorf("%w: give either --initial-cluster (to bootstrap a new cluster) or --join (to join a running one), not both", ErrConfig)
	}
	if c.Restore != "" && len(c.InitialCluster) == 0 {
		return c, fmt.Errorf("%w: --restore needs --initial-cluster, the new cluster's members (every member restores the same backup with the same --initial-cluster)", ErrConfig)
	}
	seenID := map[string]bool{}
	seenAddr := map[string]string{}
	self := false
	for _, m := range c.InitialCluster {
		if err := validID(m.ID); err != nil {
			return c, fmt.Errorf("%w: --initial-cluster member %q: %v", ErrConfig, m.ID, err)
		}
		if err := checkDialable(m.Addr); err != nil {
			return c, fmt.Errorf("%w: --initial-cluster member %s address %q: %v", ErrConfig, m.ID, m.Addr, err)
		}
		if seenID[m.ID] {
			return c, fmt.Errorf("%w: --initial-cluster names %s twice", ErrConfig, m.ID)
		}
		if other, ok := seenAddr[m.Addr]; ok {
			return c, fmt.Errorf("%w: --initial-cluster gives %s and %s the same address %s", ErrConfig, other, m.ID, m.Addr)
		}
		seenID[m.ID], seenAddr[m.Addr] = true, m.ID
		if m.ID == c.ID {
			self = true
		}
	}
	if len(c.InitialCluster) > 0 && !self {
		return c, fmt.Errorf("%w: --initial-cluster does not contain this master's own ID %q; add %s=%s to it", ErrConfig, c.ID, c.ID, c.Listen)
	}
	c.InitialCluster = append([]Member(nil), c.InitialCluster...)
	c.Join = append([]string(nil), c.Join...)
	for _, a := range c.Join {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return c, fmt.Errorf("%w: --join address %q is not host:port: %v", ErrConfig, a, err)
		}
	}

	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.JoinTimeout, 60*time.Second)
	def(&c.PeerLease, 15*time.Second)
	def(&c.HeartbeatTimeout, 400*time.Millisecond)
	def(&c.ElectionTimeout, 400*time.Millisecond)
	def(&c.LeaderLeaseTimeout, 200*time.Millisecond)
	def(&c.SnapshotInterval, 30*time.Second)
	def(&c.ApplyTimeout, 5*time.Second)
	def(&c.DeadMasterTimeout, 30*time.Second)
	def(&c.ServerStabilizationTime, 10*time.Second)
	def(&c.AutopilotInterval, 2*time.Second)
	def(&c.ReadyMaxContact, 2*time.Second)
	if c.ReadyMaxLag == 0 {
		c.ReadyMaxLag = 128
	}
	if c.MinQuorum == 0 {
		c.MinQuorum = 3
	}
	if c.MinQuorum < 1 {
		return c, fmt.Errorf("%w: --min-quorum %d: give at least 1", ErrConfig, c.MinQuorum)
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		return c, fmt.Errorf("%w: the leader lease (%v) must not exceed the heartbeat timeout (%v)", ErrConfig, c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	for name, d := range map[string]time.Duration{"join timeout": c.JoinTimeout, "peer lease": c.PeerLease, "heartbeat timeout": c.HeartbeatTimeout, "election timeout": c.ElectionTimeout, "leader lease": c.LeaderLeaseTimeout, "snapshot interval": c.SnapshotInterval, "apply timeout": c.ApplyTimeout, "dead master timeout": c.DeadMasterTimeout, "server stabilization time": c.ServerStabilizationTime, "autopilot interval": c.AutopilotInterval, "ready max contact": c.ReadyMaxContact} {
		if d < 0 {
			return c, fmt.Errorf("%w: %s is negative (%v)", ErrConfig, name, d)
		}
	}
	if c.TLS == nil && !c.Insecure {
		if err := requireLoopback(c.Listen); err != nil {
			return c, fmt.Errorf("%w: --listen %s without TLS: %v; anyone who reaches the port could rewrite the index, so give --cert-file, --key-file and --trusted-ca-file (see 'fileshare tls init'), or --insecure if this network is trusted", ErrConfig, c.Listen, err)
		}
	}
	if c.TLS != nil && (!c.TLS.HasCertificate() || !c.TLS.HasCA()) {
		return c, fmt.Errorf("%w: a master with TLS needs its certificate and key and the cluster CA (--cert-file, --key-file, --trusted-ca-file)", ErrConfig)
	}
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defInt(&c.MaxFilesPerPeer, 1_000_000)
	defInt(&c.MaxPeersPerIP, 1024)
	defInt(&c.MaxCommandBytes, 256<<10)
	if c.MaxCommandBytes < 0 || c.MaxCommandBytes > fsm.MaxCommandSize {
		return c, fmt.Errorf("%w: --max-entry-bytes %d: give 1..%d", ErrConfig, c.MaxCommandBytes, fsm.MaxCommandSize)
	}
	switch c.Metrics {
	case "":
		c.Metrics = MetricsBasic
	case MetricsBasic, MetricsExtensive:
	default:
		return c, fmt.Errorf("%w: --metrics %q: give %s or %s", ErrConfig, c.Metrics, MetricsBasic, MetricsExtensive)
	}
	if err := c.Tracker.withDefaults(); err != nil {
		return c, err
	}
	if _, err := ParseFault(string(c.Fault)); err != nil {
		return c, err
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

func validID(id string) error {
	if id == "" {
		return errors.New("empty ID")
	}
	if len(id) > 64 {
		return fmt.Errorf("ID %q is longer than 64 bytes", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-", r)) {
			return fmt.Errorf("ID %q may hold only letters, digits, '.', '_' and '-'", id)
		}
	}
	return nil
}

// requireLoopback accepts only host:port whose host is a loopback IP or
// "localhost".
func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return errors.New("the address is not loopback")
}

// checkDialable rejects addresses other nodes cannot dial.
func checkDialable(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("not host:port: %v", err)
	}
	if port == "0" || port == "" {
		return errors.New("needs a fixed port")
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return errors.New("is a wildcard address; give one that other nodes can dial")
	}
	return nil
}

// ParseInitialCluster parses "m1=host:port,m2=host:port".
func ParseInitialCluster(s string) ([]Member, error) {
	var out []Member
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, addr, ok := strings.Cut(part, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("%w: --initial-cluster entry %q is not ID=HOST:PORT", ErrConfig, part)
		}
		out = append(out, Member{ID: id, Addr: addr})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: --initial-cluster is empty", ErrConfig)
	}
	return out, nil
}
