package mastertest

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"fileshare/client"
)

// Timeouts of T's waits: generous for a loaded 2-core machine under -race.
const (
	startTimeout    = 30 * time.Second
	leaderTimeout   = 15 * time.Second
	convergeTimeout = 20 * time.Second
)

// T is a Cluster bound to a test: the methods it adds or redefines fail
// the test (tb.Fatal) instead of returning errors and wait with fixed,
// generous timeouts. Call them from the test's goroutine, except Kill and
// Stop, which report with tb.Error and so may run on any goroutine. The
// embedded Cluster's other methods work as documented there.
type T struct {
	*Cluster
	tb testing.TB
}

// New starts a cluster of n masters for tb and stops it (CloseNow) at
// tb's cleanup. An empty opts.Dir means tb.TempDir(); a nil opts.Logger
// means TestLogger(tb). It does not wait for a leader: call Leader.
func New(tb testing.TB, n int, opts Options) *T {
	tb.Helper()
	if opts.Dir == "" {
		opts.Dir = tb.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = TestLogger(tb)
	}
	c, err := NewUnstarted(n, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.CloseNow(); err != nil {
			tb.Errorf("stop the masters: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(tb.Context(), startTimeout)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	return &T{Cluster: c, tb: tb}
}

// TestLogger returns a logger for tb: raft's and the masters' chatter in
// the test's output if the environment variable FILESHARE_TEST_LOG is set,
// else nothing.
func TestLogger(tb testing.TB) *slog.Logger {
	if os.Getenv("FILESHARE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// Leader waits up to 15 s until exactly one running member leads and is
// ready (Cluster.Leader) and returns its index.
func (c *T) Leader() int {
	c.tb.Helper()
	return waitWithin(c, leaderTimeout, c.WaitLeader)
}

// Follower returns the index of a running member other than leader.
func (c *T) Follower(leader int) int {
	c.tb.Helper()
	for i, m := range c.running() {
		if m != nil && i != leader {
			return i
		}
	}
	c.tb.Fatal("no running follower")
	return -1
}

// Converge waits up to 20 s until the running members agree
// (Cluster.Converged) and returns their index's digest.
func (c *T) Converge() string {
	c.tb.Helper()
	return waitWithin(c, convergeTimeout, c.WaitConverged)
}

// waitWithin returns what wait returns, called with a context that ends
// after d or with the test. If wait fails, it fails the test (Fatalf)
// with the error and d, so, like its callers, it must run on the test's
// goroutine.
func waitWithin[V any](c *T, d time.Duration, wait func(context.Context) (V, error)) V {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(c.tb.Context(), d)
	defer cancel()
	v, err := wait(ctx)
	if err != nil {
		c.tb.Fatalf("after %v: %v", d, err)
	}
	return v
}

// Restart starts member i again with its Config (Cluster.Restart).
func (c *T) Restart(i int) {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(c.tb.Context(), startTimeout)
	defer cancel()
	if err := c.Cluster.Restart(ctx, i); err != nil {
		c.tb.Fatal(err)
	}
}

// Kill stops member i abruptly (Cluster.Kill); a no-op if it is stopped.
func (c *T) Kill(i int) {
	c.tb.Helper()
	if err := c.Cluster.Kill(i); err != nil {
		c.tb.Errorf("kill %s: %v", c.ID(i), err)
	}
}

// Stop stops member i gracefully (Cluster.Stop); a no-op if it is stopped.
func (c *T) Stop(i int) {
	c.tb.Helper()
	if err := c.Cluster.Stop(i); err != nil {
		c.tb.Errorf("stop %s: %v", c.ID(i), err)
	}
}

// Isolate cuts member i's links to the others (Cluster.Isolate).
func (c *T) Isolate(i int) {
	c.tb.Helper()
	if err := c.Cluster.Isolate(i); err != nil {
		c.tb.Fatal(err)
	}
}

// Status returns member i's own view (Cluster.Status); i must be running.
func (c *T) Status(i int) client.Status {
	c.tb.Helper()
	st, err := c.Cluster.Status(c.tb.Context(), i)
	if err != nil {
		c.tb.Fatal(err)
	}
	return st
}

// Client returns a failover client for the given cluster addresses, or
// for every member if none are given, with 2 s attempts; it is closed at
// the test's cleanup. With TLS it presents the admin certificate, enough
// for reads and cluster administration; peer writes need PeerClient.
func (c *T) Client(addrs ...string) *client.Client {
	c.tb.Helper()
	if len(addrs) == 0 {
		addrs = c.Addrs()
	}
	cl, err := client.New(client.Config{Masters: addrs, AttemptTimeout: 2 * time.Second, TLS: c.AdminTLS()})
	if err != nil {
		c.tb.Fatal(err)
	}
	c.tb.Cleanup(func() { cl.Close() })
	return cl
}

// PeerClient returns a client for every member that acts as peer id: with
// TLS it presents id's key; without, it is a plain client.
func (c *T) PeerClient(id client.Identity) *client.Client {
	c.tb.Helper()
	cfg := client.Config{Masters: c.Addrs(), AttemptTimeout: 2 * time.Second}
	if ca := c.CA(); ca != nil {
		creds, err := id.TLS(ca)
		if err != nil {
			c.tb.Fatal(err)
		}
		cfg.TLS = creds
	}
	cl, err := client.New(cfg)
	if err != nil {
		c.tb.Fatal(err)
	}
	c.tb.Cleanup(func() { cl.Close() })
	return cl
}
