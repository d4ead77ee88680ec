package peer

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkDownload64MiB measures download throughput of a 64 MiB file on
// loopback from one holder and from two (each holder a separate in-process
// peer with its own listener; every piece is SHA-256-verified and written
// to disk). Report MB/s:
//
//	go test -run '^$' -bench Download64MiB -benchtime 5x -count 5 ./peer/
func BenchmarkDownload64MiB(b *testing.B) {
	for _, holders := range []int{1, 2} {
		b.Run(fmt.Sprintf("holders=%d", holders), func(b *testing.B) {
			c := newTestCluster(b, nil)
			data := randomBytes(uint64(holders), 64*mib)
			id := idOf(b, data)
			for i := range holders {
				startPeer(b, c, fmt.Sprintf("holder%d", i), shareFolder(b, map[string][]byte{"big.bin": data}), nil)
			}
			dl := startPeer(b, c, "downloader", "", nil)
			waitHolders(b, dl.Client(), id, holders)
			dir := b.TempDir()
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				dest := filepath.Join(dir, fmt.Sprintf("big-%d.bin", i))
				res, err := dl.Download(b.Context(), id, dest, DownloadOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if len(res.FromHolders) != holders {
					b.Fatalf("pieces came from %v, want %d holders", res.FromHolders, holders)
				}
				b.StopTimer()
				os.Remove(dest)
				b.StartTimer()
			}
		})
	}
}
