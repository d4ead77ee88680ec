package master_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/transport"
)

// rawRequest is the RPC envelope as it travels, for an attacker that
// writes frames by hand.
type rawRequest struct {
	ID      uint64
	Method  string
	Timeout int64
	Body    []byte
}

// A client that pipelines searches for 10,000 files over two connections
// and never reads the replies (each about 2.5 MB) leaves the master's
// heap bounded, another client's search is answered promptly, and the
// connections that do not read are closed. Before replies were bounded by
// bytes, each connection ran 512 searches at once and held their replies
// (2.5 GB from two connections), and the other client waited seconds.
func TestPipelinedSearchesNobodyReadsLeaveTheMasterBounded(t *testing.T) {
	c := newCluster(t, 1, func(cfg *master.Config) {
		cfg.MaxCommandBytes = 4 << 20
		cfg.ClusterPort.Calls.WriteTimeout = 3 * time.Second
	})
	c.Leader()
	alice := identity("alice")
	pc := c.PeerClient(alice)
	if _, err := pc.Join(t.Context(), alice, "127.0.0.1:9004"); err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("n", 200)
	for b := range 4 {
		files := make([]client.FileEntry, 2500)
		for i := range files {
			files[i] = fileEntry(fmt.Sprintf("file-%d-%04d-%s", b, i, pad))
		}
		if _, err := pc.Register(t.Context(), alice, files); err != nil {
			t.Fatal(err)
		}
	}
	reader := c.Client()
	r, err := reader.Search(t.Context(), "file", 10000, client.ReadStale)
	if err != nil || len(r.Files) != 10000 {
		t.Fatalf("search for 10,000 files: %d files, %v", len(r.Files), err)
	}

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	body, err := transport.Marshal(&client.SearchRequest{Query: "file", Limit: 10000, ReadHeader: client.ReadHeader{Level: client.ReadStale}})
	if err != nil {
		t.Fatal(err)
	}
	var closed atomic.Int32 // attacker connections whose writes failed: the master closed them
	for range 2 {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		raw, err := d.Dial("tcp", c.Addr(0))
		if err != nil {
			t.Skipf("cannot dial from 127.0.0.2: %v", err)
		}
		t.Cleanup(func() { raw.Close() })
		if _, err := raw.Write([]byte{transport.StreamRPC}); err != nil {
			t.Fatal(err)
		}
		go func() {
			defer closed.Add(1)
			for i := uint64(10); ; i++ {
				b, _ := transport.Marshal(&rawRequest{ID: i, Method: client.MethodSearch, Timeout: int64(time.Minute), Body: body})
				var hdr [4]byte
				binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
				if _, err := raw.Write(append(hdr[:], b...)); err != nil {
					return
				}
			}
		}()
	}
	var peak atomic.Uint64
	stop, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak.Store(max(peak.Load(), ms.HeapInuse))
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	// Another client's search, during the attack.
	for range 3 {
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		r, err := reader.Search(ctx, "file-0-000", 10, client.ReadStale)
		cancel()
		if err != nil || len(r.Files) != 10 {
			t.Fatalf("another client's search during the attack: %d files, %v", len(r.Files), err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("another client's search took %v during the attack, want under 5s", d)
		}
	}
	// The attacker's connections are closed once the master has waited
	// WriteTimeout for it to read.
	poll.Until(t, 30*time.Second, "the master closes the connections that do not read", func() bool { return closed.Load() == 2 })
	close(stop)
	<-watched
	grew := int64(peak.Load()) - int64(before.HeapInuse)
	t.Logf("heap in use grew by at most %d MiB during the attack", grew>>20)
	if limit := int64(400 << 20); grew > limit {
		t.Fatalf("heap in use grew by %d MiB under the attack, want under %d MiB", grew>>20, limit>>20)
	}
}
