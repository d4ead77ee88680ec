package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"fileshare/btclient"
	"fileshare/internal/freeport"
	"fileshare/master"
	"fileshare/tracker"
)

// demoTracker is the demo's BitTorrent part: the masters' trackers, a
// torrent naming them all, and BitTorrent peers played with btclient.
type demoTracker struct {
	d     *demo
	addrs []string // tracker address of master i, HTTP and UDP on the same port
	ih    tracker.InfoHash
	udp   btclient.UDPClient
	http  *http.Client
	names map[netip.AddrPort]string // BitTorrent peer address → its name
}

// trackerConfig gives each master an HTTP and a UDP tracker on one fixed
// loopback port, kept across restarts so that the torrent's URLs stay true.
func (t *demoTracker) trackerConfig(n int) (func(c *master.Config), error) {
	for range n {
		addr, err := freeport.Addr("127.0.0.1")
		if err != nil {
			return nil, fmt.Errorf("find a free port for a tracker: %w", err)
		}
		t.addrs = append(t.addrs, addr)
	}
	return func(c *master.Config) {
		// mastertest names member i "m<i+1>".
		if i, err := strconv.Atoi(strings.TrimPrefix(c.ID, "m")); err == nil && i >= 1 && i <= n {
			c.Tracker.HTTP, c.Tracker.UDP = t.addrs[i-1], t.addrs[i-1]
		}
	}, nil
}

func (t *demoTracker) httpURL(i int) string { return "http://" + t.addrs[i] + "/announce" }
func (t *demoTracker) udpURL(i int) string  { return "udp://" + t.addrs[i] + "/announce" }

// run narrates the tracker part: peers announcing to different masters over
// UDP and HTTP, the leader killed while the swarm is live, a peer arriving
// after the kill, and every master killed and restarted with the swarm
// intact.
func (t *demoTracker) run(ctx context.Context, bigPath string) error {
	d := t.d
	t.udp.Retransmit = 500 * time.Millisecond // loopback: no need to wait BEP 15's 15 s
	t.http = &http.Client{Timeout: 5 * time.Second}
	t.names = map[netip.AddrPort]string{}
	var tier []string
	for i := range t.addrs {
		tier = append(tier, t.udpURL(i), t.httpURL(i))
	}
	f, err := os.Open(bigPath)
	if err != nil {
		return err
	}
	meta, ih, err := tracker.MakeTorrent(f, tracker.TorrentSpec{Name: "big.bin", Announce: [][]string{tier}})
	f.Close()
	if err != nil {
		return err
	}
	t.ih = ih
	torrent := filepath.Join(d.dir, "big.bin.torrent")
	if err := os.WriteFile(torrent, meta, 0o644); err != nil {
		return err
	}
	d.say("Every master is also a BitTorrent tracker (HTTP and UDP), and its swarms live in the same\n   replicated log as the index. A torrent for big.bin lists all six tracker URLs in one tier\n   (BEP 12), so a client moves on to the next master when one does not answer:")
	for i := range t.addrs {
		d.note("%s: %s  %s", d.masters.ID(i), t.udpURL(i), t.httpURL(i))
	}
	d.note("torrent %s, info-hash %s", torrent, hex.EncodeToString(ih[:]))

	leader, ok := d.masters.Leader()
	if !ok {
		return errors.New("the cluster has no leader")
	}
	// Announce to followers, so that what they answer shows replication.
	f1, f2 := (leader+1)%3, (leader+2)%3
	seeder := t.peer("seeder", 6881)
	if _, err := t.announce(ctx, f1, "udp", seeder, tracker.EventStarted, 0); err != nil {
		return err
	}
	d.say("BitTorrent peer \"seeder\" (127.0.0.1:6881, the whole file) announces started to %s over UDP;\n   the change is committed on a majority before %s answers.", d.masters.ID(f1), d.masters.ID(f1))
	// Peer lists are served from the answering master's own index, which
	// applies a commit a moment after the leader: wait for it, as a client's
	// next announce would.
	if _, err := t.scrapeUntil(ctx, f2, "HTTP", tracker.ScrapeEntry{Complete: 1}); err != nil {
		return err
	}
	d.note("A moment later %s's copy of the index lists the seeder too.", d.masters.ID(f2))
	leecher := t.peer("leecher", 6882)
	r, err := t.announce(ctx, f2, "http", leecher, tracker.EventStarted, 1)
	if err != nil {
		return err
	}
	d.note("\"leecher\" (127.0.0.1:6882) announces started to %s over HTTP and is told: %s.", d.masters.ID(f2), t.describe(r))

	d.say("Killing the leader %s while the swarm is live…", d.masters.ID(leader))
	t0 := time.Now()
	_ = d.masters.Kill(leader)
	next, err := d.masters.WaitLeader(ctx)
	if err != nil {
		return err
	}
	d.note("%s leads %s later.", d.masters.ID(next), time.Since(t0).Round(10*time.Millisecond))
	late := t.peer("latecomer", 6883)
	r, err = t.announce(ctx, f1, "udp", late, tracker.EventStarted, 1)
	if err != nil {
		return err
	}
	d.note("\"latecomer\" (127.0.0.1:6883), arriving after the kill, announces to %s over UDP and is told:\n   %s.", d.masters.ID(f1), t.describe(r))
	if _, err := t.announce(ctx, f2, "http", leecher, tracker.EventCompleted, 0); err != nil {
		return err
	}
	d.note("\"leecher\" finishes and announces completed to %s: the swarm now counts 1 download.", d.masters.ID(f2))

	d.say("Every master is killed at once, as if the whole cluster crashed, and all three restart from their data dirs.")
	for i := range t.addrs {
		_ = d.masters.Kill(i)
	}
	for i := range t.addrs {
		if err := d.masters.Restart(ctx, i); err != nil {
			return fmt.Errorf("restart %s: %w", d.masters.ID(i), err)
		}
	}
	if _, err := d.masters.WaitLeader(ctx); err != nil {
		return err
	}
	want := tracker.ScrapeEntry{Complete: 2, Incomplete: 1, Downloaded: 1}
	for i := range t.addrs {
		how := []string{"UDP", "HTTP"}[i%2]
		got, err := t.scrapeUntil(ctx, i, how, want)
		if err != nil {
			return err
		}
		d.note("scrape of %s over %-4s: %s, %s, %s", d.masters.ID(i), how, plural(got.Complete, "seeder"), plural(got.Incomplete, "leecher"), plural(got.Downloaded, "completed download"))
	}
	d.note("An unreplicated tracker keeps its swarms in memory: after this restart it would answer\n   0 seeders, 0 leechers, 0 downloads, and hand every client an empty peer list until\n   each re-announces (up to an interval later: 15 minutes here).")
	return t.realClients(ctx, torrent, bigPath)
}

// realClients moves big.bin between two real BitTorrent clients (aria2)
// that find each other only through the masters' trackers: one seeds
// alice's copy, the other downloads it. Without aria2 on the machine it
// says how to see that instead.
func (t *demoTracker) realClients(ctx context.Context, torrent, bigPath string) error {
	d := t.d
	aria2, err := exec.LookPath("aria2c")
	if err != nil {
		d.note("No real BitTorrent client on this machine: install aria2 (apt-get install aria2) and the demo\n   moves big.bin between two aria2 clients through these trackers. The real-client test runs\n   Transmission, aria2 and libtorrent across a leader kill and a full restart (as root):\n   go test -run TestTrackerClusterServesRealClientsAcrossLeaderKillAndFullRestart ./cmd/fileshare/")
		return nil
	}
	ports := make([]string, 2)
	for i := range ports {
		if ports[i], err = freeport.Port("127.0.0.1"); err != nil {
			return fmt.Errorf("find a free port for aria2: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// DHT, peer exchange and local discovery off: the clients can find each
	// other only through the trackers. aria2 announces over HTTP (it speaks
	// UDP to trackers only with DHT on).
	args := func(dir, port, log string, extra ...string) []string {
		return append([]string{"--dir=" + dir, "--listen-port=" + port, "--disable-ipv6=true",
			"--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
			"--file-allocation=none", "--summary-interval=0", "--console-log-level=error",
			"--log=" + filepath.Join(d.dir, log), "--log-level=notice"}, append(extra, torrent)...)
	}
	seedCmd := exec.CommandContext(ctx, aria2, args(filepath.Dir(bigPath), ports[0], "aria2-seed.log",
		"--check-integrity=true", "--seed-ratio=0.0")...)
	if err := seedCmd.Start(); err != nil {
		return fmt.Errorf("start aria2: %w", err)
	}
	defer func() { _ = seedCmd.Process.Kill(); _ = seedCmd.Wait() }()
	d.say("A real BitTorrent client, aria2, seeds big.bin from alice's folder (127.0.0.1:%s), and a second\n   aria2 downloads it, finding the seeder only through the masters' trackers:", ports[0])
	// Start the downloader once the seeder is in the swarm, or its first
	// announce finds no seeder and it waits out an interval.
	seeded := tracker.ScrapeEntry{Complete: 3, Incomplete: 1, Downloaded: 1}
	if _, err := t.scrapeUntil(ctx, 0, "UDP", seeded); err != nil {
		return fmt.Errorf("aria2's seeder never joined the swarm (log: %s): %w", filepath.Join(d.dir, "aria2-seed.log"), err)
	}
	dest := filepath.Join(d.dir, "aria2-download")
	t0 := time.Now()
	getCmd := exec.CommandContext(ctx, aria2, args(dest, ports[1], "aria2-get.log", "--seed-time=0")...)
	if out, err := getCmd.CombinedOutput(); err != nil {
		return fmt.Errorf("aria2 download (logs in %s): %v\n%s", d.dir, err, out)
	}
	got, err := sha256Of(filepath.Join(dest, "big.bin"))
	if err != nil {
		return err
	}
	want, err := sha256Of(bigPath)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("aria2's copy of big.bin has SHA-256 %s, the original %s", got, want)
	}
	d.note("aria2 downloaded %s in %s; its SHA-256 matches the original's.", humanBytes(d.size), time.Since(t0).Round(10*time.Millisecond))
	return nil
}

// btPeer is one BitTorrent client the demo plays.
type btPeer struct {
	id   tracker.PeerID
	port uint16
}

func (t *demoTracker) peer(name string, port uint16) btPeer {
	var p btPeer
	copy(p.id[:], fmt.Sprintf("-FS0001-%-12s", name))
	p.port = port
	t.names[netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)] = name
	return p
}

// announce sends one announce to master i over "udp" or "http", retrying
// until ctx ends while the cluster cannot answer (as a real client does).
func (t *demoTracker) announce(ctx context.Context, i int, how string, p btPeer, ev tracker.Event, left uint64) (btclient.Response, error) {
	a := btclient.Announce{InfoHash: t.ih, PeerID: p.id, Port: p.port, Left: left, Event: ev, Key: uint32(p.port), HasKey: true}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		var r btclient.Response
		var err error
		if how == "udp" {
			r, err = t.udp.Announce(ctx, t.addrs[i], a)
		} else {
			r, err = btclient.AnnounceHTTP(ctx, t.http, t.httpURL(i), a)
		}
		if err == nil {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("announce to %s over %s: %w", t.d.masters.ID(i), how, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// scrapeUntil scrapes master i until it answers want (a restarted
// follower may still be applying its log) or ctx runs out, and returns the
// last answer.
func (t *demoTracker) scrapeUntil(ctx context.Context, i int, how string, want tracker.ScrapeEntry) (tracker.ScrapeEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var last tracker.ScrapeEntry
	var lastErr error
	for {
		var got []tracker.ScrapeEntry
		var err error
		if how == "UDP" {
			got, err = t.udp.Scrape(ctx, t.addrs[i], t.ih)
		} else {
			got, err = btclient.ScrapeHTTP(ctx, t.http, t.httpURL(i), t.ih)
		}
		if err == nil {
			last = got[0]
			if last == want {
				return last, nil
			}
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("scrape of %s over %s answered %+v (last error %v), want %+v", t.d.masters.ID(i), how, last, lastErr, want)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// describe says what an announce reply holds, naming the peers.
func (t *demoTracker) describe(r btclient.Response) string {
	var names []string
	for _, p := range r.Peers {
		if n, ok := t.names[p]; ok {
			names = append(names, fmt.Sprintf("%s (%s)", n, p))
		} else {
			names = append(names, p.String())
		}
	}
	slices.Sort(names)
	peers := "no peers"
	if len(names) > 0 {
		peers = "peers " + strings.Join(names, " and ")
	}
	return fmt.Sprintf("%s, %s, %s", plural(r.Complete, "seeder"), plural(r.Incomplete, "leecher"), peers)
}
