package master

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"fileshare/fsm"
	"fileshare/internal/cfgerr"
	"fileshare/internal/defaults"
	"fileshare/internal/httplimit"
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

// DefaultConfig returns the value every tunable field of Config takes when
// it is zero, so a caller (the CLI's flags) can show and start from them.
// Fields whose default derives from another field (Tracker.MinInterval,
// Tracker.PeerLifetime, Tracker.MaxPeersPer64 and Per48) stay zero, as do
// the required ones (ID, DataDir, Listen) and those with no default.
func DefaultConfig() Config {
	return Config{
		JoinTimeout:             60 * time.Second,
		PeerLease:               15 * time.Second,
		HeartbeatTimeout:        400 * time.Millisecond,
		ElectionTimeout:         400 * time.Millisecond,
		LeaderLeaseTimeout:      200 * time.Millisecond,
		SnapshotThreshold:       8192,
		SnapshotInterval:        30 * time.Second,
		TrailingLogs:            10240,
		ApplyTimeout:            5 * time.Second,
		Metrics:                 MetricsBasic,
		MaxFilesPerPeer:         1_000_000,
		MaxPeersPerIP:           1024,
		MaxCommandBytes:         256 << 10,
		MinQuorum:               3,
		DeadMasterTimeout:       30 * time.Second,
		ServerStabilizationTime: 10 * time.Second,
		AutopilotInterval:       2 * time.Second,
		ReadyMaxLag:             128,
		ReadyMaxContact:         2 * time.Second,
		ClusterPort:             defaultClusterPortLimits(),
		HTTPLimits:              httplimit.DefaultLimits(),
		Tracker:                 DefaultTrackerConfig(),
		RelayBudget:             DefaultRelayBudget,
	}
}

// defaultClusterPortLimits is transport's defaults, spelled out so the
// CLI can show them.
func defaultClusterPortLimits() ClusterPortLimits {
	return ClusterPortLimits{
		MaxConns:       transport.DefaultMaxConns,
		MaxConnsPerIP:  transport.DefaultMaxConnsPerIP,
		MaxMemberConns: transport.DefaultMaxMemberConns,
		Calls: transport.Limits{
			MaxCalls:             transport.MaxConcurrentCalls,
			MaxMemberCalls:       transport.MaxConcurrentCalls,
			MaxCallsPerConn:      transport.MaxCallsPerConn,
			MaxCallsPerIP:        transport.DefaultMaxCallsPerIP,
			MaxReplyBytesPerConn: transport.DefaultMaxReplyBytesPerConn,
			MaxReplyBytesPerIP:   transport.DefaultMaxReplyBytesPerIP,
			MaxReplyBytes:        transport.DefaultMaxReplyBytes,
			WriteTimeout:         transport.DefaultIOTimeout,
		},
	}
}

// Errors returned by New for configurations that cannot work.
var (
	// ErrConfig wraps every configuration mistake New rejects, as a
	// *ConfigError naming the field.
	ErrConfig = errors.New("invalid master configuration")
)

// ConfigError names the Config field at fault (as "Tracker.Interval"),
// never a command-line flag; the CLI maps fields to its flags. Every
// error New returns for a configuration mistake is one (errors.As), and
// so are runtime failures a field must change to fix, such as a port in
// use or a data dir another master holds.
type ConfigError = cfgerr.Error

// configErr returns a *ConfigError wrapping ErrConfig. reason names
// fields as {Path}; see cfgerr.Error.
func configErr(field, reason string, args ...any) error {
	return cfgerr.New(ErrConfig, field, fmt.Sprintf(reason, args...))
}

// fieldErr is configErr wrapping err instead of ErrConfig.
func fieldErr(err error, field, reason string, args ...any) error {
	return cfgerr.New(err, field, fmt.Sprintf(reason, args...))
}

func (c Config) withDefaults() (Config, error) {
	if err := validID(c.ID); err != nil {
		return c, configErr("ID", "{ID}: %v", err)
	}
	if c.DataDir == "" {
		return c, configErr("DataDir", "{DataDir} is required")
	}
	if c.Listen == "" {
		return c, configErr("Listen", "{Listen} is required (host:port of the cluster port)")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return c, configErr("Listen", "{Listen} %q is not host:port: %v", c.Listen, err)
	}
	if c.Advertise != "" {
		if err := checkDialable(c.Advertise); err != nil {
			return c, configErr("Advertise", "{Advertise} %q: %v", c.Advertise, err)
		}
	}
	if c.HTTP != "" {
		if _, _, err := net.SplitHostPort(c.HTTP); err != nil {
			return c, configErr("HTTP", "{HTTP} %q is not host:port: %v", c.HTTP, err)
		}
	}
	if len(c.InitialCluster) > 0 && len(c.Join) > 0 {
		return c, configErr("Join", "give either {InitialCluster} (to bootstrap a new cluster) or {Join} (to join a running one), not both")
	}
	if c.Restore != "" && len(c.InitialCluster) == 0 {
		return c, configErr("Restore", "{Restore} needs {InitialCluster}, the new cluster's members (every member restores the same backup with the same {InitialCluster})")
	}
	seenID := map[string]bool{}
	seenAddr := map[string]string{}
	self := false
	for _, m := range c.InitialCluster {
		if err := validID(m.ID); err != nil {
			return c, configErr("InitialCluster", "{InitialCluster} member %q: %v", m.ID, err)
		}
		if err := checkDialable(m.Addr); err != nil {
			return c, configErr("InitialCluster", "{InitialCluster} member %s address %q: %v", m.ID, m.Addr, err)
		}
		if seenID[m.ID] {
			return c, configErr("InitialCluster", "{InitialCluster} names %s twice", m.ID)
		}
		if other, ok := seenAddr[m.Addr]; ok {
			return c, configErr("InitialCluster", "{InitialCluster} gives %s and %s the same address %s", other, m.ID, m.Addr)
		}
		seenID[m.ID], seenAddr[m.Addr] = true, m.ID
		if m.ID == c.ID {
			self = true
		}
	}
	if len(c.InitialCluster) > 0 && !self {
		return c, configErr("InitialCluster", "{InitialCluster} does not contain this master's own ID %q; add %s=%s to it", c.ID, c.ID, c.Listen)
	}
	c.InitialCluster = append([]Member(nil), c.InitialCluster...)
	c.Join = append([]string(nil), c.Join...)
	for _, a := range c.Join {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return c, configErr("Join", "{Join} address %q is not host:port: %v", a, err)
		}
	}

	d := DefaultConfig()
	defaults.Fill(&c.JoinTimeout, d.JoinTimeout)
	defaults.Fill(&c.PeerLease, d.PeerLease)
	defaults.Fill(&c.HeartbeatTimeout, d.HeartbeatTimeout)
	defaults.Fill(&c.ElectionTimeout, d.ElectionTimeout)
	defaults.Fill(&c.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	defaults.Fill(&c.SnapshotInterval, d.SnapshotInterval)
	defaults.Fill(&c.ApplyTimeout, d.ApplyTimeout)
	defaults.Fill(&c.DeadMasterTimeout, d.DeadMasterTimeout)
	defaults.Fill(&c.ServerStabilizationTime, d.ServerStabilizationTime)
	defaults.Fill(&c.AutopilotInterval, d.AutopilotInterval)
	defaults.Fill(&c.ReadyMaxContact, d.ReadyMaxContact)
	defaults.Fill(&c.ReadyMaxLag, d.ReadyMaxLag)
	defaults.Fill(&c.MinQuorum, d.MinQuorum)
	if c.MinQuorum < 1 {
		return c, configErr("MinQuorum", "{MinQuorum} %d: give at least 1", c.MinQuorum)
	}
	defaults.Fill(&c.SnapshotThreshold, d.SnapshotThreshold)
	defaults.Fill(&c.TrailingLogs, d.TrailingLogs)
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		return c, configErr("LeaderLeaseTimeout", "{LeaderLeaseTimeout} (%v) must not exceed {HeartbeatTimeout} (%v)", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	for _, f := range []struct {
		field string
		d     time.Duration
	}{{"JoinTimeout", c.JoinTimeout}, {"PeerLease", c.PeerLease}, {"HeartbeatTimeout", c.HeartbeatTimeout}, {"ElectionTimeout", c.ElectionTimeout}, {"LeaderLeaseTimeout", c.LeaderLeaseTimeout}, {"SnapshotInterval", c.SnapshotInterval}, {"ApplyTimeout", c.ApplyTimeout}, {"DeadMasterTimeout", c.DeadMasterTimeout}, {"ServerStabilizationTime", c.ServerStabilizationTime}, {"AutopilotInterval", c.AutopilotInterval}, {"ReadyMaxContact", c.ReadyMaxContact}} {
		if f.d < 0 {
			return c, configErr(f.field, "{%s} is negative (%v)", f.field, f.d)
		}
	}
	if c.TLS == nil && !c.Insecure {
		if err := requireLoopback(c.Listen); err != nil {
			return c, configErr("Listen", "{Listen} %s without TLS: %v; anyone who reaches the port could rewrite the index, so give {TLS} (see 'fileshare tls init'), or set {Insecure} if this network is trusted", c.Listen, err)
		}
	}
	if c.TLS != nil && (!c.TLS.HasCertificate() || !c.TLS.HasCA()) {
		return c, configErr("TLS", "a master with TLS needs its certificate and key and the cluster CA ({TLS})")
	}
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defInt(&c.MaxFilesPerPeer, d.MaxFilesPerPeer)
	defInt(&c.MaxPeersPerIP, d.MaxPeersPerIP)
	defInt(&c.MaxCommandBytes, d.MaxCommandBytes)
	if c.MaxCommandBytes < 0 || c.MaxCommandBytes > fsm.MaxCommandSize {
		return c, configErr("MaxCommandBytes", "{MaxCommandBytes} %d: give 1..%d", c.MaxCommandBytes, fsm.MaxCommandSize)
	}
	switch c.Metrics {
	case "":
		c.Metrics = d.Metrics
	case MetricsBasic, MetricsExtensive:
	default:
		return c, configErr("Metrics", "{Metrics} %q: give %s or %s", c.Metrics, MetricsBasic, MetricsExtensive)
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
			return nil, configErr("InitialCluster", "{InitialCluster} entry %q is not ID=HOST:PORT", part)
		}
		out = append(out, Member{ID: id, Addr: addr})
	}
	if len(out) == 0 {
		return nil, configErr("InitialCluster", "{InitialCluster} is empty")
	}
	return out, nil
}
