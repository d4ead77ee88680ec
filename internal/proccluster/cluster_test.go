//go:build !windows

package proccluster

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/freeport"
	"fileshare/internal/poll"
)

// The test binary doubles as a fake master: run with
// PROCCLUSTER_FAKE_MASTER=1 it parses the master flags it is given,
// serves /v1/status on --http (leader if its ID is
// $PROCCLUSTER_FAKE_LEADER) and exits 0 on SIGTERM, unless
// PROCCLUSTER_FAKE_IGNORE_TERM=1.
func TestMain(m *testing.M) {
	if os.Getenv("PROCCLUSTER_FAKE_MASTER") == "1" {
		os.Exit(fakeMaster(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeMaster(args []string) int {
	if len(args) == 0 || args[0] != "master" {
		return 3
	}
	fs := flag.NewFlagSet("master", flag.ContinueOnError)
	id := fs.String("id", "", "")
	httpAddr := fs.String("http", "", "")
	for _, f := range []string{"data-dir", "listen", "advertise", "initial-cluster", "join", "join-timeout", "log-level"} {
		fs.String(f, "", "")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 3
	}
	sigs := make(chan os.Signal, 1)
	if os.Getenv("PROCCLUSTER_FAKE_IGNORE_TERM") == "1" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(sigs, syscall.SIGTERM)
	}
	state := client.StateFollower
	if *id == os.Getenv("PROCCLUSTER_FAKE_LEADER") {
		state = client.StateLeader
	}
	st := client.Status{ID: *id, State: state, Term: 1, Ready: true, LeaderID: os.Getenv("PROCCLUSTER_FAKE_LEADER")}
	srv := &http.Server{Addr: *httpAddr, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(st)
	})}
	go srv.ListenAndServe()
	os.Stdout.WriteString("fake master " + *id + " up\n")
	<-sigs
	return 0
}

func fakeCluster(t *testing.T, n int, exited func(int, error), env ...string) *Cluster {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var specs []Spec
	for i := range n {
		id := "m" + string(rune('1'+i))
		specs = append(specs, Spec{
			ID: id, DataDir: filepath.Join(dir, id), Listen: freeport.Loopback(t), HTTP: freeport.Loopback(t),
			Env: append(os.Environ(), append([]string{"PROCCLUSTER_FAKE_MASTER=1"}, env...)...), LogPath: filepath.Join(dir, id+".log"),
		})
	}
	c, err := New(Config{Binary: exe, Masters: specs, StatusTimeout: time.Second, Exited: exited})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// Every control acts on the process the Cluster started, by PID: a
// killed master is reaped and restarts as a new process; a paused one is
// stopped until resumed; SIGTERM ends it with status 0; and only an exit
// nobody asked for is reported as a crash.
func TestProcessControlActsOnTheStartedPID(t *testing.T) {
	c := fakeCluster(t, 3, nil, "PROCCLUSTER_FAKE_LEADER=m2")
	for i := range c.Len() {
		if err := c.Start(i); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	leader, err := c.WaitLeader(ctx, -1)
	if err != nil || leader != 1 {
		t.Fatalf("WaitLeader = %d, %v; want 1 (m2)", leader, err)
	}
	if l := c.Leader(ctx); l != 1 {
		t.Fatalf("Leader = %d, want 1", l)
	}

	pid := c.PID(0)
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	if st := c.State(0); st.Running || st.PID != 0 {
		t.Fatalf("after Kill: %+v, want not running", st)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("signal 0 to killed pid %d: %v, want ESRCH (reaped)", pid, err)
	}
	sts, errs := c.Statuses(ctx)
	if !errors.Is(errs[0], ErrNotRunning) || errs[1] != nil || sts[1].State != client.StateLeader {
		t.Fatalf("Statuses with m1 killed: errs %v, m2 %q; want ErrNotRunning for m1 and m2 Leader", errs, sts[1].State)
	}
	if err := c.Start(0); err != nil {
		t.Fatal(err)
	}
	if st := c.State(0); !st.Running || st.PID == pid || st.Starts != 2 {
		t.Fatalf("after restart: %+v, want running as a new PID (not %d), 2 starts", st, pid)
	}

	if err := c.Pause(2); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "linux" {
		t.Skip("the rest reads process states from /proc")
	}
	poll.Until(t, 5*time.Second, "m3 stopped by SIGSTOP", func() bool { return procState(c.PID(2)) == "T" })
	if err := c.Resume(2); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "m3 running after SIGCONT", func() bool { return procState(c.PID(2)) != "T" })

	if err := c.Pause(2); err != nil {
		t.Fatal(err)
	}
	waitUp(t, c, 2, 1)
	exit, err := c.Restart(2, 10*time.Second) // a paused master still stops gracefully
	if err != nil || exit.Err != nil || exit.Killed {
		t.Fatalf("Restart of paused m3 = %+v, %v; want exit status 0, not killed", exit, err)
	}
	if st := c.State(2); !st.Running || st.Paused || st.Starts != 2 {
		t.Fatalf("after Restart: %+v, want running, not paused, 2 starts", st)
	}

	waitUp(t, c, 0, 2)
	if err := c.Wipe(0); !errors.Is(err, ErrRunning) {
		t.Fatalf("Wipe of running m1: %v, want ErrRunning", err)
	}
	log, err := os.ReadFile(c.Spec(0).LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "fake master m1 up"); n != 2 {
		t.Fatalf("m1's log shows %d starts' output, want 2 (appended):\n%s", n, log)
	}
	if !strings.Contains(string(log), "=== proccluster: start #2 of m1") || !strings.Contains(string(log), strings.Join(c.Spec(0).Args(), " ")) {
		t.Fatalf("m1's log lacks the start header with the argv:\n%s", log)
	}
}

// A master that ignores SIGTERM is SIGKILLed after the grace period, and
// Terminate says so; an exit nobody asked for reaches Config.Exited.
func TestTerminateKillsAfterGraceAndCrashesAreReported(t *testing.T) {
	c := fakeCluster(t, 1, nil, "PROCCLUSTER_FAKE_IGNORE_TERM=1")
	if err := c.Start(0); err != nil {
		t.Fatal(err)
	}
	waitUp(t, c, 0, 1)
	exit, err := c.Terminate(0, 200*time.Millisecond)
	var ee *exec.ExitError
	if err != nil || !exit.Killed || !errors.As(exit.Err, &ee) {
		t.Fatalf("Terminate of a master ignoring SIGTERM = %+v, %v; want Killed with an exit error", exit, err)
	}

	crashes := make(chan int, 1)
	c2 := fakeCluster(t, 1, func(i int, err error) { crashes <- i })
	if err := c2.Start(0); err != nil {
		t.Fatal(err)
	}
	waitUp(t, c2, 0, 1)
	if err := syscall.Kill(c2.PID(0), syscall.SIGKILL); err != nil { // behind the Cluster's back
		t.Fatal(err)
	}
	select {
	case i := <-crashes:
		if i != 0 {
			t.Fatalf("Exited(%d), want Exited(0)", i)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a crash was not reported to Exited within 10s")
	}
	if err := c2.Kill(0); err != nil {
		t.Fatalf("Kill of a crashed master: %v, want nil (nothing to do)", err)
	}
	if err := c2.Wipe(0); err != nil {
		t.Fatal(err)
	}
	if err := c2.Start(0); err != nil {
		t.Fatal(err)
	}
	waitUp(t, c2, 0, 2) // its SIGTERM handler is installed
	if exit, err := c2.Terminate(0, 10*time.Second); err != nil || exit.Err != nil || exit.Killed {
		t.Fatalf("Terminate = %+v, %v; want status 0", exit, err)
	}
	select {
	case i := <-crashes:
		t.Fatalf("Exited(%d) after a Terminate: a requested stop is not a crash", i)
	default:
	}
	c2.Close()
	c2.Close() // safe twice
	if err := c2.Start(0); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}

// waitUp waits until master i's log shows that its n-th process is up
// (and so handles SIGTERM).
func waitUp(t *testing.T, c *Cluster, i, n int) {
	t.Helper()
	id := c.Spec(i).ID
	poll.Until(t, 10*time.Second, id+"'s log shows it up", func() bool {
		b, _ := os.ReadFile(c.Spec(i).LogPath)
		return strings.Count(string(b), "fake master "+id+" up") >= n
	})
}

// procState returns the state letter of pid from /proc/PID/stat ("T":
// stopped), or "" if unknown.
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
