package master

import (
	"math"
	"net"
	"time"

	"fileshare/fsm"
	"fileshare/internal/defaults"
	"fileshare/tracker"
)

// TrackerConfig configures the tracker a master serves. A zero field means
// its default.
type TrackerConfig struct {
	// HTTP is the host:port of the HTTP tracker (announce URL
	// http://HTTP/announce). Empty disables it.
	HTTP string
	// UDP is the host:port of the UDP tracker (BEP 15; announce URL
	// udp://UDP/announce). Empty disables it.
	UDP string
	// Interval is the re-announce interval sent to clients. Zero means
	// 15 minutes. Re-announces are cheap (no log entry), but libtorrent
	// and qBittorrent do not re-announce more often than every 5 minutes
	// whatever a tracker says, so shorter intervals only help other
	// clients notice a change sooner.
	Interval time.Duration
	// MinInterval is the min interval sent to clients. Zero means a
	// third of Interval.
	MinInterval time.Duration
	// PeerLifetime is how long a swarm entry lives without a re-announce.
	// Zero means 2 × Interval + 2 minutes: one re-announce may be lost or
	// late (jittered, or the client was busy) without the peer dropping
	// out.
	PeerLifetime time.Duration
	// EmptySwarmLifetime is how long a swarm that lost its last entry
	// keeps its completed-download count (for scrapes) before it ends.
	// Meanwhile it counts as one entry of the address that left last.
	// Zero means one hour.
	EmptySwarmLifetime time.Duration
	// MaxConnsPerIP caps the HTTP tracker connections one source IP may
	// hold at once. Zero means tracker.DefaultMaxConnsPerIP (64); raise it
	// for clients behind a large NAT.
	MaxConnsPerIP int
	// MaxNumWant caps the peers one announce returns. Zero means 200; a
	// client that sends no numwant gets 50 (or fewer, up to this cap).
	MaxNumWant int
	// MaxPeers caps the swarm entries in the whole index, so that
	// strangers announcing random info-hashes cannot exhaust the
	// masters' memory. Zero means 2,000,000 (about 200 MB per master).
	MaxPeers int
	// MaxSwarms caps the swarms in the index, including swarms that lost
	// their last entry but keep a completed count (see
	// EmptySwarmLifetime). Zero means 1,000,000.
	MaxSwarms int
	// MaxPeersPerIP caps the swarm entries whose address is one IPv4
	// address or one IPv6 address. Zero means 5,000: a seedbox with
	// thousands of torrents fits, one host cannot fill the tracker.
	MaxPeersPerIP int
	// MaxPeersPer64 caps the swarm entries from one IPv6 /64 (usually one
	// subscriber). Zero means 2 × MaxPeersPerIP.
	MaxPeersPer64 int
	// MaxPeersPer48 caps the swarm entries from one IPv6 /48 (usually one
	// site), so that the 65,536 /64s of one /48 cannot fill the tracker.
	// Zero means 4 × MaxPeersPerIP.
	MaxPeersPer48 int
	// MaxRate is the fastest a private tracker member's counters may
	// grow, in bytes per second: growth beyond it over the time between
	// two reports is clamped and counted suspicious. Zero means
	// fsm.DefaultMaxRate (1 GiB/s).
	MaxRate int64
}

// DefaultTrackerConfig returns the value every tunable field of
// TrackerConfig takes when it is zero. The fields whose default derives
// from another (MinInterval, PeerLifetime, MaxPeersPer64, MaxPeersPer48)
// stay zero: their rule is in their doc.
func DefaultTrackerConfig() TrackerConfig {
	return TrackerConfig{
		Interval:           15 * time.Minute,
		EmptySwarmLifetime: time.Hour,
		MaxConnsPerIP:      tracker.DefaultMaxConnsPerIP,
		MaxNumWant:         200,
		MaxPeers:           2_000_000,
		MaxSwarms:          1_000_000,
		MaxPeersPerIP:      5000,
		MaxRate:            fsm.DefaultMaxRate,
	}
}

func (c *TrackerConfig) withDefaults() error {
	for _, f := range []struct{ field, addr string }{{"Tracker.HTTP", c.HTTP}, {"Tracker.UDP", c.UDP}} {
		if _, _, err := net.SplitHostPort(f.addr); f.addr != "" && err != nil {
			return configErr(f.field, "{%s} %q is not host:port: %v", f.field, f.addr, err)
		}
	}
	d := DefaultTrackerConfig()
	defaults.Fill(&c.Interval, d.Interval)
	defaults.Fill(&c.MinInterval, c.Interval/3)
	defaults.Fill(&c.PeerLifetime, 2*c.Interval+2*time.Minute)
	defaults.Fill(&c.EmptySwarmLifetime, d.EmptySwarmLifetime)
	defaults.Fill(&c.MaxConnsPerIP, d.MaxConnsPerIP)
	defaults.Fill(&c.MaxNumWant, d.MaxNumWant)
	defaults.Fill(&c.MaxPeers, d.MaxPeers)
	defaults.Fill(&c.MaxPeersPerIP, d.MaxPeersPerIP)
	defaults.Fill(&c.MaxPeersPer64, 2*c.MaxPeersPerIP)
	defaults.Fill(&c.MaxPeersPer48, 4*c.MaxPeersPerIP)
	defaults.Fill(&c.MaxSwarms, d.MaxSwarms)
	defaults.Fill(&c.MaxRate, d.MaxRate)
	switch {
	case c.Interval < time.Second:
		return configErr("Tracker.Interval", "{Tracker.Interval} %v is under a second", c.Interval)
	case c.MinInterval < 0 || c.MinInterval > c.Interval:
		return configErr("Tracker.MinInterval", "{Tracker.MinInterval} %v must be between 0 and {Tracker.Interval} %v", c.MinInterval, c.Interval)
	case c.PeerLifetime <= c.Interval:
		return configErr("Tracker.PeerLifetime", "{Tracker.PeerLifetime} %v must exceed {Tracker.Interval} %v, or every peer expires before it re-announces", c.PeerLifetime, c.Interval)
	case c.MaxRate < 0:
		return configErr("Tracker.MaxRate", "{Tracker.MaxRate} %d is negative", c.MaxRate)
	case c.EmptySwarmLifetime < 0:
		return configErr("Tracker.EmptySwarmLifetime", "{Tracker.EmptySwarmLifetime} %v is negative", c.EmptySwarmLifetime)
	case c.MaxNumWant < 1:
		return configErr("Tracker.MaxNumWant", "{Tracker.MaxNumWant} %d must be at least 1", c.MaxNumWant)
	}
	for _, f := range []struct {
		field string
		n     int
	}{{"Tracker.MaxPeers", c.MaxPeers}, {"Tracker.MaxSwarms", c.MaxSwarms}, {"Tracker.MaxPeersPerIP", c.MaxPeersPerIP}, {"Tracker.MaxPeersPer64", c.MaxPeersPer64}, {"Tracker.MaxPeersPer48", c.MaxPeersPer48}} {
		if f.n < 1 || f.n > math.MaxUint32 {
			return configErr(f.field, "{%s} %d: give 1 to 2^32-1", f.field, f.n)
		}
	}
	return nil
}

// swarmLimits are the limits the leader proposes announces under.
func (c *TrackerConfig) swarmLimits() fsm.SwarmLimits {
	return fsm.SwarmLimits{
		MaxPeers: uint32(c.MaxPeers), MaxSwarms: uint32(c.MaxSwarms),
		PerAddr: uint32(c.MaxPeersPerIP), Per64: uint32(c.MaxPeersPer64), Per48: uint32(c.MaxPeersPer48),
	}
}
