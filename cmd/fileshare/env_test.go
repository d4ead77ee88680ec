package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"fileshare/internal/freeport"
)

func TestEnvName(t *testing.T) {
	for flag, want := range map[string]string{"data-dir": "FILESHARE_DATA_DIR", "id": "FILESHARE_ID", "cleanup-dead-masters": "FILESHARE_CLEANUP_DEAD_MASTERS"} {
		if got := envName(flag); got != want {
			t.Errorf("envName(%q) = %q, want %q", flag, got, want)
		}
	}
}

// A FILESHARE_<FLAG> variable sets a flag the command line left alone, for
// the command's own flags and inherited ones; the command line wins; a bad
// value names the variable.
func TestEnvSetsFlagsTheCommandLineLeftAlone(t *testing.T) {
	env := map[string]string{
		"FILESHARE_DATA_DIR":  "/from/env",
		"FILESHARE_ID":        "env-id",
		"FILESHARE_TIMEOUT":   "7s",
		"FILESHARE_VERBOSE":   "true",
		"FILESHARE_LOG_LEVEL": "debug",
		"FILESHARE_UNRELATED": "x",
		"FILESHARE_HELP":      "true",
	}
	var dataDir, id, level string
	var timeout time.Duration
	var verbose, ran bool
	root := &cobra.Command{Use: "root", SilenceErrors: true, SilenceUsage: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		}}
	root.PersistentFlags().StringVar(&level, "log-level", "info", "")
	sub := &cobra.Command{Use: "sub", RunE: func(*cobra.Command, []string) error { ran = true; return nil }}
	sub.Flags().StringVar(&dataDir, "data-dir", "", "")
	sub.Flags().StringVar(&id, "id", "", "")
	sub.Flags().DurationVar(&timeout, "timeout", time.Second, "")
	sub.Flags().BoolVar(&verbose, "verbose", false, "")
	root.AddCommand(sub)
	root.SetArgs([]string{"sub", "--id", "flag-id"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !ran {
		t.Fatal("the command did not run (FILESHARE_HELP must not turn on --help)")
	}
	for _, c := range []struct{ name, got, want string }{
		{"--data-dir", dataDir, "/from/env"},
		{"--id (given on the command line)", id, "flag-id"},
		{"--timeout", timeout.String(), "7s"},
		{"--verbose", fmt.Sprint(verbose), "true"},
		{"--log-level (inherited)", level, "debug"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}

	// A fresh command: cobra keeps what the first run parsed.
	fresh := &cobra.Command{Use: "sub", SilenceErrors: true, SilenceUsage: true, RunE: func(*cobra.Command, []string) error { return nil },
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd, func(k string) (string, bool) { return "soon", k == "FILESHARE_TIMEOUT" })
		}}
	fresh.Flags().DurationVar(&timeout, "timeout", time.Second, "")
	fresh.SetArgs(nil)
	err := fresh.Execute()
	if err == nil || !strings.Contains(err.Error(), "FILESHARE_TIMEOUT") || !strings.Contains(err.Error(), "--timeout") {
		t.Fatalf("a bad value: got %v, want an error naming FILESHARE_TIMEOUT and --timeout", err)
	}
}

func TestVersionFlagNamesTheBuildAndGo(t *testing.T) {
	out, _, code := fileshare(t, 30*time.Second, "--version")
	if code != 0 || !strings.HasPrefix(out, "fileshare ") || !strings.Contains(out, "go1.") {
		t.Fatalf("fileshare --version: exit %d, %q; want 'fileshare VERSION (goX)'", code, out)
	}
}

// listenNotify listens like systemd does for Type=notify services.
func listenNotify(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func readNotify(t *testing.T, conn *net.UnixConn, timeout time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(timeout))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification within %v: %v", timeout, err)
	}
	return string(buf[:n])
}

func TestSDNotifyPathAndAbstractSockets(t *testing.T) {
	if err := sdNotify("", "READY=1"); err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v, want nil", err)
	}
	path := filepath.Join(t.TempDir(), "notify")
	conn := listenNotify(t, path)
	if err := sdNotify(path, "READY=1"); err != nil {
		t.Fatal(err)
	}
	if got := readNotify(t, conn, 5*time.Second); got != "READY=1" {
		t.Fatalf("got %q, want READY=1", got)
	}
	abstract := fmt.Sprintf("@fileshare-test-%d", os.Getpid())
	aconn := listenNotify(t, abstract)
	if err := sdNotify(abstract, "STOPPING=1"); err != nil {
		t.Fatal(err)
	}
	if got := readNotify(t, aconn, 5*time.Second); got != "STOPPING=1" {
		t.Fatalf("abstract socket: got %q, want STOPPING=1", got)
	}
	if err := sdNotify("relative/path", "READY=1"); err == nil {
		t.Fatal("a NOTIFY_SOCKET that is neither a path nor @name was accepted")
	}
	if err := sdNotify(filepath.Join(t.TempDir(), "nobody"), "READY=1"); err == nil {
		t.Fatal("notifying a socket nobody listens on did not fail")
	}
}

// A master configured only through FILESHARE_* variables runs, tells a
// (fake) systemd READY=1 once it serves and STOPPING=1 on SIGTERM, and the
// command line beats the environment.
func TestMasterFromEnvironmentNotifiesSystemd(t *testing.T) {
	dir := t.TempDir()
	listen, httpAddr := freeport.On(t, "127.0.0.1"), freeport.On(t, "127.0.0.1")
	sock := fmt.Sprintf("@fileshare-master-test-%d", os.Getpid())
	notify := listenNotify(t, sock)
	var logs bytes.Buffer
	cmd := exec.Command(binary(t), "master", "--log-level", "debug")
	cmd.Env = append(os.Environ(), "FILESHARE_AS_BINARY=1", "NOTIFY_SOCKET="+sock,
		"FILESHARE_ID=m1", "FILESHARE_DATA_DIR="+filepath.Join(dir, "m1"), "FILESHARE_LISTEN="+listen,
		"FILESHARE_HTTP="+httpAddr, "FILESHARE_INITIAL_CLUSTER=m1="+listen,
		"FILESHARE_LOG_LEVEL=not-a-level") // the flag wins, or the master would not start
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_, _ = cmd.Process.Wait()
		}
	})
	if got := readNotify(t, notify, 60*time.Second); !strings.HasPrefix(got, "READY=1\n") {
		t.Fatalf("first notification %q, want READY=1; logs:\n%s", got, logs.String())
	}
	resp, err := http.Get("http://" + httpAddr + "/v1/healthz")
	if err != nil {
		t.Fatalf("the master from the environment does not serve on FILESHARE_HTTP %s: %v", httpAddr, err)
	}
	resp.Body.Close()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if got := readNotify(t, notify, 30*time.Second); got != "STOPPING=1" {
		t.Fatalf("after SIGTERM got %q, want STOPPING=1", got)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("master exited with %v after SIGTERM; logs:\n%s", err, logs.String())
	}
}
