package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"fileshare/client"
	"fileshare/internal/freeport"
	"fileshare/internal/poll"
	"fileshare/internal/proccluster"
	"fileshare/transport"
)

// Cluster is a set of real `fileshare master` processes on loopback,
// started from a fileshare binary with data and logs in one directory,
// and controlled through internal/proccluster. Stop it with Close.
type Cluster struct {
	addrs  []string
	procs  *proccluster.Cluster
	client *client.Client // status polls and admin calls (the admin certificate with TLS)
	ca     *transport.TLS // the cluster CA; nil when the masters run without TLS
}

// StartCluster starts n masters from binary, with data dirs dir/mI and
// logs dir/mI.log, each run with extra master flags, and waits until they
// have a leader. With secure set the masters run with TLS, as in
// production, from certificates written to dir/tls; otherwise plaintext
// (--insecure on loopback), which measures what TLS costs.
func StartCluster(ctx context.Context, binary, dir string, n int, secure bool, extra ...string) (*Cluster, error) {
	c := &Cluster{}
	specs := make([]proccluster.Spec, n)
	var initial []proccluster.Voter
	tlsDir := filepath.Join(dir, "tls")
	var adminTLS *transport.TLS
	if secure {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("m%d", i+1)
		}
		if err := os.RemoveAll(tlsDir); err != nil {
			return nil, err
		}
		if _, err := transport.InitFiles(tlsDir, ids, []string{"127.0.0.1"}, 24*time.Hour); err != nil {
			return nil, err
		}
		var err error
		if c.ca, err = transport.LoadTLS("", "", filepath.Join(tlsDir, "ca.pem")); err != nil {
			return nil, err
		}
		if adminTLS, err = transport.LoadTLS(filepath.Join(tlsDir, "admin.pem"), filepath.Join(tlsDir, "admin-key.pem"), filepath.Join(tlsDir, "ca.pem")); err != nil {
			return nil, err
		}
	}
	for i := range specs {
		id := fmt.Sprintf("m%d", i+1)
		addr, err := freeport.Addr("127.0.0.1")
		if err != nil {
			return nil, err
		}
		hp, err := freeport.Addr("127.0.0.1")
		if err != nil {
			return nil, err
		}
		flags := []string{"--log-level", "warn"}
		if secure {
			flags = append(flags, "--cert-file", filepath.Join(tlsDir, id+".pem"), "--key-file", filepath.Join(tlsDir, id+"-key.pem"), "--trusted-ca-file", filepath.Join(tlsDir, "ca.pem"))
		}
		specs[i] = proccluster.Spec{
			ID: id, DataDir: filepath.Join(dir, id), Listen: addr, HTTP: hp,
			Flags:   append(flags, extra...),
			LogPath: filepath.Join(dir, id+".log"),
		}
		c.addrs = append(c.addrs, addr)
		initial = append(initial, proccluster.Voter{ID: id, Addr: addr})
	}
	for i := range specs {
		specs[i].InitialCluster = initial
	}
	cl, err := client.New(client.Config{Masters: c.addrs, TLS: adminTLS})
	if err != nil {
		return nil, err
	}
	c.client = cl
	c.procs, err = proccluster.New(proccluster.Config{
		Binary:        binary,
		Masters:       specs,
		Status:        func(ctx context.Context, i int) (client.Status, error) { return cl.Status(ctx, c.addrs[i]) },
		StatusTimeout: 500 * time.Millisecond,
	})
	if err != nil {
		cl.Close()
		return nil, err
	}
	if err := startAll(ctx, c, n); err != nil {
		return nil, err
	}
	return c, nil
}

// startAll starts the n masters of c and waits for a leader; on an error
// it closes c.
func startAll(ctx context.Context, c *Cluster, n int) error {
	for i := range n {
		if err := c.Start(i); err != nil {
			c.Close()
			return err
		}
	}
	if _, err := c.WaitLeader(ctx, -1); err != nil {
		c.Close()
		return err
	}
	return nil
}

// CA returns the cluster CA that clients verify the masters with, or nil
// if the masters run without TLS.
func (c *Cluster) CA() *transport.TLS { return c.ca }

// Addrs returns the masters' cluster addresses.
func (c *Cluster) Addrs() []string { return append([]string(nil), c.addrs...) }

// PID returns the process ID of master i, or 0 if it is stopped.
func (c *Cluster) PID(i int) int { return c.procs.PID(i) }

// Start (re)starts master i from its data dir.
func (c *Cluster) Start(i int) error { return c.procs.Start(i) }

// Kill sends SIGKILL to master i and reaps it.
func (c *Cluster) Kill(i int) error { return c.procs.Kill(i) }

// Close kills every master and closes the status client.
func (c *Cluster) Close() {
	c.procs.Close()
	c.client.Close()
}

// WaitLeader polls until a master other than exclude (-1: any) leads and
// every running master answers and is ready, and returns its index.
func (c *Cluster) WaitLeader(ctx context.Context, exclude int) (int, error) {
	return c.procs.WaitLeader(ctx, exclude)
}

// Status returns master i's status.
func (c *Cluster) Status(ctx context.Context, i int) (client.Status, error) {
	return c.procs.Status(ctx, i)
}

// WaitApplied waits until every master has applied what the leader had
// committed when it was called: a setup (a private tracker's members)
// is then in force on whichever master a benchmark's first request
// reaches.
func (c *Cluster) WaitApplied(ctx context.Context) error {
	leader, err := c.WaitLeader(ctx, -1)
	if err != nil {
		return err
	}
	st, err := c.Status(ctx, leader)
	if err != nil {
		return fmt.Errorf("reading the leader's status: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := poll.Wait(wctx, func() bool {
		sts, errs := c.procs.Statuses(wctx)
		for i := range sts {
			if errs[i] != nil || sts[i].AppliedIndex < st.CommitIndex {
				return false
			}
		}
		return true
	}); err != nil {
		return fmt.Errorf("waiting for every master to apply index %d: %w", st.CommitIndex, err)
	}
	return nil
}

// rss returns the resident set size of pid in bytes (Linux).
func rss(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS line")
}
