package master_test

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"fileshare/btclient"
	"fileshare/client"
	"fileshare/master"
	"fileshare/master/mastertest"
	"fileshare/tracker"
)

// BenchmarkTrackerReannounceModes measures HTTP re-announces per second
// to one master (the leader of three) in open mode and then, on the same
// cluster and swarm, in private mode with passkeys and growing counters:
// the cost of the private tracker (target: private at least 80 % of
// open). Run with -benchtime 3s or so; compare the two figures of one run.
func BenchmarkTrackerReannounceModes(b *testing.B) {
	c := mastertest.New(b, 3, mastertest.Options{TLS: true, Config: func(c *master.Config) {
		c.Tracker.HTTP = "127.0.0.1:0"
	}})
	ctx := b.Context()
	admin := c.Client()
	ih := randomHash()
	if _, err := admin.TrackerPolicy(ctx, client.TrackerPolicyRequest{Allow: []string{fmt.Sprintf("%x", ih[:])}}); err != nil {
		b.Fatal(err)
	}
	m, err := admin.TrackerUserAdd(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	addr := c.Master(c.Leader()).TrackerHTTPAddr()
	const peers = 64
	var next atomic.Int64
	run := func(b *testing.B, url string) {
		var seq atomic.Uint64
		hc := &http.Client{Timeout: 10 * time.Second}
		for i := range peers {
			a := btclient.Announce{InfoHash: ih, Port: uint16(10000 + i), Left: 1, Event: tracker.EventStarted}
			a.PeerID[0], a.PeerID[1] = 'b', byte(i)
			if _, err := btclient.AnnounceHTTP(ctx, hc, url, a); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			hc := &http.Client{Timeout: 10 * time.Second}
			i := int(next.Add(1))
			for pb.Next() {
				k := i % peers
				i++
				a := btclient.Announce{InfoHash: ih, Port: uint16(10000 + k), Left: 1, Uploaded: seq.Add(1), NumWant: 0}
				a.PeerID[0], a.PeerID[1] = 'b', byte(k)
				if _, err := btclient.AnnounceHTTP(ctx, hc, url, a); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "announces/s")
	}
	b.Run("open", func(b *testing.B) { run(b, "http://"+addr+"/announce") })
	if err := admin.TrackerSetMode(ctx, client.TrackerModePrivate); err != nil {
		b.Fatal(err)
	}
	c.Converge()
	b.Run("private", func(b *testing.B) { run(b, "http://"+addr+"/"+m.Passkey+"/announce") })
}
