package bench

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"fileshare/client"
	"fileshare/internal/poll"
	"fileshare/transport"
)

// LoadConfig describes a closed-loop load: Clients goroutines each issue
// one operation, wait for it, and issue the next, for Duration.
type LoadConfig struct {
	Masters  []string
	Clients  int
	Duration time.Duration
	// Conns is how many client connections the goroutines share when the
	// masters run without TLS; zero means one per 32 clients. With TLS
	// every writing client has a connection of its own, since a
	// connection speaks for the one peer whose key it presented.
	Conns int
	// CA verifies the masters; nil means they run without TLS.
	CA *transport.TLS
	// OpTimeout bounds one operation; zero means 10 s.
	OpTimeout time.Duration
}

func (c *LoadConfig) defaults() {
	if c.Clients <= 0 {
		c.Clients = 1
	}
	if c.Conns <= 0 {
		c.Conns = max(1, c.Clients/32)
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = 10 * time.Second
	}
}

// Result summarises a load run.
type Result struct {
	Ops      int
	Errors   int
	Elapsed  time.Duration
	Lat      Latencies
	FirstErr error
	// LeaderChanges counts the elections seen while the load ran.
	LeaderChanges int
}

// Rate is acknowledged operations per second.
func (r Result) Rate() float64 { return float64(r.Ops) / r.Elapsed.Seconds() }

// opFunc runs one operation for worker i.
type opFunc func(ctx context.Context, c *client.Client, worker, seq int) error

// runLoad runs op from cfg.Clients goroutines until the duration ends and
// returns what was acknowledged.
func runLoad(ctx context.Context, cfg LoadConfig, clients []*client.Client, op opFunc) Result {
	var mu sync.Mutex
	var res Result
	var wg sync.WaitGroup
	stop := time.Now().Add(cfg.Duration)
	start := time.Now()
	var errs atomic.Int64
	watch := watchLeaders(ctx, clients[0])
	for i := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[i%len(clients)]
			lat := make(Latencies, 0, 1024)
			for seq := 0; time.Now().Before(stop) && ctx.Err() == nil; seq++ {
				octx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
				t0 := time.Now()
				err := op(octx, c, i, seq)
				d := time.Since(t0)
				cancel()
				if err != nil {
					if errs.Add(1) == 1 {
						mu.Lock()
						res.FirstErr = err
						mu.Unlock()
					}
					continue
				}
				lat = append(lat, d)
			}
			mu.Lock()
			res.Lat = append(res.Lat, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.LeaderChanges = watch.finish()
	res.Ops = len(res.Lat)
	res.Errors = int(errs.Load())
	return res
}

// newClients returns the clients a load runs over: without TLS, n clients
// shared by every identity; with TLS (ca set), one per identity, each
// presenting that identity's key (and n fresh ones if ids is empty, for
// reads).
func newClients(masters []string, ca *transport.TLS, ids []client.Identity, n int) ([]*client.Client, error) {
	var out []*client.Client
	add := func(creds *transport.TLS) error {
		c, err := client.New(client.Config{Masters: masters, TLS: creds})
		if err != nil {
			return err
		}
		out = append(out, c)
		return nil
	}
	switch {
	case ca == nil:
		for range n {
			if err := add(nil); err != nil {
				closeAll(out)
				return nil, err
			}
		}
	case len(ids) == 0:
		ids = identities(n)
		fallthrough
	default:
		for _, id := range ids {
			creds, err := id.TLS(ca)
			if err == nil {
				err = add(creds)
			}
			if err != nil {
				closeAll(out)
				return nil, err
			}
		}
	}
	return out, nil
}

func closeAll(cs []*client.Client) {
	for _, c := range cs {
		c.Close()
	}
}

// identities returns n peer identities with fresh keys.
func identities(n int) []client.Identity {
	out := make([]client.Identity, n)
	for i := range out {
		id, err := client.NewIdentity()
		if err != nil {
			panic(err) // the system's random source failed
		}
		out[i] = id
	}
	return out
}

// joinAll joins every identity, identity i through clients[i%len(clients)]
// (with TLS, its own client).
func joinAll(ctx context.Context, clients []*client.Client, ids []client.Identity) error {
	for i, id := range ids {
		if _, err := clients[i%len(clients)].Join(ctx, id, "127.0.0.1:1"); err != nil {
			return fmt.Errorf("join %s: %w", id.PeerID, err)
		}
	}
	return nil
}

// asPeer runs fn with a client that may act as id: shared when the
// masters run without TLS, else a client of its own for the call (closed
// afterwards), for loads with more peers than connections are worth
// keeping open.
func asPeer(masters []string, ca *transport.TLS, shared *client.Client, id client.Identity, fn func(*client.Client) error) error {
	if ca == nil {
		return fn(shared)
	}
	cs, err := newClients(masters, ca, []client.Identity{id}, 1)
	if err != nil {
		return err
	}
	defer closeAll(cs)
	return fn(cs[0])
}

// registerBatch is how many files one population request registers:
// small enough that its log entry stays under the masters' entry cap.
const registerBatch = 1000

func fileEntry(name string) client.FileEntry {
	sum := sha256.Sum256([]byte(name))
	return client.FileEntry{ID: hex.EncodeToString(sum[:]), Name: name, Size: 1 << 20, PieceSize: 1 << 18}
}

func runTag() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Register measures single-file registrations, each acknowledged only
// after the leader committed it on a majority (with fsync), and writes one
// summary line to w.
func Register(ctx context.Context, cfg LoadConfig, w io.Writer) (Result, error) {
	cfg.defaults()
	tag := runTag()
	ids := identities(cfg.Clients)
	clients, err := newClients(cfg.Masters, cfg.CA, ids, cfg.Conns)
	if err != nil {
		return Result{}, err
	}
	defer closeAll(clients)
	if err := joinAll(ctx, clients, ids); err != nil {
		return Result{}, err
	}
	res := runLoad(ctx, cfg, clients, func(ctx context.Context, c *client.Client, worker, seq int) error {
		f := fileEntry(fmt.Sprintf("bench-%s-%d-%d.bin", tag, worker, seq))
		_, err := c.Register(ctx, ids[worker], []client.FileEntry{f})
		return err
	})
	fmt.Fprintf(w, "register: %.0f acknowledged registrations/s, %s, clients=%d, ops=%d, errors=%d, leader changes=%d, duration=%s\n",
		res.Rate(), res.Lat.Summary(), cfg.Clients, res.Ops, res.Errors, res.LeaderChanges, res.Elapsed.Round(time.Millisecond))
	return res, nil
}

// Lookup populates files, then measures lookups at each read level for
// cfg.Duration each, and writes one line per level and a summary line.
func Lookup(ctx context.Context, cfg LoadConfig, files int, w io.Writer) (map[client.ReadLevel]Result, error) {
	cfg.defaults()
	clients, err := newClients(cfg.Masters, cfg.CA, nil, cfg.Conns)
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)
	tag := runTag()
	owner := identities(1)
	ownerClients, err := newClients(cfg.Masters, cfg.CA, owner, 1)
	if err != nil {
		return nil, err
	}
	defer closeAll(ownerClients)
	if err := joinAll(ctx, ownerClients, owner); err != nil {
		return nil, err
	}
	// The owner heartbeats for as long as the lookups run, as a real peer
	// does: without it its files would expire with its lease mid-run and
	// every later lookup would find nothing.
	hbCtx, stopHB := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() { // owned by Lookup, which stops and waits for it
		defer close(hbDone)
		heartbeat(hbCtx, ownerClients[0], owner[0])
	}()
	defer func() { stopHB(); <-hbDone }()
	ids := make([]string, files)
	var batch []client.FileEntry
	for i := range files {
		f := fileEntry(fmt.Sprintf("lookup-%s-%d.bin", tag, i))
		ids[i] = f.ID
		batch = append(batch, f)
		if len(batch) == registerBatch || i == files-1 {
			if _, err := ownerClients[0].Register(ctx, owner[0], batch); err != nil {
				return nil, fmt.Errorf("populate: %w", err)
			}
			batch = nil
		}
	}
	// Stale reads are served by any master: measure them only once every
	// master has applied the population, or they would find nothing.
	if err := poll.Wait(ctx, func() bool {
		sts, errs := clients[0].ClusterStatus(ctx)
		caught := true
		for i, st := range sts {
			caught = caught && errs[i] == nil && st.Files >= files
		}
		return caught
	}); err != nil {
		return nil, err
	}
	out := map[client.ReadLevel]Result{}
	for _, level := range []client.ReadLevel{client.ReadStale, client.ReadLeader, client.ReadLinearizable} {
		res := runLoad(ctx, cfg, clients, func(ctx context.Context, c *client.Client, worker, seq int) error {
			r, err := c.Lookup(ctx, ids[(worker*7919+seq)%len(ids)], level)
			if err == nil && !r.Found {
				err = fmt.Errorf("lookup of a registered file found nothing at level %s", level)
			}
			return err
		})
		out[level] = res
		fmt.Fprintf(w, "lookup %-12s %8.0f lookups/s, %s, errors=%d, leader changes=%d\n", level+":", res.Rate(), res.Lat.Summary(), res.Errors, res.LeaderChanges)
	}
	fmt.Fprintf(w, "lookup: stale=%.0f/s leader=%.0f/s linearizable=%.0f/s, clients=%d, files=%d\n",
		out[client.ReadStale].Rate(), out[client.ReadLeader].Rate(), out[client.ReadLinearizable].Rate(), cfg.Clients, files)
	return out, nil
}

// heartbeat renews id's lease through c at a third of the lease until ctx
// ends.
func heartbeat(ctx context.Context, c *client.Client, id client.Identity) {
	every := time.Second
	for {
		if lease, err := c.Heartbeat(ctx, id); err == nil && lease > 0 {
			every = lease / 3
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}
