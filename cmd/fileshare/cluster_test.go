package main

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"fileshare/internal/freeport"
	"fileshare/internal/proccluster"
)

// jsonKeys returns the sorted keys of one JSON object.
func jsonKeys(t *testing.T, what string, obj map[string]any) []string {
	t.Helper()
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// decodeJSON decodes out into v or fails naming the command.
func decodeJSON(t *testing.T, what, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%s printed invalid JSON (%v):\n%s", what, err, out)
	}
}

// Three TLS master processes: `cluster wait --ready` returns once they
// have a leader and are all ready; every cluster subcommand's JSON uses
// snake_case keys (durations as *_ms); and with one master SIGSTOPped,
// `cluster status` still finishes within its per-master timeout, marking
// that master "no answer within 2s", while `cluster wait --ready` exits 1
// naming it.
func TestClusterWaitStatusAndJSONWithAPausedMaster(t *testing.T) {
	dir := t.TempDir()
	ids := []string{"m1", "m2", "m3"}
	procs, mlist, certs := tlsMasters(t, dir, ids)
	admin := func(args ...string) []string {
		return append(append(args, "--masters", mlist), certs.admin()...)
	}

	// cluster wait --ready: exit 0 once a leader is known and all are ready.
	out, stderr, code := fileshare(t, 90*time.Second, admin("cluster", "wait", "--ready", "--timeout", "60s")...)
	if code != 0 || !strings.Contains(out, "every member is ready") {
		t.Fatalf("cluster wait --ready: exit %d, stdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	rows, code := clusterStatus(t, mlist, certs.ca()...)
	if code != 0 || leaderOf(rows) == "" {
		t.Fatalf("after cluster wait --ready, cluster status exit %d and leader %q, want 0 and one leader: %+v", code, leaderOf(rows), rows)
	}

	// One JSON convention: snake_case keys, durations in milliseconds.
	out, stderr, code = fileshare(t, 30*time.Second, admin("cluster", "wait", "-o", "json")...)
	var waited map[string]any
	decodeJSON(t, "cluster wait -o json", out, &waited)
	if got, want := jsonKeys(t, "wait", waited), []string{"leader_id", "masters", "ok", "waited_ms"}; code != 0 || !slices.Equal(got, want) {
		t.Fatalf("cluster wait -o json: exit %d, keys %v, want %v; stderr:\n%s", code, got, want, stderr)
	}
	out, stderr, code = fileshare(t, 30*time.Second, admin("cluster", "transfer-leader", "-o", "json", "--timeout", "20s")...)
	var transferred map[string]any
	decodeJSON(t, "cluster transfer-leader -o json", out, &transferred)
	if got, want := jsonKeys(t, "transfer-leader", transferred), []string{"leader_addr", "leader_id"}; code != 0 || !slices.Equal(got, want) {
		t.Fatalf("cluster transfer-leader -o json: exit %d, keys %v, want %v; stderr:\n%s", code, got, want, stderr)
	}
	out, stderr, code = fileshare(t, 30*time.Second, admin("cluster", "snapshot", "-o", "json")...)
	var snaps []map[string]any
	decodeJSON(t, "cluster snapshot -o json", out, &snaps)
	if code != 0 || len(snaps) != 3 {
		t.Fatalf("cluster snapshot -o json: exit %d, %d entries, want 0 and 3; stderr:\n%s", code, len(snaps), stderr)
	}
	for _, s := range snaps {
		if got, want := jsonKeys(t, "snapshot", s), []string{"duration_ms", "index", "master"}; !slices.Equal(got, want) {
			t.Fatalf("cluster snapshot -o json entry keys %v, want %v:\n%s", got, want, out)
		}
	}

	// SIGSTOP one master: status waits at most the per-master timeout.
	paused := 1
	if err := procs.Pause(paused); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { procs.Resume(paused) })
	start := time.Now()
	out, stderr, code = fileshare(t, 30*time.Second, "cluster", "status", "-o", "json", "--masters", mlist, "--timeout", "9s", "--trusted-ca-file", filepath.Join(certs.dir, "ca.pem"))
	took := time.Since(start)
	var st []statusRow
	decodeJSON(t, "cluster status -o json", out, &st)
	if code != 0 || len(st) != 3 {
		t.Fatalf("cluster status with one master paused: exit %d, %d rows, want 0 and 3; stderr:\n%s", code, len(st), stderr)
	}
	if st[paused].Error != "no answer within 2s" || st[paused].Status != nil {
		t.Fatalf("the paused master's row is %+v, want error %q", st[paused], "no answer within 2s")
	}
	// 2 s for the paused master, plus starting the process; before the
	// per-master timeout it took the whole 9 s --timeout.
	if took > 6*time.Second {
		t.Fatalf("cluster status took %v with one master paused, want about 2 s", took)
	}
	out, stderr, code = fileshare(t, 30*time.Second, admin("cluster", "wait", "--ready", "--timeout", "3s")...)
	if code != 1 || !strings.Contains(stderr, strings.Split(mlist, ",")[paused]+" does not answer") {
		t.Fatalf("cluster wait --ready with %s paused: exit %d, want 1 naming it; stdout:\n%s\nstderr:\n%s", strings.Split(mlist, ",")[paused], code, out, stderr)
	}
}

// A wrong address fails at once with a message that says what is wrong:
// nothing listening (refused) is known without waiting for --timeout, and
// a master's HTTP port given as its cluster port is named as such.
func TestClusterCommandsOnWrongPortsFailFastAndSayWhy(t *testing.T) {
	dir := t.TempDir()
	certs := tlsInit(t, dir, "m1")
	addr, httpAddr := freeport.Loopback(t), freeport.Loopback(t)
	masters(t, dir, proccluster.Spec{ID: "m1", DataDir: filepath.Join(dir, "m1"), Listen: addr, HTTP: httpAddr,
		InitialCluster: []proccluster.Voter{{ID: "m1", Addr: addr}}, Flags: certs.master("m1")})
	nowhere := freeport.Loopback(t)
	if _, stderr, code := fileshare(t, 90*time.Second, append([]string{"cluster", "wait", "--masters", addr, "--timeout", "60s"}, certs.ca()...)...); code != 0 {
		t.Fatalf("cluster wait: exit %d; stderr:\n%s", code, stderr)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"nothing listens", []string{"cluster", "transfer-leader", "--masters", nowhere + "," + freeport.Loopback(t)}, "nothing listens at " + nowhere},
		{"HTTP port as cluster port", []string{"cluster", "transfer-leader", "--masters", httpAddr}, "not their --http ports"},
		{"HTTP port in cluster wait", []string{"cluster", "wait", "--masters", httpAddr}, "answered like HTTP"},
		{"plaintext client, TLS cluster", []string{"cluster", "status", "--masters", addr}, "--trusted-ca-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{}, tc.args...), "--timeout", "20s")
			if tc.name != "plaintext client, TLS cluster" {
				args = append(args, certs.admin()...)
			}
			start := time.Now()
			_, stderr, code := fileshare(t, 30*time.Second, args...)
			took := time.Since(start)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, want 1 with %q in stderr:\n%s", code, tc.want, stderr)
			}
			if took > 5*time.Second {
				t.Fatalf("took %v to fail, want well under the 20 s --timeout", took)
			}
		})
	}
}
