package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the fileshare binary: run with
// FILESHARE_AS_BINARY=1 it runs main's logic instead of the tests. So the
// process tests exercise exactly this build (with -race when the tests
// have it) without a separate go build.
func TestMain(m *testing.M) {
	if os.Getenv("FILESHARE_AS_BINARY") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func binary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// fileshare runs the binary to completion and returns stdout, stderr and
// the exit code.
func fileshare(t *testing.T, timeout time.Duration, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Env = append(os.Environ(), "FILESHARE_AS_BINARY=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run fileshare %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// proc is a fileshare process started in the background. The test stops
// it by PID in Cleanup.
type proc struct {
	cmd *exec.Cmd
	log string
}

func startProc(t *testing.T, logPath string, args ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append(os.Environ(), "FILESHARE_AS_BINARY=1")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p := &proc{cmd: cmd, log: logPath}
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_, _ = p.cmd.Process.Wait()
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for d := 10 * time.Millisecond; !cond(); d = min(2*d, 200*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", timeout, what)
		}
		time.Sleep(d)
	}
}

type statusRow struct {
	Master string `json:"master"`
	Status *struct {
		ID       string `json:"id"`
		State    string `json:"state"`
		LeaderID string `json:"leader_id"`
		Digest   string `json:"digest"`
		Applied  uint64 `json:"applied_index"`
		Members  []struct {
			ID string `json:"id"`
		} `json:"members"`
	} `json:"status"`
	Error string `json:"error"`
}

func clusterStatus(t *testing.T, masters string) ([]statusRow, int) {
	t.Helper()
	out, stderr, code := fileshare(t, 20*time.Second, "cluster", "status", "-o", "json", "--masters", masters, "--timeout", "2s")
	var rows []statusRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("cluster status -o json printed invalid JSON (%v):\n%s\nstderr: %s", err, out, stderr)
	}
	return rows, code
}

// leaderOf returns the master every reachable master names as leader, or
// "" if they disagree or none is named or a leader is named but unreachable.
func leaderOf(rows []statusRow) string {
	leader := ""
	leaders := 0
	for _, r := range rows {
		if r.Status == nil {
			continue
		}
		if r.Status.State == "Leader" {
			leaders++
			leader = r.Status.ID
		}
	}
	if leaders != 1 {
		return ""
	}
	for _, r := range rows {
		if r.Status != nil && r.Status.LeaderID != leader {
			return ""
		}
	}
	return leader
}

// Three real master processes: SIGKILL the leader, a new leader shows in
// `cluster status -o json`, the killed master restarts from its data dir
// and every digest matches.
func TestProcessClusterSurvivesKillOfLeader(t *testing.T) {
	dir := t.TempDir()
	ids := []string{"m1", "m2", "m3"}
	addrs := map[string]string{}
	var initial, masters []string
	for _, id := range ids {
		addrs[id] = freePort(t)
		initial = append(initial, id+"="+addrs[id])
		masters = append(masters, addrs[id])
	}
	args := func(id string) []string {
		return []string{"master", "--id", id, "--data-dir", filepath.Join(dir, id), "--listen", addrs[id],
			"--http", "127.0.0.1:0", "--initial-cluster", strings.Join(initial, ","), "--log-format", "json"}
	}
	procs := map[string]*proc{}
	for _, id := range ids {
		procs[id] = startProc(t, filepath.Join(dir, id+".log"), args(id)...)
	}
	mlist := strings.Join(masters, ",")

	var leader string
	waitUntil(t, 30*time.Second, "a leader all masters agree on", func() bool {
		rows, _ := clusterStatus(t, mlist)
		leader = leaderOf(rows)
		return leader != "" && len(rows) == 3 && rows[0].Status != nil && rows[1].Status != nil && rows[2].Status != nil
	})

	procs[leader].kill()
	start := time.Now()
	var newLeader string
	waitUntil(t, 30*time.Second, "a new leader after SIGKILL", func() bool {
		rows, _ := clusterStatus(t, mlist)
		newLeader = leaderOf(rows)
		return newLeader != "" && newLeader != leader
	})
	t.Logf("new leader %s seen %v after SIGKILL of %s", newLeader, time.Since(start).Round(time.Millisecond), leader)
	rows, code := clusterStatus(t, mlist)
	if code != 0 {
		t.Fatalf("cluster status exit code %d with two masters up, want 0", code)
	}
	for _, r := range rows {
		if r.Status != nil && len(r.Status.Members) != 3 {
			t.Fatalf("%s lists %d members, want 3", r.Master, len(r.Status.Members))
		}
	}

	procs[leader] = startProc(t, filepath.Join(dir, leader+".log"), args(leader)...)
	waitUntil(t, 30*time.Second, "all three masters answer with one digest", func() bool {
		rows, _ := clusterStatus(t, mlist)
		digests := map[string]bool{}
		for _, r := range rows {
			if r.Status == nil {
				return false
			}
			digests[r.Status.Digest] = true
		}
		return len(digests) == 1 && leaderOf(rows) != ""
	})
	// Graceful stop: SIGTERM, exit code 0.
	for _, id := range ids {
		procs[id].cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, id := range ids {
		err := procs[id].cmd.Wait()
		if err != nil {
			log, _ := os.ReadFile(procs[id].log)
			t.Fatalf("%s exited with %v after SIGTERM; log:\n%s", id, err, log)
		}
	}
}

func TestCLIMistakesGetClearErrorsAndExitCode1(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	free := freePort(t)
	nowhere := freePort(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"master", "--bogus"}, "unknown flag: --bogus"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"no bootstrap or join", []string{"master", "--id", "m1", "--data-dir", dir, "--listen", free}, "--initial-cluster"},
		{"data dir not writable", []string{"master", "--id", "m1", "--data-dir", file + "/x", "--listen", free, "--initial-cluster", "m1=" + free}, "data dir"},
		{"port in use", []string{"master", "--id", "m1", "--data-dir", dir, "--listen", busy.Addr().String(), "--initial-cluster", "m1=" + busy.Addr().String()}, "already in use"},
		{"initial cluster without self", []string{"master", "--id", "m4", "--data-dir", dir, "--listen", free, "--initial-cluster", "m1=" + free}, "does not contain this master's own ID"},
		{"malformed initial cluster", []string{"master", "--id", "m1", "--data-dir", dir, "--listen", free, "--initial-cluster", "m1"}, "not ID=HOST:PORT"},
		{"join where no master listens", []string{"master", "--id", "m1", "--data-dir", t.TempDir(), "--listen", free, "--join", nowhere, "--join-timeout", "1s"}, "check that a master listens"},
		{"status of nothing", []string{"cluster", "status", "--masters", nowhere, "--timeout", "1s"}, "no master answered"},
		{"bad output format", []string{"cluster", "status", "-o", "yaml"}, "use table or json"},
		{"bad log format", []string{"master", "--log-format", "xml", "--id", "m1", "--data-dir", dir, "--listen", free, "--initial-cluster", "m1=" + free}, "--log-format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := fileshare(t, 30*time.Second, tc.args...)
			if code != 1 {
				t.Fatalf("exit code %d, want 1; stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Fatalf("stderr does not mention %q:\n%s", tc.want, stderr)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Fatalf("the binary panicked:\n%s", stderr)
			}
		})
	}
}

func TestClusterStatusTable(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	startProc(t, filepath.Join(dir, "m1.log"), "master", "--id", "m1", "--data-dir", filepath.Join(dir, "m1"), "--listen", addr, "--initial-cluster", "m1="+addr)
	var out string
	waitUntil(t, 20*time.Second, "a one-master cluster with a leader", func() bool {
		var code int
		out, _, code = fileshare(t, 10*time.Second, "cluster", "status", "--masters", addr)
		return code == 0 && strings.Contains(out, "leader ")
	})
	for _, want := range []string{"MASTER", "STATE", "m1", "members (as m1 sees them)", "voter"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status table lacks %q:\n%s", want, out)
		}
	}
}
