package peer

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"fileshare/internal/freeport"
)

// Downloads started while the peer closes either never begin or are
// aborted, and all of them fail with ErrClosed; Close waits for the ones
// that began, and no Download joins the peer's WaitGroup once Close may be
// waiting on it (the race detector checks that).
func TestDownloadsRacingCloseEndWithErrClosed(t *testing.T) {
	p, err := New(Config{
		Masters: []string{freeport.Silent(t)}, // accepts and never answers: a lookup waits until it is cancelled
		DataDir: t.TempDir(),
		Listen:  "127.0.0.1:0",
		Logger:  testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	id := FileIDOf(0, DefaultPieceSize, [][32]byte{sha256.Sum256(nil)})
	dir := t.TempDir()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 16 {
		wg.Go(func() {
			<-start
			_, err := p.Download(t.Context(), id, filepath.Join(dir, fmt.Sprint(i)), DownloadOptions{StallTimeout: time.Minute})
			if !errors.Is(err, ErrClosed) {
				t.Errorf("download %d on a closing peer: %v, want ErrClosed", i, err)
			}
		})
	}
	close(start)
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return within 30 s while downloads were starting")
	}
	wg.Wait()
	if _, err := p.Download(t.Context(), id, filepath.Join(dir, "after"), DownloadOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("download on a closed peer: %v, want ErrClosed", err)
	}
}
