package master_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"fileshare/internal/freeport"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/master/mastertest"
	"fileshare/transport"
)

// logBuffer collects every master's logs so a test can wait for a line.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) contains(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Contains(b.buf.String(), s)
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fastAutopilot makes autopilot act within a test's patience.
func fastAutopilot(cfg *master.Config) {
	cfg.AutopilotInterval = 100 * time.Millisecond
	cfg.DeadMasterTimeout = time.Second
	cfg.ServerStabilizationTime = time.Second
}

// members returns the IDs and suffrage in member i's configuration.
func members(t *testing.T, c *mastertest.T, i int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, mem := range c.Status(i).Members {
		out[mem.ID] = string(mem.Suffrage)
	}
	return out
}

// A dead master is removed only while at least --min-quorum voters stay:
// with 4 masters and a minimum of 3, the first dead one is removed, the
// second is kept.
func TestDeadMasterCleanupKeepsMinQuorum(t *testing.T) {
	var logs logBuffer
	c := mastertest.New(t, 4, mastertest.Options{OwnIPs: true, Logger: logs.logger(), Config: func(cfg *master.Config) {
		fastAutopilot(cfg)
		cfg.CleanupDeadMasters = true
		cfg.MinQuorum = 3
	}})
	leader := c.Leader()
	first := c.Follower(leader)
	c.Kill(first)
	poll.Until(t, 20*time.Second, c.ID(first)+" removed from the configuration", func() bool {
		_, in := members(t, c, leader)[c.ID(first)]
		return !in
	})
	if got := len(members(t, c, leader)); got != 3 {
		t.Fatalf("after removing one dead master the configuration has %d members, want 3", got)
	}

	second := -1
	for i := range c.Len() {
		if i != leader && i != first {
			second = i
			break
		}
	}
	c.Kill(second)
	poll.Until(t, 20*time.Second, "autopilot refuses to remove a master below the minimum quorum", func() bool {
		return logs.contains("will not remove server node as it would leave less voters than the minimum number allowed")
	})
	if _, in := members(t, c, leader)[c.ID(second)]; !in {
		t.Fatalf("%s was removed, leaving fewer voters than --min-quorum 3: %v", c.ID(second), members(t, c, leader))
	}
	// The two left still commit writes: quorum 2 of 3.
	cl := c.Client(c.Addr(leader))
	if _, err := cl.Join(t.Context(), identity("frank"), "127.0.0.1:9010"); err != nil {
		t.Fatalf("write with two of three voters: %v", err)
	}
}

// Without --cleanup-dead-masters nothing is removed, however long a master
// is dead.
func TestDeadMasterKeptWithoutCleanup(t *testing.T) {
	c := newCluster(t, 3, fastAutopilot)
	leader := c.Leader()
	dead := c.Follower(leader)
	c.Kill(dead)
	// autopilot logs each reconcile round's failed-server pass only when
	// cleanup is on; wait instead until the leader has judged the master
	// unhealthy (its health check has run after the timeout).
	poll.Until(t, 20*time.Second, "the leader counts the killed master as dead", func() bool {
		return master.DeadMasters(c.Master(leader))[c.ID(dead)]
	})
	// Ten autopilot rounds later it is still a member.
	judged := time.Now()
	poll.Until(t, 10*time.Second, "ten autopilot rounds pass", func() bool {
		if _, in := members(t, c, leader)[c.ID(dead)]; !in {
			t.Fatalf("%s was removed although --cleanup-dead-masters is off", c.ID(dead))
		}
		return time.Since(judged) > 10*100*time.Millisecond
	})
}

// A master that joins starts as a non-voter and becomes a voter only after
// it has been healthy for the stabilization time.
func TestJoinerPromotedAfterStabilization(t *testing.T) {
	var logs logBuffer
	c := mastertest.New(t, 3, mastertest.Options{OwnIPs: true, Logger: logs.logger(), Config: fastAutopilot})
	leader := c.Leader()
	// autopilot waives the stabilization time while it has itself run for
	// less than that (it could not have watched anyone longer); let it
	// pass so the test sees the real rule.
	start := time.Now()
	poll.Until(t, 5*time.Second, "autopilot has run longer than the stabilization time", func() bool {
		return time.Since(start) > 1500*time.Millisecond
	})
	cfg := master.Config{ID: "m4", DataDir: t.TempDir(), Listen: freeport.On(t, "127.0.0.14"), Join: []string{c.Addr(leader)}, Logger: logs.logger()}
	fastAutopilot(&cfg)
	joined := time.Now()
	m4, err := master.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	defer m4.CloseNow()
	if !logs.contains("added member as non-voter") {
		t.Fatal("the leader did not add m4 as a non-voter")
	}
	poll.Until(t, 20*time.Second, "m4 promoted to voter", func() bool { return members(t, c, leader)["m4"] == "Voter" })
	if waited := time.Since(joined); waited < time.Second {
		t.Fatalf("m4 became a voter %v after joining, before the 1s stabilization time", waited)
	}
}

// A master removed with 'cluster remove' learns it and says so on
// Removed; restarting it from its old data dir with --join is refused
// with ErrRemoved naming the fix.
func TestRemovedMasterStopsAndRefusesOldData(t *testing.T) {
	c := newCluster(t, 3, func(cfg *master.Config) { cfg.AutopilotInterval = 100 * time.Millisecond })
	leader := c.Leader()
	victim := c.Follower(leader)
	m := c.Master(victim)
	cl := c.Client()
	if err := cl.RemoveMember(t.Context(), c.ID(victim)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Removed():
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not notice within 20s that it was removed", c.ID(victim))
	}
	if st := m.Status(t.Context(), false); st.Ready {
		t.Fatalf("a removed master reports ready: %+v", st)
	}
	c.Kill(victim)

	cfg := c.Config(victim)
	cfg.InitialCluster = nil
	cfg.Join = []string{c.Addr(leader)}
	cfg.JoinTimeout = 5 * time.Second
	_, err := master.New(t.Context(), cfg)
	if !errors.Is(err, master.ErrRemoved) || !strings.Contains(err.Error(), "wipe") || !strings.Contains(err.Error(), c.ID(victim)) {
		t.Fatalf("restart of a removed master with its old data: got %v, want ErrRemoved saying to wipe the data dir", err)
	}

	// A leader that removes itself notices too.
	leaderM := c.Master(leader)
	if err := cl.RemoveMember(t.Context(), c.ID(leader)); err != nil && !errors.Is(err, transport.ErrUnknownOutcome) {
		t.Fatalf("remove the leader: %v", err)
	}
	select {
	case <-leaderM.Removed():
	case <-time.After(20 * time.Second):
		t.Fatalf("the removed leader %s did not notice within 20s", c.ID(leader))
	}
}

// readyz fetches member i's /v1/readyz and returns the status code and the
// reason.
func readyz(t *testing.T, c *mastertest.T, i int) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + c.Master(i).HTTPAddr() + "/v1/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Ready  bool   `json:"ready"`
		Reason string `json:"reason"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("readyz body: %v", err)
	}
	if body.Ready != (resp.StatusCode == http.StatusOK) {
		t.Fatalf("readyz says ready=%v with status %d", body.Ready, resp.StatusCode)
	}
	return resp.StatusCode, body.Reason
}

// A follower cut off from the leader stops being ready (its commit index
// froze with its last contact), and is ready again once the link heals.
func TestReadyzFollowerCutOffIsNotReady(t *testing.T) {
	c := newCluster(t, 3, func(cfg *master.Config) {
		host, _, _ := net.SplitHostPort(cfg.Listen)
		cfg.HTTP = net.JoinHostPort(host, "0")
		cfg.ReadyMaxContact = time.Second
	})
	leader := c.Leader()
	f := c.Follower(leader)
	poll.Until(t, 10*time.Second, "every master ready", func() bool {
		for i := range c.Len() {
			if code, _ := readyz(t, c, i); code != http.StatusOK {
				return false
			}
		}
		return true
	})
	c.Master(f).Block(hostOf(t, c.Addr(leader)))
	c.Master(leader).Block(hostOf(t, c.Addr(f)))
	var reason string
	poll.Until(t, 10*time.Second, "the cut-off follower not ready", func() bool {
		var code int
		code, reason = readyz(t, c, f)
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(reason, "leader") {
		t.Fatalf("not-ready reason %q does not mention the leader", reason)
	}
	if code, reason := readyz(t, c, leader); code != http.StatusOK {
		t.Fatalf("the leader, still with a quorum, is not ready: %s", reason)
	}
	c.Heal()
	poll.Until(t, 10*time.Second, "the follower ready again after healing", func() bool {
		code, _ := readyz(t, c, f)
		return code == http.StatusOK
	})
}

func hostOf(t *testing.T, addr string) string {
	t.Helper()
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
