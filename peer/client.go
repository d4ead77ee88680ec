package peer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"fileshare/transport"
)

// ClientConfig configures a MasterClient. A zero field means its default.
type ClientConfig struct {
	// Masters lists the cluster's masters (host:port of their cluster
	// port). Any subset that includes a live master will do. Required.
	Masters []string
	// AttemptTimeout bounds one call to one master, so a hung or paused
	// master costs at most this much before the client tries another.
	// Zero means 5 s.
	AttemptTimeout time.Duration
	// Dial opens connections; nil means plain TCP.
	Dial transport.DialFunc
}

// ErrNoMasters means the ClientConfig listed no masters.
var ErrNoMasters = errors.New("no masters given; pass the cluster's addresses, e.g. --masters 127.0.0.1:7001,127.0.0.1:7002")

// MasterClient calls the SwarmMaster cluster and hides leader changes: it
// remembers which master answered last, follows "not leader, try X" hints,
// moves on to the next master when one is down, and retries with jittered
// backoff until the caller's context ends. Writes carry a request ID chosen
// once per logical call, so a retry after an unknown outcome is applied at
// most once. Safe for concurrent use.
type MasterClient struct {
	cfg ClientConfig
	rpc *transport.Client

	mu      sync.Mutex
	current int    // index into cfg.Masters of the master to try first
	hint    string // leader address learnt from a NotLeaderError, if any
}

// NewClient returns a MasterClient for the given masters.
func NewClient(cfg ClientConfig) (*MasterClient, error) {
	var masters []string
	for _, a := range cfg.Masters {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("master address %q is not host:port: %w", a, err)
		}
		masters = append(masters, a)
	}
	if len(masters) == 0 {
		return nil, ErrNoMasters
	}
	cfg.Masters = masters
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 5 * time.Second
	}
	return &MasterClient{
		cfg:     cfg,
		rpc:     transport.NewClient(transport.ClientConfig{Dial: cfg.Dial}),
		current: rand.N(len(masters)),
	}, nil
}

// Close releases the client's connections.
func (c *MasterClient) Close() error { return c.rpc.Close() }

// Masters returns the configured master addresses.
func (c *MasterClient) Masters() []string { return append([]string(nil), c.cfg.Masters...) }

func (c *MasterClient) target() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hint != "" {
		return c.hint
	}
	return c.cfg.Masters[c.current]
}

// failed notes that addr did not serve the call, so the next attempt goes
// elsewhere.
func (c *MasterClient) failed(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hint == addr {
		c.hint = ""
	}
	if c.cfg.Masters[c.current] == addr {
		c.current = (c.current + 1) % len(c.cfg.Masters)
	}
}

func (c *MasterClient) follow(leaderAddr string) {
	c.mu.Lock()
	c.hint = leaderAddr
	c.mu.Unlock()
}

// Call invokes method on the cluster with failover. It returns nil, a
// non-retryable error from the cluster (invalid request, unauthorized,
// conflict…), or, once ctx ends, the last transient error wrapped with the
// context's error.
func (c *MasterClient) Call(ctx context.Context, method string, req, resp any) error {
	backoff := 10 * time.Millisecond
	var lastErr error
	hops := 0
	for {
		addr := c.target()
		actx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
		err := c.rpc.Call(actx, addr, method, req, resp)
		cancel()
		if err == nil {
			if h, ok := resp.(interface{ LeaderAddr() string }); ok {
				if l := h.LeaderAddr(); l != "" && l != addr {
					c.follow(l) // go straight to the leader next time
				}
			}
			return nil
		}
		if !transport.Retryable(err) {
			return err
		}
		lastErr = err
		var nl *transport.NotLeaderError
		if errors.As(err, &nl) && nl.LeaderAddr != "" && nl.LeaderAddr != addr && hops < 3 {
			// A fresh hint: follow it at once.
			hops++
			c.follow(nl.LeaderAddr)
			continue
		}
		hops = 0
		c.failed(addr)
		if ctx.Err() != nil {
			return fmt.Errorf("%s: no master answered before the deadline; last error: %w", method, lastErr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: no master answered before the deadline; last error: %w", method, lastErr)
		case <-time.After(backoff/2 + rand.N(backoff/2+1)):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// CallAt invokes method on one specific master, without failover.
func (c *MasterClient) CallAt(ctx context.Context, addr, method string, req, resp any) error {
	return c.rpc.Call(ctx, addr, method, req, resp)
}

// newRequestID returns a random non-zero request ID.
func newRequestID() uint64 {
	for {
		if id := rand.Uint64(); id != 0 {
			return id
		}
	}
}

// Identity is what a peer proves itself with.
type Identity struct {
	PeerID string
	Secret []byte
}

func (id Identity) header() transport.WriteHeader {
	return transport.WriteHeader{PeerID: id.PeerID, Secret: id.Secret, RequestID: newRequestID()}
}

// Join announces the peer at addr (where it serves pieces).
func (c *MasterClient) Join(ctx context.Context, id Identity, addr string) (transport.WriteReply, error) {
	var out transport.WriteReply
	err := c.Call(ctx, transport.MethodPeerJoin, &transport.PeerJoinRequest{WriteHeader: id.header(), Addr: addr}, &out)
	return out, err
}

// Leave removes the peer and all its registrations.
func (c *MasterClient) Leave(ctx context.Context, id Identity) (transport.WriteReply, error) {
	var out transport.WriteReply
	err := c.Call(ctx, transport.MethodPeerLeave, &transport.PeerLeaveRequest{WriteHeader: id.header()}, &out)
	return out, err
}

// Register adds the peer as a holder of files (one log entry, atomic).
func (c *MasterClient) Register(ctx context.Context, id Identity, files []transport.FileEntry) (transport.WriteReply, error) {
	var out transport.WriteReply
	err := c.Call(ctx, transport.MethodRegister, &transport.RegisterRequest{WriteHeader: id.header(), Files: files}, &out)
	return out, err
}

// Unregister removes the peer as a holder of the given file IDs.
func (c *MasterClient) Unregister(ctx context.Context, id Identity, files []string) (transport.WriteReply, error) {
	var out transport.WriteReply
	err := c.Call(ctx, transport.MethodUnregister, &transport.UnregisterRequest{WriteHeader: id.header(), Files: files}, &out)
	return out, err
}

// Heartbeat renews the peer's lease and returns its length.
func (c *MasterClient) Heartbeat(ctx context.Context, id Identity) (time.Duration, error) {
	var out transport.HeartbeatReply
	err := c.Call(ctx, transport.MethodHeartbeat, &transport.HeartbeatRequest{PeerID: id.PeerID, Secret: id.Secret}, &out)
	return time.Duration(out.LeaseMillis) * time.Millisecond, err
}

// Lookup returns the holders of a file, read at level ("" = linearizable).
func (c *MasterClient) Lookup(ctx context.Context, fileID string, level transport.ReadLevel) (transport.LookupReply, error) {
	var out transport.LookupReply
	err := c.Call(ctx, transport.MethodLookup, &transport.LookupRequest{ReadHeader: transport.ReadHeader{Level: level}, FileID: fileID}, &out)
	return out, err
}

// Search returns files whose name contains every word of query.
func (c *MasterClient) Search(ctx context.Context, query string, limit int, level transport.ReadLevel) (transport.SearchReply, error) {
	var out transport.SearchReply
	err := c.Call(ctx, transport.MethodSearch, &transport.SearchRequest{ReadHeader: transport.ReadHeader{Level: level}, Query: query, Limit: limit}, &out)
	return out, err
}

// Peers lists the peers in the index.
func (c *MasterClient) Peers(ctx context.Context, level transport.ReadLevel) (transport.PeersReply, error) {
	var out transport.PeersReply
	err := c.Call(ctx, transport.MethodPeers, &transport.PeersRequest{ReadHeader: transport.ReadHeader{Level: level}}, &out)
	return out, err
}

// Status asks one master for its own view (no failover: the answer is
// about that master).
func (c *MasterClient) Status(ctx context.Context, addr string) (transport.Status, error) {
	var out transport.Status
	err := c.rpc.Call(ctx, addr, transport.MethodStatus, &transport.StatusRequest{}, &out)
	return out, err
}

// ClusterStatus asks every configured master for its status in parallel.
// Unreachable masters get an error in their slot.
func (c *MasterClient) ClusterStatus(ctx context.Context) ([]transport.Status, []error) {
	sts := make([]transport.Status, len(c.cfg.Masters))
	errs := make([]error, len(c.cfg.Masters))
	var wg sync.WaitGroup
	for i, addr := range c.cfg.Masters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sts[i], errs[i] = c.Status(ctx, addr)
		}()
	}
	wg.Wait()
	return sts, errs
}

// RemoveMember removes a master from the cluster.
func (c *MasterClient) RemoveMember(ctx context.Context, id string) error {
	return c.Call(ctx, transport.MethodMemberRemove, &transport.MemberRemoveRequest{ID: id}, nil)
}

// AddMember adds a master (already running, started with no --initial-cluster
// and no state) to the cluster as a voter.
func (c *MasterClient) AddMember(ctx context.Context, id, addr string) error {
	return c.Call(ctx, transport.MethodMemberJoin, &transport.MemberJoinRequest{ID: id, Addr: addr}, nil)
}

// TransferLeader hands leadership to id ("" = any up-to-date voter) and
// returns the new leader.
func (c *MasterClient) TransferLeader(ctx context.Context, id string) (transport.TransferLeaderReply, error) {
	var out transport.TransferLeaderReply
	err := c.Call(ctx, transport.MethodTransferLeader, &transport.TransferLeaderRequest{ID: id}, &out)
	return out, err
}

// Snapshot asks the master at addr to snapshot its index now.
func (c *MasterClient) Snapshot(ctx context.Context, addr string) (transport.SnapshotReply, error) {
	var out transport.SnapshotReply
	err := c.rpc.Call(ctx, addr, transport.MethodSnapshot, &transport.SnapshotRequest{}, &out)
	return out, err
}
