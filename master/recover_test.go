package master_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/freeport"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/master/mastertest"
)

// startMaster starts a master with cfg for t and stops it at cleanup.
func startMaster(t *testing.T, cfg master.Config) *master.Master {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	m, err := master.New(ctx, cfg)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.ID, err)
	}
	t.Cleanup(func() { m.CloseNow() })
	return m
}

// plainClient returns a client of the given plaintext masters, closed at
// t's cleanup.
func plainClient(t *testing.T, addrs ...string) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Masters: addrs, AttemptTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// Lost quorum: of 3 masters, 2 are destroyed with their data. The
// survivor, given a recovery file naming only itself, becomes a
// one-master cluster; two new masters join it; every acknowledged
// registration is there on all of them.
func TestRecoverLostQuorumKeepsEveryAcknowledgedRegistration(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.Leader()
	cl := c.Client()
	carol := identity("recover-carol")
	if _, err := cl.Join(t.Context(), carol, "127.0.0.1:9201"); err != nil {
		t.Fatal(err)
	}
	acked := registerMany(t, cl, carol, "rq", 200)
	if len(acked) != 200 {
		t.Fatalf("%d registrations acknowledged, want 200", len(acked))
	}
	// Make the survivor hold every acknowledged entry, as a majority does.
	c.Converge()

	const survivor = 0
	for i := 1; i < 3; i++ {
		c.Kill(i)
		if err := os.RemoveAll(c.Config(i).DataDir); err != nil {
			t.Fatal(err)
		}
	}
	// Without the recovery file the survivor cannot lead alone.
	c.Kill(survivor)
	cfg := c.Config(survivor)
	if err := master.WriteRecoveryFile(cfg.DataDir, []master.Member{{ID: cfg.ID, Addr: cfg.Listen}}); err != nil {
		t.Fatal(err)
	}
	cfg.ServerStabilizationTime = 500 * time.Millisecond // promote the joiners quickly
	m1 := startMaster(t, cfg)
	if _, err := os.Stat(filepath.Join(cfg.DataDir, master.RecoveryFile+".applied")); err != nil {
		t.Fatalf("the applied recovery file was not kept aside: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, master.RecoveryFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the recovery file is still in place after recovery (err %v): a restart would recover again", err)
	}
	poll.Until(t, 15*time.Second, "the survivor to lead alone", func() bool { return m1.IsLeader() })

	solo := plainClient(t, cfg.Listen)
	requirePresent(t, solo, acked)
	acked = append(acked, registerMany(t, solo, carol, "after-recovery", 20)...)

	// New masters join the recovered one.
	var joined []*master.Master
	for _, id := range []string{"m4", "m5"} {
		joined = append(joined, startMaster(t, master.Config{
			ID: id, DataDir: filepath.Join(t.TempDir(), id), Listen: freeport.On(t, "127.0.0.1"),
			Join: []string{cfg.Listen}, ServerStabilizationTime: cfg.ServerStabilizationTime, Logger: mastertest.TestLogger(t).With("master", id),
		}))
	}
	addrs := []string{cfg.Listen, joined[0].Addr(), joined[1].Addr()}
	all := plainClient(t, addrs...)
	requirePresent(t, all, acked)
	poll.Until(t, 30*time.Second, "every master to hold every acknowledged registration, with all three voters", func() bool {
		for _, a := range addrs {
			st, err := all.Status(t.Context(), a)
			if err != nil || st.Files != len(acked) || len(st.Members) != 3 {
				return false
			}
			for _, mem := range st.Members {
				if mem.Suffrage != "Voter" {
					return false
				}
			}
		}
		return true
	})
	// The new majority (m4, m5) serves every registration without m1.
	m1.CloseNow()
	rest := plainClient(t, addrs[1:]...)
	requirePresent(t, rest, acked)
}

// The fork check: with a working cluster, a master given a recovery file
// refuses to start, changes nothing, and starts normally once the file is
// removed.
func TestRecoverRefusesWhileTheClusterHasALeader(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.Leader()
	cl := c.Client()
	dave := identity("recover-dave")
	if _, err := cl.Join(t.Context(), dave, "127.0.0.1:9202"); err != nil {
		t.Fatal(err)
	}
	acked := registerMany(t, cl, dave, "fork", 20)
	c.Converge()

	const victim = 2
	c.Kill(victim)
	cfg := c.Config(victim)
	if err := master.WriteRecoveryFile(cfg.DataDir, []master.Member{{ID: cfg.ID, Addr: cfg.Listen}}); err != nil {
		t.Fatal(err)
	}
	m, err := master.New(t.Context(), cfg)
	if !errors.Is(err, master.ErrRecoverHealthy) {
		if m != nil {
			m.CloseNow()
		}
		t.Fatalf("recovery beside a working cluster: got %v, want ErrRecoverHealthy", err)
	}
	if !strings.Contains(err.Error(), "reports leader") || !strings.Contains(err.Error(), "remove") {
		t.Fatalf("refusal %q should name the member that reports a leader and say what to do", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, master.RecoveryFile)); err != nil {
		t.Fatalf("a refused recovery should leave its file in place: %v", err)
	}

	// The refused master rejoins its cluster once the file is gone.
	if err := os.Remove(filepath.Join(cfg.DataDir, master.RecoveryFile)); err != nil {
		t.Fatal(err)
	}
	c.Restart(victim)
	c.Converge()
	if st := c.Status(victim); len(st.Members) != 3 || st.Files != len(acked) {
		t.Fatalf("after the refusal the master has %d members and %d files, want 3 and %d", len(st.Members), st.Files, len(acked))
	}
	requirePresent(t, cl, acked)
}

// A recovery file that does not list this master, or is not valid JSON,
// is refused with an error naming the file.
func TestRecoverRejectsBadFiles(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.Leader()
	c.Kill(0)
	cfg := c.Config(0)
	path := filepath.Join(cfg.DataDir, master.RecoveryFile)
	for name, body := range map[string]string{
		"not json":      "{",
		"not this one":  `[{"id": "m9", "address": "127.0.0.1:1"}]`,
		"unknown field": `[{"id": "m1", "addr": "x"}]`,
		"empty":         `[]`,
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			m, err := master.New(t.Context(), cfg)
			if !errors.Is(err, master.ErrBadRecoveryFile) || !strings.Contains(err.Error(), path) {
				if m != nil {
					m.CloseNow()
				}
				t.Fatalf("got %v, want ErrBadRecoveryFile naming %s", err, path)
			}
		})
	}
	if err := master.WriteRecoveryFile(t.TempDir(), []master.Member{{ID: "m1", Addr: "127.0.0.1:7001"}}); !errors.Is(err, master.ErrBadRecoveryFile) {
		t.Fatalf("writing a recovery file into a dir with no raft state: got %v, want ErrBadRecoveryFile", err)
	}
}

// During a partition the old majority is alive behind it: a master cut
// off from it that is given a recovery file naming only itself must not
// recover (that would leave two clusters for good). It refuses, changing
// nothing; the majority keeps its leader. Only the loudly named override
// makes it go ahead.
func TestRecoverRefusesDuringAPartition(t *testing.T) {
	c := newCluster(t, 3, nil)
	li := c.Leader()
	victim := (li + 1) % 3
	c.Converge()
	c.Isolate(victim)
	c.Kill(victim)
	cfg := c.Config(victim)
	if err := master.WriteRecoveryFile(cfg.DataDir, []master.Member{{ID: cfg.ID, Addr: cfg.Listen}}); err != nil {
		t.Fatal(err)
	}
	m, err := master.New(t.Context(), cfg)
	if !errors.Is(err, master.ErrRecoverUnverified) {
		if m != nil {
			m.CloseNow()
		}
		t.Fatalf("recovery cut off from a live majority: got %v, want ErrRecoverUnverified", err)
	}
	if !strings.Contains(err.Error(), "RecoveryOptions.ForceSplitBrainRisk") || !strings.Contains(err.Error(), "partition") {
		t.Errorf("refusal %q should say why and name the override", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, master.RecoveryFile)); err != nil {
		t.Fatalf("a refused recovery should leave its file in place: %v", err)
	}
	c.Leader() // the majority still has one

	// The override is the operator's word that the others are gone.
	if err := master.WriteRecoveryFile(cfg.DataDir, []master.Member{{ID: cfg.ID, Addr: cfg.Listen}}, master.RecoveryOptions{ForceSplitBrainRisk: true}); err != nil {
		t.Fatal(err)
	}
	forced := startMaster(t, cfg)
	poll.Until(t, 15*time.Second, "the forced survivor to lead alone", func() bool { return forced.IsLeader() })
	if _, err := os.Stat(filepath.Join(cfg.DataDir, master.RecoveryOverrideFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the override file outlived the recovery it allowed (err %v)", err)
	}
}

// An old member that the recovery file does not list and that still runs
// (here without a leader: the other survivor of a lost quorum) makes the
// recovery refuse: it must be stopped or listed first.
func TestRecoverRefusesWhileAnUnlistedMemberRuns(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.Leader()
	c.Converge()
	c.Kill(0)
	c.Kill(2)
	poll.Until(t, 15*time.Second, "the last running master to lose its leader", func() bool {
		st, err := c.Cluster.Status(t.Context(), 1)
		return err == nil && st.LeaderID == ""
	})
	cfg := c.Config(0)
	if err := master.WriteRecoveryFile(cfg.DataDir, []master.Member{{ID: cfg.ID, Addr: cfg.Listen}}, master.RecoveryOptions{ForceSplitBrainRisk: true}); err != nil {
		t.Fatal(err)
	}
	m, err := master.New(t.Context(), cfg)
	if !errors.Is(err, master.ErrRecoverMembersAlive) {
		if m != nil {
			m.CloseNow()
		}
		t.Fatalf("recovery while an unlisted old member runs: got %v, want ErrRecoverMembersAlive (even with the override)", err)
	}
	if !strings.Contains(err.Error(), c.ID(1)) {
		t.Errorf("refusal %q should name %s", err, c.ID(1))
	}
}
