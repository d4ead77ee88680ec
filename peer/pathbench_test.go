package peer

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"fileshare/internal/poll"
)

// BenchmarkPaths measures the download rate of a 32 MiB file from one
// holder on loopback over each connection path — direct TLS over TCP,
// QUIC (the hole-punch path), and through a relay peer (two TLS layers,
// one end to end; a master's relay is rate-capped by its budget) — beside a plain HTTP GET of the same bytes
// from a net/http file server (no TLS, no hashing: the floor every path
// pays on top of). Every FileShare piece is SHA-256-verified and written
// to disk; the HTTP body is written to disk too. Report MB/s:
//
//	go test -run '^$' -bench Paths -benchtime 3x ./peer/
func BenchmarkPaths(b *testing.B) {
	c := newTestCluster(b, nil)
	data := randomBytes(77, 32*mib)
	id := idOf(b, data)
	share := shareFolder(b, map[string][]byte{"big.bin": data})
	holder := startPeer(b, c, "holder", share, nil)
	waitHolders(b, c.client(), id, 1)
	poll.Until(b, 20*time.Second, "the holder's UDP address", func() bool { return holder.punchAddr() != "" })
	relayPeer := startPeer(b, c, "relay", b.TempDir(), func(cfg *Config) { cfg.Relay = true })
	poll.Until(b, 20*time.Second, "the relay peer listed", func() bool {
		rs, err := c.client().Relays(b.Context())
		return err == nil && len(rs) > 0 && rs[0].PeerID == relayPeer.ID()
	})

	b.Run("path=http", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &http.Server{Handler: http.FileServer(http.Dir(share))}
		go srv.Serve(ln)
		b.Cleanup(func() { srv.Close() })
		url := "http://" + ln.Addr().String() + "/big.bin"
		dir := b.TempDir()
		b.SetBytes(int64(len(data)))
		for i := 0; b.Loop(); i++ {
			resp, err := http.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			f, err := os.Create(filepath.Join(dir, fmt.Sprint(i)))
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(f, resp.Body)
			resp.Body.Close()
			f.Close()
			if err != nil || n != int64(len(data)) {
				b.Fatalf("HTTP fetched %d bytes, %v", n, err)
			}
		}
	})
	for _, tc := range []struct {
		path string
		skip []string
	}{
		{PathDirect, nil},
		{PathPunch, []string{PathDirect, PathReversal}},
		{PathRelay, []string{PathDirect, PathReversal, PathPunch}},
	} {
		b.Run("path="+tc.path, func(b *testing.B) {
			dl := startPeer(b, c, "dl-"+tc.path, "", func(cfg *Config) { cfg.skipPaths = tc.skip })
			dir := b.TempDir()
			b.SetBytes(int64(len(data)))
			for i := 0; b.Loop(); i++ {
				dest := filepath.Join(dir, fmt.Sprint(i))
				res, err := dl.Download(b.Context(), id, dest, DownloadOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if got := res.Paths[pid("holder")]; got != tc.path {
					b.Fatalf("went by %q, want %q", got, tc.path)
				}
				b.StopTimer()
				os.Remove(dest)
				b.StartTimer()
			}
		})
	}
}
