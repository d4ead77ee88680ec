package master_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"fileshare/client"
	"fileshare/internal/poll"
	"fileshare/internal/testenv"
	"fileshare/master"
	"fileshare/master/mastertest"
	"fileshare/transport"
)

// withHTTP gives every master an HTTP port (and the metrics level).
func withHTTP(level string) func(*master.Config) {
	return func(c *master.Config) {
		c.HTTP = "127.0.0.1:0"
		c.Metrics = level
	}
}

func scrape(t *testing.T, httpAddr string) []byte {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s: %s", resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q, want the text format", ct)
	}
	return b
}

func parseMetrics(t *testing.T, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("/metrics does not parse as the Prometheus text format: %v\n%s", err, b)
	}
	return fams
}

// value returns the value of the family's only (or first matching) sample.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("/metrics has no %s", name)
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("/metrics has no %s sample with labels %v", name, labels)
	return 0
}

// The leader's /metrics is valid Prometheus text and reports what the
// cluster really did: who leads, how far the log got, the index's size,
// the RPCs answered and the group-commit batches formed.
func TestMetricsReportTheCluster(t *testing.T) {
	c := newCluster(t, 3, withHTTP(""))
	li := c.Leader()
	leader := c.Master(li)
	cl := c.Client()
	alice := identity("alice")
	if _, err := cl.Join(t.Context(), alice, "127.0.0.1:9001"); err != nil {
		t.Fatal(err)
	}
	acked := registerMany(t, cl, alice, "m", 40)
	c.Converge()

	fams := parseMetrics(t, scrape(t, leader.HTTPAddr()))
	for _, name := range []string{
		"fileshare_server_has_leader", "fileshare_server_is_leader", "fileshare_server_leader_changes_seen_total",
		"fileshare_raft_term", "fileshare_raft_commit_index", "fileshare_raft_applied_index", "fileshare_raft_last_log_index",
		"fileshare_raft_member_last_contact_seconds", "fileshare_raft_apply_duration_seconds",
		"fileshare_groupcommit_batch_commands", "fileshare_groupcommit_batch_bytes",
		"fileshare_index_files", "fileshare_index_holdings", "fileshare_index_peers",
		"fileshare_rpc_requests_total", "fileshare_rpc_request_duration_seconds", "fileshare_build_info",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if _, ok := fams[name]; !ok {
			t.Errorf("/metrics has no %s", name)
		}
	}
	if got := value(t, fams, "fileshare_server_is_leader"); got != 1 {
		t.Errorf("leader: fileshare_server_is_leader = %v, want 1", got)
	}
	if got := value(t, fams, "fileshare_server_has_leader"); got != 1 {
		t.Errorf("leader: fileshare_server_has_leader = %v, want 1", got)
	}
	if got := value(t, fams, "fileshare_server_leader_changes_seen_total"); got < 1 {
		t.Errorf("fileshare_server_leader_changes_seen_total = %v, want at least the first election", got)
	}
	if got, want := value(t, fams, "fileshare_index_files"), float64(len(acked)); got != want {
		t.Errorf("fileshare_index_files = %v, want %v (the acknowledged registrations)", got, want)
	}
	if got := value(t, fams, "fileshare_index_peers"); got != 1 {
		t.Errorf("fileshare_index_peers = %v, want 1", got)
	}
	commit, applied := value(t, fams, "fileshare_raft_commit_index"), value(t, fams, "fileshare_raft_applied_index")
	if commit < 2 || applied < 2 || applied > commit {
		t.Errorf("commit index %v, applied index %v: want both past the writes, applied ≤ commit", commit, applied)
	}
	// Every write went through group commit on the leader.
	if got := value(t, fams, "fileshare_groupcommit_batch_commands"); got < 1 {
		t.Errorf("fileshare_groupcommit_batch_commands has %v observations, want some", got)
	}
	if got := value(t, fams, "fileshare_raft_apply_duration_seconds"); got < 1 {
		t.Errorf("fileshare_raft_apply_duration_seconds has %v observations, want some", got)
	}
	// The writes arrived at some master; each of the 40 was answered by
	// the leader (directly, or forwarded by a follower).
	if got := value(t, fams, "fileshare_rpc_requests_total", "method", client.MethodRegister, "code", "ok"); got < float64(len(acked)) {
		t.Errorf("fileshare_rpc_requests_total{method=Swarm.Register,code=ok} = %v, want ≥ %d", got, len(acked))
	}
	// The leader knows how recently each follower heard from it.
	lc := fams["fileshare_raft_member_last_contact_seconds"]
	if lc == nil || len(lc.Metric) != 2 {
		t.Fatalf("leader reports last contact for %v members, want the 2 followers", lc)
	}
	for _, m := range lc.Metric {
		if v := m.Gauge.GetValue(); v < 0 || v > 5 {
			t.Errorf("last contact of %v = %v s, want a recent contact", m.Label, v)
		}
	}

	// A follower knows the leader but does not lead, and reports no
	// per-member contact (only the leader has that view).
	ff := parseMetrics(t, scrape(t, c.Master(c.Follower(li)).HTTPAddr()))
	if got := value(t, ff, "fileshare_server_is_leader"); got != 0 {
		t.Errorf("follower: fileshare_server_is_leader = %v, want 0", got)
	}
	if _, ok := ff["fileshare_raft_member_last_contact_seconds"]; ok {
		t.Errorf("follower reports fileshare_raft_member_last_contact_seconds; only the leader should")
	}
}

// A stranger's RPC naming made-up methods adds one label value, not one
// per name: /metrics cannot be blown up from the network.
func TestMetricsUnknownMethodsShareOneLabel(t *testing.T) {
	c := newCluster(t, 1, withHTTP(""))
	c.Leader()
	m := c.Master(0)
	tc := transport.NewClient(transport.ClientConfig{})
	defer tc.Close()
	for i := range 20 {
		var out struct{}
		if err := tc.Call(t.Context(), m.Addr(), fmt.Sprintf("Made.Up%d", i), &struct{}{}, &out); !errors.Is(err, transport.ErrUnknownMethod) {
			t.Fatalf("made-up method: got %v, want ErrUnknownMethod", err)
		}
	}
	fams := parseMetrics(t, scrape(t, m.HTTPAddr()))
	if got := value(t, fams, "fileshare_rpc_requests_total", "method", "unknown", "code", "unknown_method"); got != 20 {
		t.Errorf("unknown-method calls counted %v, want 20", got)
	}
	for _, mm := range fams["fileshare_rpc_requests_total"].Metric {
		for _, lp := range mm.Label {
			if strings.HasPrefix(lp.GetValue(), "Made.Up") {
				t.Fatalf("a made-up method became a label value: %v", mm.Label)
			}
		}
	}
}

// promtool, Prometheus's own checker, accepts the basic /metrics (names,
// types, help, units, suffixes).
func TestMetricsPassPromtool(t *testing.T) {
	promtool := testenv.NeedTool(t, "promtool", "prometheus")
	c := newCluster(t, 1, func(cfg *master.Config) {
		withHTTP(master.MetricsBasic)(cfg)
		cfg.Tracker.HTTP, cfg.Tracker.UDP = "127.0.0.1:0", "127.0.0.1:0" // their series too
	})
	c.Leader()
	b := scrape(t, c.Master(0).HTTPAddr())
	if !bytes.Contains(b, []byte("fileshare_tracker_announces_total{")) {
		t.Fatalf("no tracker series to check:\n%s", b)
	}
	cmd := exec.CommandContext(t.Context(), promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// With MetricsExtensive, raft's own go-metrics (emitted through the
// process-wide armon global) reach this master's /metrics; a basic master
// in the same process, where the sink is installed, shows none of them.
func TestMetricsExtensiveBridgesRaft(t *testing.T) {
	ext := mastertest.New(t, 1, mastertest.Options{Config: withHTTP(master.MetricsExtensive)})
	basic := mastertest.New(t, 1, mastertest.Options{Config: withHTTP(master.MetricsBasic)})
	ext.Leader()
	basic.Leader()
	alice := identity("alice")
	for _, c := range []*mastertest.T{ext, basic} {
		if _, err := c.Client().Join(t.Context(), alice, "127.0.0.1:9001"); err != nil {
			t.Fatal(err)
		}
	}
	const raftSeries = "fileshare_raft_commitTime"
	var fams map[string]*dto.MetricFamily
	poll.Until(t, 10*time.Second, raftSeries+" on the extensive master", func() bool {
		fams = parseMetrics(t, scrape(t, ext.Master(0).HTTPAddr()))
		_, ok := fams[raftSeries]
		return ok
	})
	if _, ok := fams["fileshare_raft_term"]; !ok {
		t.Errorf("extensive /metrics lost the basic series")
	}
	bf := parseMetrics(t, scrape(t, basic.Master(0).HTTPAddr()))
	for name := range bf {
		if name == raftSeries || strings.HasPrefix(name, "fileshare_raft_fsm") || strings.HasPrefix(name, "fileshare_boltdb") {
			t.Errorf("basic /metrics has raft's own series %s", name)
		}
	}
}

// A Config with an unknown metrics level is rejected with the choices.
func TestMetricsLevelValidated(t *testing.T) {
	_, err := master.New(t.Context(), master.Config{ID: "m1", DataDir: t.TempDir(), Listen: "127.0.0.1:0", Metrics: "verbose"})
	if err == nil || !strings.Contains(err.Error(), "basic or extensive") {
		t.Fatalf("got %v, want an error naming basic and extensive", err)
	}
}

// The tracker front-ends' counters and the replicated swarms reach
// /metrics: one HTTP announce is one ok announce, one swarm, one peer.
func TestMetricsCountTrackerAnnounces(t *testing.T) {
	c := newCluster(t, 1, func(cfg *master.Config) {
		withHTTP("")(cfg)
		cfg.Tracker.HTTP = "127.0.0.1:0"
	})
	c.Leader()
	m := c.Master(0)
	q := url.Values{}
	q.Set("info_hash", strings.Repeat("\x01", 20))
	q.Set("peer_id", "-FS0001-abcdefghijkl")
	q.Set("port", "6881")
	q.Set("uploaded", "0")
	q.Set("downloaded", "0")
	q.Set("left", "0")
	q.Set("compact", "1")
	resp, err := http.Get("http://" + m.TrackerHTTPAddr() + "/announce?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || bytes.Contains(body, []byte("failure reason")) {
		t.Fatalf("announce: %s %q", resp.Status, body)
	}
	fams := parseMetrics(t, scrape(t, m.HTTPAddr()))
	if got := value(t, fams, "fileshare_tracker_announces_total", "proto", "http", "result", "ok"); got != 1 {
		t.Errorf("announces{http,ok} = %v, want 1", got)
	}
	if got := value(t, fams, "fileshare_tracker_swarms"); got != 1 {
		t.Errorf("fileshare_tracker_swarms = %v, want 1", got)
	}
	if got := value(t, fams, "fileshare_tracker_peers"); got != 1 {
		t.Errorf("fileshare_tracker_peers = %v, want 1", got)
	}
	for _, mm := range fams["fileshare_tracker_announces_total"].Metric {
		for _, lp := range mm.Label {
			if lp.GetName() == "proto" && lp.GetValue() == "udp" {
				t.Errorf("UDP tracker is off but has series %v", mm.Label)
			}
		}
	}
}
