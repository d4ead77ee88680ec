// Package bench holds the measurements behind `fileshare bench …`: load
// generators and a cluster of real master processes to run them against.
// Every benchmark ends with one summary line; numbers are medians or
// percentiles measured in one run, because these machines are shared and
// noisy.
package bench

import (
	"context"
	"errors"
	"fileshare/client"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Cluster is a set of real `fileshare master` processes on loopback,
// started from Binary with data in Dir. Stop it with Close.
type Cluster struct {
	Binary string
	Dir    string
	Env    []string // extra environment for the processes
	Extra  []string // extra master flags

	ids    []string
	addrs  []string
	https  []string
	procs  []*exec.Cmd
	client *client.Client // for status polling, shared by every poll
}

// StartCluster starts n masters and waits until they have a leader.
func StartCluster(ctx context.Context, binary, dir string, n int, extra ...string) (*Cluster, error) {
	c := &Cluster{Binary: binary, Dir: dir, Extra: extra}
	var initial []string
	for i := range n {
		id := fmt.Sprintf("m%d", i+1)
		addr, err := freePort()
		if err != nil {
			return nil, err
		}
		hp, err := freePort()
		if err != nil {
			return nil, err
		}
		c.ids = append(c.ids, id)
		c.addrs = append(c.addrs, addr)
		c.https = append(c.https, hp)
		initial = append(initial, id+"="+addr)
	}
	c.Extra = append(c.Extra, "--initial-cluster", strings.Join(initial, ","))
	cl, err := client.New(client.Config{Masters: c.addrs})
	if err != nil {
		return nil, err
	}
	c.client = cl
	c.procs = make([]*exec.Cmd, n)
	for i := range n {
		if err := c.Start(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	if _, err := c.WaitLeader(ctx, -1); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Addrs returns the masters' cluster addresses.
func (c *Cluster) Addrs() []string { return append([]string(nil), c.addrs...) }

// PID returns the process ID of master i, or 0 if it is stopped.
func (c *Cluster) PID(i int) int {
	if c.procs[i] == nil {
		return 0
	}
	return c.procs[i].Process.Pid
}

// Start (re)starts master i from its data dir.
func (c *Cluster) Start(i int) error {
	args := append([]string{"master", "--id", c.ids[i], "--data-dir", filepath.Join(c.Dir, c.ids[i]),
		"--listen", c.addrs[i], "--http", c.https[i], "--log-level", "warn"}, c.Extra...)
	logf, err := os.OpenFile(filepath.Join(c.Dir, c.ids[i]+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(c.Binary, args...)
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start master %s: %w", c.ids[i], err)
	}
	c.procs[i] = cmd
	return nil
}

// Kill sends SIGKILL to master i and reaps it.
func (c *Cluster) Kill(i int) {
	if p := c.procs[i]; p != nil {
		_ = p.Process.Signal(syscall.SIGKILL)
		_ = p.Wait()
		c.procs[i] = nil
	}
}

// Close kills every master and closes the status client.
func (c *Cluster) Close() {
	for i := range c.procs {
		c.Kill(i)
	}
	c.client.Close()
}

// WaitLeader polls until a master other than exclude (-1: any) leads and
// every running master names it, and returns its index.
func (c *Cluster) WaitLeader(ctx context.Context, exclude int) (int, error) {
	for {
		leader := -1
		agree := true
		for i, addr := range c.addrs {
			if c.procs[i] == nil {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			st, err := c.client.Status(sctx, addr)
			cancel()
			if err != nil || !st.Ready {
				agree = false
				break
			}
			if st.State == "Leader" {
				leader = i
			}
		}
		if agree && leader >= 0 && leader != exclude {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("no leader elected: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// LeaderIndex asks the masters who leads right now (-1 if none answers).
func (c *Cluster) LeaderIndex(ctx context.Context) int {
	sts, errs := c.client.ClusterStatus(ctx)
	for i, st := range sts {
		if errs[i] == nil && st.State == "Leader" {
			return i
		}
	}
	return -1
}

// Status returns master i's status.
func (c *Cluster) Status(ctx context.Context, i int) (client.Status, error) {
	return c.client.Status(ctx, c.addrs[i])
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
