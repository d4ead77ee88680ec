package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/freeport"
	"fileshare/internal/poll"
	"fileshare/internal/proccluster"
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

// proc is a fileshare process other than a master (a peer daemon, a
// get, the demo) started in the background. The test stops it by PID in
// Cleanup. Masters run under masters instead.
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

// terminate sends SIGTERM and fails t unless the process then exits 0;
// what names it in the failure.
func (p *proc) terminate(t *testing.T, what string) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		log, _ := os.ReadFile(p.log)
		t.Fatalf("%s exited with %v after SIGTERM:\n%s", what, err, log)
	}
}

func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_, _ = p.cmd.Process.Wait()
	}
}

// masters starts one master process of this binary per spec (their
// environment and log paths filled in, logs in dir) and SIGKILLs any
// still running when the test ends.
func masters(t *testing.T, dir string, specs ...proccluster.Spec) *proccluster.Cluster {
	t.Helper()
	for i := range specs {
		specs[i].Env = append(os.Environ(), "FILESHARE_AS_BINARY=1")
		specs[i].LogPath = filepath.Join(dir, specs[i].ID+".log")
	}
	c, err := proccluster.New(proccluster.Config{Binary: binary(t), Masters: specs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	for i := range specs {
		if err := c.Start(i); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// pki writes a cluster CA and certificates for the given masters into
// dir/tls with `fileshare tls init`, as the README says, and returns it.
type pki struct{ dir string }

func tlsInit(t *testing.T, dir string, ids ...string) pki {
	t.Helper()
	p := pki{dir: filepath.Join(dir, "tls")}
	if out, stderr, code := fileshare(t, 20*time.Second, "tls", "init", "--dir", p.dir, "--masters", strings.Join(ids, ","), "--hosts", "127.0.0.1"); code != 0 {
		t.Fatalf("tls init exited %d:\n%s\n%s", code, out, stderr)
	}
	return p
}

// master returns the TLS flags of master id.
func (p pki) master(id string) []string {
	return []string{"--cert-file", filepath.Join(p.dir, id+".pem"), "--key-file", filepath.Join(p.dir, id+"-key.pem"), "--trusted-ca-file", filepath.Join(p.dir, "ca.pem")}
}

// admin returns the TLS flags of the admin.
func (p pki) admin() []string { return p.master("admin") }

// ca returns the flag that lets a client verify the masters.
func (p pki) ca() []string { return []string{"--trusted-ca-file", filepath.Join(p.dir, "ca.pem")} }

// tlsMasters starts one master process per ID with TLS (certificates from
// tlsInit in dir), each given flags as well, bootstrapping one cluster, and
// returns them with their --masters value and the certificates.
func tlsMasters(t *testing.T, dir string, ids []string, flags ...string) (*proccluster.Cluster, string, pki) {
	t.Helper()
	return tlsMastersWith(t, dir, ids, func(int, string) []string { return slices.Clone(flags) })
}

// tlsMastersWith is tlsMasters with flags of each master's own: flagsOf
// returns master i's extra flags.
func tlsMastersWith(t *testing.T, dir string, ids []string, flagsOf func(i int, id string) []string) (*proccluster.Cluster, string, pki) {
	t.Helper()
	certs := tlsInit(t, dir, ids...)
	var initial []proccluster.Voter
	var addrs []string
	for _, id := range ids {
		a := freeport.Loopback(t)
		initial = append(initial, proccluster.Voter{ID: id, Addr: a})
		addrs = append(addrs, a)
	}
	var specs []proccluster.Spec
	for i, id := range ids {
		specs = append(specs, proccluster.Spec{ID: id, DataDir: filepath.Join(dir, id), Listen: addrs[i],
			HTTP: "127.0.0.1:0", InitialCluster: initial, Flags: append(flagsOf(i, id), certs.master(id)...)})
	}
	return masters(t, dir, specs...), strings.Join(addrs, ","), certs
}

type statusRow struct {
	Master string `json:"master"`
	Status *struct {
		ID       string           `json:"id"`
		State    client.RaftState `json:"state"`
		LeaderID string           `json:"leader_id"`
		Digest   string           `json:"digest"`
		Applied  uint64           `json:"applied_index"`
		Members  []struct {
			ID string `json:"id"`
		} `json:"members"`
	} `json:"status"`
	Error string `json:"error"`
}

func clusterStatus(t *testing.T, masters string, tlsArgs ...string) ([]statusRow, int) {
	t.Helper()
	out, stderr, code := fileshare(t, 20*time.Second, append([]string{"cluster", "status", "-o", "json", "--masters", masters, "--timeout", "2s"}, tlsArgs...)...)
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
		if r.Status.State == client.StateLeader {
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

// Three real master processes with TLS: SIGKILL the leader, a new leader
// shows in `cluster status -o json`, the killed master restarts from its
// data dir and every digest matches. Without the admin certificate,
// `cluster remove` is refused and the membership is unchanged.
func TestProcessClusterSurvivesKillOfLeader(t *testing.T) {
	dir := t.TempDir()
	ids := []string{"m1", "m2", "m3"}
	procs, mlist, certs := tlsMasters(t, dir, ids, "--log-format", "json")
	index := func(id string) int { return slices.Index(ids, id) }

	var leader string
	poll.Until(t, 30*time.Second, "a leader all masters agree on", func() bool {
		rows, _ := clusterStatus(t, mlist, certs.ca()...)
		leader = leaderOf(rows)
		return leader != "" && len(rows) == 3 && rows[0].Status != nil && rows[1].Status != nil && rows[2].Status != nil
	})
	follower := ids[(index(leader)+1)%3]
	_, stderr, code := fileshare(t, 20*time.Second, append([]string{"cluster", "remove", follower, "--masters", mlist, "--timeout", "3s"}, certs.ca()...)...)
	if code != 1 || !strings.Contains(stderr, "admin") {
		t.Fatalf("cluster remove without the admin certificate: exit %d, stderr:\n%s", code, stderr)
	}

	if err := procs.Kill(index(leader)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var newLeader string
	poll.Until(t, 30*time.Second, "a new leader after SIGKILL", func() bool {
		rows, _ := clusterStatus(t, mlist, certs.ca()...)
		newLeader = leaderOf(rows)
		return newLeader != "" && newLeader != leader
	})
	t.Logf("new leader %s seen %v after SIGKILL of %s", newLeader, time.Since(start).Round(time.Millisecond), leader)
	rows, code := clusterStatus(t, mlist, certs.admin()...)
	if code != 0 {
		t.Fatalf("cluster status exit code %d with two masters up, want 0", code)
	}
	for _, r := range rows {
		if r.Status != nil && len(r.Status.Members) != 3 {
			t.Fatalf("%s lists %d members, want 3", r.Master, len(r.Status.Members))
		}
	}

	if err := procs.Start(index(leader)); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "all three masters answer with one digest", func() bool {
		rows, _ := clusterStatus(t, mlist, certs.ca()...)
		digests := map[string]bool{}
		for _, r := range rows {
			if r.Status == nil {
				return false
			}
			digests[r.Status.Digest] = true
		}
		return len(digests) == 1 && leaderOf(rows) != ""
	})
	// Graceful stop: SIGTERM to all at once, exit code 0 from each.
	exits := make([]proccluster.Exit, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() { exits[i], errs[i] = procs.Terminate(i, time.Minute) })
	}
	wg.Wait()
	for i, id := range ids {
		if errs[i] != nil || exits[i].Err != nil || exits[i].Killed {
			log, _ := os.ReadFile(procs.Spec(i).LogPath)
			t.Fatalf("%s after SIGTERM: exit %v (killed after 1m: %v), %v; log:\n%s", id, exits[i].Err, exits[i].Killed, errs[i], log)
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
	free := freeport.Loopback(t)
	nowhere := freeport.Loopback(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"master", "--bogus"}, "unknown flag: --bogus"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"certificate on a peer-side command", []string{"search", "x", "--cert-file", file}, "present the peer's own key"},
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
	addr := freeport.Loopback(t)
	certs := tlsInit(t, dir, "m1")
	masters(t, dir, proccluster.Spec{ID: "m1", DataDir: filepath.Join(dir, "m1"), Listen: addr, InitialCluster: []proccluster.Voter{{ID: "m1", Addr: addr}}, Flags: certs.master("m1")})
	var out string
	poll.Until(t, 20*time.Second, "a one-master cluster with a leader", func() bool {
		var code int
		out, _, code = fileshare(t, 10*time.Second, append([]string{"cluster", "status", "--masters", addr}, certs.admin()...)...)
		return code == 0 && strings.Contains(out, "leader ")
	})
	for _, want := range []string{"MASTER", "STATE", "m1", "members (as m1 sees them)", "voter"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status table lacks %q:\n%s", want, out)
		}
	}
}
