package main

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fileshare/internal/freeport"
	"fileshare/internal/poll"
)

// `fileshare peer --http` serves /healthz and Prometheus /metrics that
// count the files the daemon shares.
func TestPeerDaemonHTTPStatusPort(t *testing.T) {
	masters, ca := startMasters(t)
	dir := t.TempDir()
	share := filepath.Join(dir, "share")
	randomFile(t, filepath.Join(share, "a.bin"), 1, 1000)
	httpAddr := freeport.Loopback(t)
	daemon := startProc(t, filepath.Join(dir, "peer.log"), "peer", "--masters", masters, "--trusted-ca-file", ca,
		"--data-dir", filepath.Join(dir, "data"), "--share", share, "--listen", "127.0.0.1:0", "--http", httpAddr)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	poll.Until(t, 30*time.Second, "/metrics to count the shared file", func() bool {
		code, body := get("/metrics")
		return code == http.StatusOK && strings.Contains(body, "\nfileshare_peer_shared_files 1\n")
	})
	if code, body := get("/healthz"); code != http.StatusOK || !strings.Contains(body, `"status":"ok"`) {
		t.Errorf("/healthz: %d %s", code, body)
	}
	daemon.terminate(t, "peer")
}
