package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"fileshare/internal/cfgerr"
	"fileshare/transport"
)

// Config configures a Client. A zero field means its default.
type Config struct {
	// Masters lists the cluster's masters (host:port of their cluster
	// port). Any subset that includes a live master will do. Required.
	Masters []string
	// AttemptTimeout bounds one call to one master, so a hung or paused
	// master costs at most this much before the client tries another.
	// Zero means 5 s.
	AttemptTimeout time.Duration
	// TLS, if set, makes every connection TLS: the client presents TLS's
	// certificate (a peer's key, or an admin's certificate) and talks only
	// to masters whose certificate the cluster CA signed for a master, so
	// neither a wrong address nor a leader hint can lead it to an
	// impostor. Nil is plaintext, for a cluster started with --insecure.
	TLS *transport.TLS
	// Dial opens connections; nil means TCP from any local address, with
	// TLS if TLS is set.
	Dial transport.DialFunc
}

// ErrNoMasters means the Config listed no masters.
var ErrNoMasters = errors.New("no masters given")

// ErrNothingListens means that, in one pass over every configured master,
// each refused the connection (or had no route): nothing listens at any of
// those addresses. The request reached no master, so it did not apply.
// Call returns it at once, as a *NothingListensError, instead of retrying
// until its deadline: the masters are not running, or the addresses are
// wrong. Callers that outlive master restarts retry it on their own clock.
var ErrNothingListens = errors.New("nothing listens at any of the masters' addresses")

// NothingListensError is ErrNothingListens with the method and the
// addresses tried.
type NothingListensError struct {
	Method string
	Addrs  []string
}

func (e *NothingListensError) Error() string {
	return fmt.Sprintf("%s reached no master: nothing listens at %s (connection refused); start the masters, or check that the addresses given are their cluster ports (not their HTTP ports)", Describe(e.Method), strings.Join(e.Addrs, ", "))
}

// Is reports whether target is ErrNothingListens.
func (e *NothingListensError) Is(target error) bool { return target == ErrNothingListens }

// Client calls the SwarmMaster cluster and hides leader changes: it
// remembers which master answered last, follows "not leader, try X" hints,
// moves on to the next master when one is down, and retries with jittered
// backoff until the caller's context ends. Writes carry a request ID chosen
// once per logical call, so a retry after an unknown outcome is applied at
// most once. Safe for concurrent use.
type Client struct {
	cfg Config
	rpc *transport.Client

	mu      sync.Mutex
	current int    // index into cfg.Masters of the master to try first
	hint    string // leader address learnt from a NotLeaderError, if any
}

// New returns a Client for the given masters.
func New(cfg Config) (*Client, error) {
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
		return nil, cfgerr.New(ErrNoMasters, "Masters", "give the masters' cluster ports in {Masters}, e.g. 127.0.0.1:7001,127.0.0.1:7002")
	}
	cfg.Masters = masters
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 5 * time.Second
	}
	if cfg.Dial == nil && cfg.TLS != nil {
		tlsCfg := cfg.TLS.MasterClientConfig()
		cfg.Dial = func(addr string, kind byte, timeout time.Duration) (net.Conn, error) {
			return transport.DialStreamTLS(addr, kind, timeout, tlsCfg)
		}
	}
	return &Client{
		cfg:     cfg,
		rpc:     transport.NewClient(transport.ClientConfig{Dial: cfg.Dial}),
		current: mrand.N(len(masters)),
	}, nil
}

// Close releases the client's connections.
func (c *Client) Close() error { return c.rpc.Close() }

// Masters returns the configured master addresses.
func (c *Client) Masters() []string { return append([]string(nil), c.cfg.Masters...) }

// target returns the master the next attempt goes to: the leader if the
// client knows it, else its current pick. A stale read goes to the current
// pick even when the leader is known, since any master serves it: each
// client starts at a random master, so a crowd of clients spreads its
// stale reads over the whole cluster instead of piling them on the leader.
func (c *Client) target(stale bool) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hint != "" && !stale {
		return c.hint
	}
	return c.cfg.Masters[c.current]
}

// isStaleRead reports whether req is a read at ReadStale.
func isStaleRead(req any) bool {
	h, ok := req.(interface{ readLevel() ReadLevel })
	return ok && h.readLevel() == ReadStale
}

// failed notes that addr did not serve the call, so the next attempt goes
// elsewhere.
func (c *Client) failed(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hint == addr {
		c.hint = ""
	}
	if c.cfg.Masters[c.current] == addr {
		c.current = (c.current + 1) % len(c.cfg.Masters)
	}
}

func (c *Client) follow(leaderAddr string) {
	c.mu.Lock()
	c.hint = leaderAddr
	c.mu.Unlock()
}

// Call invokes method on the cluster with failover. It returns nil; a
// non-retryable error from the cluster (invalid request, unauthorized,
// conflict…); a *transport.NotFileShareError (transport.ErrNotFileShare)
// at once if a master's address answers with another protocol or
// disagrees about TLS; a *NothingListensError (ErrNothingListens) at once
// if, before any attempt reached a master, every configured master has
// refused the connection; or, once ctx ends, the last transient error
// (timeout, no leader, reset connection) wrapped with the context's error.
func (c *Client) Call(ctx context.Context, method string, req, resp any) error {
	return c.call(ctx, c.cfg.AttemptTimeout, method, req, resp)
}

// call is Call with each attempt bounded by attempt instead of
// Config.AttemptTimeout, for calls that take long by nature.
func (c *Client) call(ctx context.Context, attempt time.Duration, method string, req, resp any) error {
	backoff := 10 * time.Millisecond
	var lastErr error
	hops := 0
	// refused holds the configured masters that refused this call while
	// every attempt so far was refused; reached records that one attempt
	// got further, after which only the deadline ends the call.
	refused := make(map[string]bool, len(c.cfg.Masters))
	reached := false
	stale := isStaleRead(req)
	for {
		addr := c.target(stale)
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := c.rpc.Call(actx, addr, method, req, resp)
		cancel()
		if err == nil {
			if h, ok := resp.(interface{ LeaderAddr() string }); ok {
				if l := h.LeaderAddr(); l != "" && l != addr && !stale {
					c.follow(l) // go straight to the leader next time
				}
			}
			return nil
		}
		if !transport.Retryable(err) {
			if errors.Is(err, transport.ErrNotFileShare) {
				c.failed(addr) // a long-lived client tries another next time
			}
			return err
		}
		lastErr = err
		fresh := false // a configured master refused for the first time
		if !errors.Is(err, transport.ErrNoListener) {
			reached = true
		} else if !reached && slices.Contains(c.cfg.Masters, addr) && !refused[addr] {
			refused[addr], fresh = true, true
			if len(refused) == len(c.cfg.Masters) {
				c.failed(addr)
				return &NothingListensError{Method: method, Addrs: c.Masters()}
			}
		}
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
			return fmt.Errorf("no master answered %s before the deadline; last error: %w", Describe(method), lastErr)
		}
		if fresh {
			continue // nothing to wait for: try the next master at once
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no master answered %s before the deadline; last error: %w", Describe(method), lastErr)
		case <-time.After(backoff/2 + mrand.N(backoff/2+1)):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// CallAt invokes method on one specific master, without failover.
func (c *Client) CallAt(ctx context.Context, addr, method string, req, resp any) error {
	return c.rpc.Call(ctx, addr, method, req, resp)
}

// newRequestID returns a random non-zero request ID.
func newRequestID() uint64 {
	for {
		if id := mrand.Uint64(); id != 0 {
			return id
		}
	}
}

// Identity is a peer: its Ed25519 key and the ID derived from the public
// key (PeerIDOf), so nobody can claim the ID without the key. Requests
// carry only the public key; the key proves itself as the TLS client
// certificate (Identity.TLS), and nothing secret ever crosses the wire.
type Identity struct {
	PeerID string
	Key    ed25519.PrivateKey
}

// NewIdentity makes a new peer identity with a fresh random key.
func NewIdentity() (Identity, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Identity{}, fmt.Errorf("generate peer key: %w", err)
	}
	return IdentityFromKey(k), nil
}

// IdentityFromKey returns the identity of key.
func IdentityFromKey(key ed25519.PrivateKey) Identity {
	return Identity{PeerID: PeerIDOf(key.Public().(ed25519.PublicKey)), Key: key}
}

// Public returns the identity's public key.
func (id Identity) Public() ed25519.PublicKey { return id.Key.Public().(ed25519.PublicKey) }

// TLS returns credentials that present this identity's key as a TLS
// client certificate; ca (nil if the cluster runs without TLS) verifies
// masters.
func (id Identity) TLS(ca *transport.TLS) (*transport.TLS, error) {
	return transport.PeerTLS(id.Key, ca)
}

func (id Identity) header() WriteHeader {
	return WriteHeader{PeerID: id.PeerID, Key: id.Public(), RequestID: newRequestID()}
}

// Join announces the peer at addr (where it serves pieces).
func (c *Client) Join(ctx context.Context, id Identity, addr string) (WriteReply, error) {
	var out WriteReply
	err := c.Call(ctx, MethodPeerJoin, &PeerJoinRequest{WriteHeader: id.header(), Addr: addr}, &out)
	return out, err
}

// Leave removes the peer and all its registrations.
func (c *Client) Leave(ctx context.Context, id Identity) (WriteReply, error) {
	var out WriteReply
	err := c.Call(ctx, MethodPeerLeave, &PeerLeaveRequest{WriteHeader: id.header()}, &out)
	return out, err
}

// Register adds the peer as a holder of files (one log entry, atomic).
func (c *Client) Register(ctx context.Context, id Identity, files []FileEntry) (WriteReply, error) {
	var out WriteReply
	err := c.Call(ctx, MethodRegister, &RegisterRequest{WriteHeader: id.header(), Files: files}, &out)
	return out, err
}

// Unregister removes the peer as a holder of the given file IDs.
func (c *Client) Unregister(ctx context.Context, id Identity, files []string) (WriteReply, error) {
	var out WriteReply
	err := c.Call(ctx, MethodUnregister, &UnregisterRequest{WriteHeader: id.header(), Files: files}, &out)
	return out, err
}

// Heartbeat renews the peer's lease and returns its length.
func (c *Client) Heartbeat(ctx context.Context, id Identity) (time.Duration, error) {
	var out HeartbeatReply
	err := c.Call(ctx, MethodHeartbeat, &HeartbeatRequest{PeerID: id.PeerID, Key: id.Public()}, &out)
	return time.Duration(out.LeaseMillis) * time.Millisecond, err
}

// Lookup returns the holders of a file, read at level ("" = linearizable).
func (c *Client) Lookup(ctx context.Context, fileID string, level ReadLevel) (LookupReply, error) {
	var out LookupReply
	err := c.Call(ctx, MethodLookup, &LookupRequest{ReadHeader: ReadHeader{Level: level}, FileID: fileID}, &out)
	return out, err
}

// Search returns files whose name contains every word of query.
func (c *Client) Search(ctx context.Context, query string, limit int, level ReadLevel) (SearchReply, error) {
	var out SearchReply
	err := c.Call(ctx, MethodSearch, &SearchRequest{ReadHeader: ReadHeader{Level: level}, Query: query, Limit: limit}, &out)
	return out, err
}

// Peers lists the peers in the index.
func (c *Client) Peers(ctx context.Context, level ReadLevel) (PeersReply, error) {
	var out PeersReply
	err := c.Call(ctx, MethodPeers, &PeersRequest{ReadHeader: ReadHeader{Level: level}}, &out)
	return out, err
}

// Status asks one master for its own view (no failover: the answer is
// about that master).
func (c *Client) Status(ctx context.Context, addr string) (Status, error) {
	var out Status
	err := c.rpc.Call(ctx, addr, MethodStatus, &StatusRequest{}, &out)
	return out, err
}

// ClusterStatus asks every configured master for its status in parallel.
// Unreachable masters get an error in their slot.
func (c *Client) ClusterStatus(ctx context.Context) ([]Status, []error) {
	sts := make([]Status, len(c.cfg.Masters))
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
func (c *Client) RemoveMember(ctx context.Context, id string) error {
	return c.Call(ctx, MethodMemberRemove, &MemberRemoveRequest{ID: id}, nil)
}

// AddMember adds a master (already running, started with no --initial-cluster
// and no state) to the cluster as a voter.
func (c *Client) AddMember(ctx context.Context, id, addr string) error {
	return c.Call(ctx, MethodMemberJoin, &MemberJoinRequest{ID: id, Addr: addr}, nil)
}

// TransferLeader hands leadership to id ("" = any up-to-date voter) and
// returns the new leader.
func (c *Client) TransferLeader(ctx context.Context, id string) (TransferLeaderReply, error) {
	var out TransferLeaderReply
	err := c.Call(ctx, MethodTransferLeader, &TransferLeaderRequest{ID: id}, &out)
	return out, err
}

// Snapshot asks the master at addr to snapshot its index now.
func (c *Client) Snapshot(ctx context.Context, addr string) (SnapshotReply, error) {
	var out SnapshotReply
	err := c.rpc.Call(ctx, addr, MethodSnapshot, &SnapshotRequest{}, &out)
	return out, err
}
