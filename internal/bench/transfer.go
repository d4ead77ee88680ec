package bench

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"fileshare/client"
	"fileshare/internal/poll"
	"fileshare/peer"
	"fileshare/transport"
)

// TransferResult holds one transfer benchmark: the medians of the verified
// peer download and of a plain HTTP fetch of the same file, measured
// alternately in one run.
type TransferResult struct {
	Size    int64
	Sources int
	Peer    time.Duration // median verified download
	HTTP    time.Duration // median HTTP fetch
}

// Ratio is the peer download's throughput relative to HTTP's.
func (r TransferResult) Ratio() float64 { return r.HTTP.Seconds() / r.Peer.Seconds() }

func mbps(size int64, d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }

// Transfer creates a file of size bytes, lets sources peers share it, and
// then, rounds times each, downloads it with a fresh download-only peer
// (every piece verified, written in place, renamed at the end) and fetches
// it from Go's net/http file server with a plain client writing to the
// same disk. It prints one line per measurement and a summary line.
func Transfer(ctx context.Context, masters []string, ca *transport.TLS, dir string, size int64, sources, rounds int, w io.Writer) (TransferResult, error) {
	res := TransferResult{Size: size, Sources: sources}
	if sources < 1 {
		return res, errors.New("need at least one source")
	}
	src := filepath.Join(dir, "source.bin")
	if err := writeRandomFile(src, size); err != nil {
		return res, err
	}
	sum, err := fileSHA256(src)
	if err != nil {
		return res, err
	}

	// The holders: each shares a hard link of the source file.
	var fileID string
	for i := range sources {
		share := filepath.Join(dir, fmt.Sprintf("holder%d-share", i))
		if err := os.MkdirAll(share, 0o700); err != nil {
			return res, err
		}
		if err := os.Link(src, filepath.Join(share, "big.bin")); err != nil {
			return res, fmt.Errorf("link the source into holder %d's share folder: %w", i, err)
		}
		p, err := peer.New(peer.Config{Masters: masters, CA: ca, DataDir: filepath.Join(dir, fmt.Sprintf("holder%d-data", i)), ShareDir: share, Listen: "127.0.0.1:0"})
		if err != nil {
			return res, fmt.Errorf("start holder %d: %w", i, err)
		}
		defer p.Close()
		for len(p.Shared()) == 0 {
			if err := p.Rescan(ctx); err != nil {
				return res, err
			}
		}
		fileID = p.Shared()[0].ID
	}
	readers, err := newClients(masters, ca, nil, 1)
	if err != nil {
		return res, err
	}
	defer closeAll(readers)
	mc := readers[0]
	if err := poll.Wait(ctx, func() bool {
		r, err := mc.Lookup(ctx, fileID, client.ReadLinearizable)
		return err == nil && len(r.Holders) >= sources
	}); err != nil {
		return res, err
	}

	// The baseline: Go's file server on loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/source.bin"

	var peerTimes, httpTimes []time.Duration
	for round := range rounds {
		d, err := httpFetch(ctx, url, filepath.Join(dir, "http-copy.bin"), size)
		if err != nil {
			return res, err
		}
		httpTimes = append(httpTimes, d)
		fmt.Fprintf(w, "transfer round %d: http %.0f MB/s\n", round+1, mbps(size, d))

		dl, err := peer.New(peer.Config{Masters: masters, CA: ca, DataDir: filepath.Join(dir, fmt.Sprintf("downloader%d", round)), Listen: "127.0.0.1:0"})
		if err != nil {
			return res, err
		}
		dest := filepath.Join(dir, "peer-copy.bin")
		os.Remove(dest)
		t0 := time.Now()
		out, err := dl.Download(ctx, fileID, dest, peer.DownloadOptions{})
		d = time.Since(t0)
		dl.Close()
		if err != nil {
			return res, fmt.Errorf("download: %w", err)
		}
		got, err := fileSHA256(dest)
		if err != nil {
			return res, err
		}
		if got != sum {
			return res, errors.New("downloaded file differs from the source")
		}
		peerTimes = append(peerTimes, d)
		fmt.Fprintf(w, "transfer round %d: fileshare %.0f MB/s from %d holder(s) %v\n", round+1, mbps(size, d), len(out.FromHolders), out.FromHolders)
		os.Remove(dest)
		os.Remove(filepath.Join(dir, "http-copy.bin"))
	}
	res.Peer, res.HTTP = median(peerTimes), median(httpTimes)
	fmt.Fprintf(w, "transfer: size=%d sources=%d fileshare=%.0f MB/s http=%.0f MB/s ratio=%.2fx (medians of %d rounds)\n",
		size, sources, mbps(size, res.Peer), mbps(size, res.HTTP), res.Ratio(), rounds)
	return res, nil
}

func writeRandomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{1})
	if _, err := io.CopyN(f, rng, size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fileSHA256(path string) ([32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, err
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, nil
}

// httpFetch downloads url into path with a plain client and fsyncs it, as
// the peer download does before its rename.
func httpFetch(ctx context.Context, url, path string, size int64) (time.Duration, error) {
	t0 := time.Now()
	resp, err := httpGet(ctx, url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, resp.Body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	if n != size {
		return 0, fmt.Errorf("http fetch got %d bytes, want %d", n, size)
	}
	return time.Since(t0), nil
}
