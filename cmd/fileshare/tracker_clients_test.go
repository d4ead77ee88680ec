//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"fileshare/internal/netlab"
	"fileshare/internal/poll"
	"fileshare/internal/proccluster"
	"fileshare/internal/testenv"
	"fileshare/tracker"
)

// labEnv carries the lab's netlab.Layout (JSON) to the copy of this test
// that runs inside the hub namespace.
const labEnv = "FILESHARE_TRACKER_LAB"

// Real, unmodified BitTorrent clients find each other only through the
// masters' trackers, and the swarm survives the loss of the leader and a
// restart of every master: Transmission seeds, aria2 downloads; the leader
// is SIGKILLed; libtorrent, started after, downloads from both; then every
// master is SIGKILLed and restarted and every master's scrape still
// reports the swarm. Bytes are compared, not just progress.
//
// The layout, and why:
//
//   - netlab builds a hub namespace with a bridge and one namespace per
//     client, each with one veth into the bridge. A client sees nothing
//     but the lab (no route out, no loopback shared with another client),
//     and DHT, PEX, LSD, UPnP and NAT-PMP are off in every client, so a
//     peer it connects to came from a tracker reply.
//   - The test re-executes itself inside the hub. Everything it starts
//     there (the masters, the status CLI, its HTTP scrapes) runs in the hub
//     unchanged, with the helpers the other process tests use, and the
//     PIDs it holds are the programs' own. Clients start through
//     `ip netns exec CLIENT`, which also execs the program itself.
//   - Each client gets its own address on the bridge, so the tracker sees
//     distinct source IPs; none is 127.x, which Transmission 3.00 would
//     refuse to dial.
//   - The masters' Raft and status listeners are on the hub's loopback;
//     each master's trackers (HTTP and UDP) are on its own bridge
//     address, and the torrent lists all six URLs in one tier (BEP 12).
//     aria2 skips the UDP ones (it announces over UDP only with DHT on);
//     Transmission and libtorrent use either.
//
// The outer test only builds the lab, runs the inner one, prints its
// output, and deletes the lab, SIGKILLing by PID anything left inside.
func TestTrackerClusterServesRealClientsAcrossLeaderKillAndFullRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real BitTorrent clients in network namespaces; skipped with -short")
	}
	if raw := os.Getenv(labEnv); raw != "" {
		var lay netlab.Layout
		if err := json.Unmarshal([]byte(raw), &lay); err != nil {
			t.Fatalf("bad %s: %v", labEnv, err)
		}
		trackerClientsInHub(t, lay)
		return
	}
	var missing []string
	if err := netlab.Available(); err != nil {
		missing = append(missing, err.Error())
	}
	for _, tool := range []string{"transmission-daemon", "transmission-remote", "aria2c"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" is not installed (apt-get install aria2 transmission-daemon transmission-cli)")
		}
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import libtorrent").Run(); err != nil {
		missing = append(missing, "/usr/bin/python3 cannot import libtorrent (apt-get install python3-libtorrent)")
	}
	if len(missing) > 0 {
		testenv.Unavailable(t, "needs "+strings.Join(missing, "; "))
	}

	lab, err := netlab.New(t.Context(), netlab.Config{Hosts: 3, HubAddrs: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("delete the lab: %v", err)
		}
	})
	raw, err := json.Marshal(lab.Layout)
	if err != nil {
		t.Fatal(err)
	}
	inner := lab.Hub.Command(t.Context(), binary(t), "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=150s")
	inner.Env = append(os.Environ(), labEnv+"="+string(raw))
	out, err := inner.CombinedOutput()
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		t.Log("in hub| " + line)
	}
	if err != nil {
		t.Fatalf("the test inside the hub namespace %s failed: %v (its output is above)", lab.Hub.Name, err)
	}
}

// Piece size and payload of the test torrent: 64 pieces.
const (
	clientPieceLen = 64 << 10
	clientDataLen  = 4 << 20
)

// trackerClientsInHub is the scenario, run inside the hub.
func trackerClientsInHub(t *testing.T, lay netlab.Layout) {
	dir := t.TempDir()
	logs := &clientLogs{}
	t.Cleanup(func() {
		if t.Failed() {
			logs.dump(t)
		}
	})
	a, b, c := lay.Hosts[0], lay.Hosts[1], lay.Hosts[2]

	data := make([]byte, clientDataLen)
	rng := rand.New(rand.NewChaCha8([32]byte{'t', 'r', 'k'}))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	const name = "payload.bin"

	// The masters: a TLS cluster on the hub's loopback, each master's
	// trackers (HTTP and UDP, one port) on its own bridge address.
	ids := []string{"m1", "m2", "m3"}
	procs, mlist, certs, trk := trackerMasters(t, dir, lay, ids)
	for _, id := range ids {
		logs.add(filepath.Join(dir, id+".log"))
	}
	waitClusterLeader(t, mlist, certs)

	// One tier with every master's URLs (BEP 12): a client moves on to
	// the next when one does not answer.
	torrent, hash, err := tracker.MakeTorrent(bytes.NewReader(data), tracker.TorrentSpec{Name: name, PieceLength: clientPieceLen,
		Announce: [][]string{append(slices.Clone(trk.http), trk.udp...)}})
	if err != nil {
		t.Fatal(err)
	}
	torrentPath := filepath.Join(dir, "test.torrent")
	if err := os.WriteFile(torrentPath, torrent, 0o600); err != nil {
		t.Fatal(err)
	}

	// A: Transmission seeds the file it already has.
	seedDir := filepath.Join(dir, "a-data")
	os.MkdirAll(seedDir, 0o700)
	if err := os.WriteFile(filepath.Join(seedDir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
	clients := []*exec.Cmd{startTransmission(t, dir, a, seedDir, torrentPath, logs)}
	all := []int{0, 1, 2}
	trk.waitScrape(t, "every master to count Transmission as a seeder", hash, all, func(s scrapeCounts) bool { return s.complete >= 1 })

	// B: aria2 downloads through the tracker and keeps seeding.
	bDir := filepath.Join(dir, "b-data")
	clients = append(clients, startAria2(t, dir, b, bDir, torrentPath, logs))
	waitBytes(t, 60*time.Second, "aria2", filepath.Join(bDir, name), data)

	// The leader dies. C, started after, must still find A and B: the
	// swarm is replicated, and the tier lists the survivors.
	leader := waitClusterLeader(t, mlist, certs)
	dead := slices.Index(ids, leader)
	if err := procs.Kill(dead); err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGKILLed the leader %s", leader)
	cDir := filepath.Join(dir, "c-data")
	cmd, cLog := startLibtorrent(t, dir, c, cDir, torrentPath, logs)
	clients = append(clients, cmd)
	poll.Until(t, 60*time.Second, "libtorrent, started after the leader's death, to finish having met Transmission and aria2", func() bool {
		st, ok := lastLibtorrentStatus(cLog)
		return ok && st.IsSeeding && slices.Contains(st.PeersSeen, a.Addr.String()) && slices.Contains(st.PeersSeen, b.Addr.String())
	})
	waitBytes(t, 10*time.Second, "libtorrent", filepath.Join(cDir, name), data)
	st, _ := lastLibtorrentStatus(cLog)
	t.Logf("libtorrent met %v; its last tracker messages: %q", st.PeersSeen, st.Tracker)

	// Three seeders, two completed downloads, all acknowledged. The
	// clients die without a stopped event, so nothing re-announces; then
	// every master is SIGKILLed and restarted, and the swarm must still
	// be there, on every master.
	full := func(s scrapeCounts) bool { return s.complete == 3 && s.incomplete == 0 && s.downloaded >= 2 }
	survivors := slices.DeleteFunc(slices.Clone(all), func(i int) bool { return i == dead })
	trk.waitScrape(t, "the surviving masters to count 3 seeders and 2 completed downloads", hash, survivors, full)
	for _, cmd := range clients {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	for i := range ids {
		if err := procs.Kill(i); err != nil {
			t.Fatal(err)
		}
	}
	t.Log("SIGKILLed every master; restarting them")
	for i := range ids {
		if err := procs.Start(i); err != nil {
			t.Fatal(err)
		}
	}
	waitClusterLeader(t, mlist, certs)
	got := trk.waitScrape(t, "every restarted master's HTTP scrape to report the swarm: 3 seeders, 2 completed downloads", hash, all, full)
	t.Logf("after restarting every master, their scrapes say %+v", got)
}

// trackerMasters starts one TLS master per ID inside the hub, as
// tlsMasters does, but each with its own trackers: HTTP and UDP on port
// 6969 of its own bridge address (lay.HubAddrs[i]).
func trackerMasters(t *testing.T, dir string, lay netlab.Layout, ids []string) (*proccluster.Cluster, string, pki, *clusterTracker) {
	t.Helper()
	trk := &clusterTracker{}
	for i := range ids {
		hostPort := lay.HubAddrs[i].String() + ":6969"
		trk.http = append(trk.http, "http://"+hostPort+"/announce")
		trk.udp = append(trk.udp, "udp://"+hostPort+"/announce")
		trk.scrapes = append(trk.scrapes, "http://"+hostPort+"/scrape")
	}
	c, addrs, certs := tlsMastersWith(t, dir, ids, func(i int, _ string) []string {
		hostPort := lay.HubAddrs[i].String() + ":6969"
		return []string{"--tracker-http", hostPort, "--tracker-udp", hostPort, "--tracker-interval", "20s"}
	})
	return c, addrs, certs, trk
}

// waitClusterLeader polls `cluster status` until the reachable masters
// agree on a leader, and returns it.
func waitClusterLeader(t *testing.T, mlist string, certs pki) string {
	t.Helper()
	var leader string
	poll.Until(t, 30*time.Second, "a leader the masters agree on", func() bool {
		rows, _ := clusterStatus(t, mlist, certs.ca()...)
		leader = leaderOf(rows)
		return leader != ""
	})
	return leader
}

// clusterTracker is the masters' tracker URLs, in master order.
type clusterTracker struct{ http, udp, scrapes []string }

// waitScrape polls the HTTP scrape of hash on each of masters until every
// one answers with counts that satisfy ok, and returns them. It fails t
// after 30 s, with what each master said last.
func (trk *clusterTracker) waitScrape(t *testing.T, what string, hash tracker.InfoHash, masters []int, ok func(scrapeCounts) bool) []scrapeCounts {
	t.Helper()
	var last []string
	var counts []scrapeCounts
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := poll.Wait(ctx, func() bool {
		last, counts = last[:0], counts[:0]
		all := true
		for _, i := range masters {
			s, answered := scrape(t, trk.scrapes[i], hash)
			counts = append(counts, s)
			last = append(last, fmt.Sprintf("%s answered=%v %+v", trk.scrapes[i], answered, s))
			all = all && answered && ok(s)
		}
		return all
	})
	if err != nil {
		t.Fatalf("timed out after 30s waiting for %s; last scrapes:\n%s", what, strings.Join(last, "\n"))
	}
	return counts
}

// clientLogs remembers the log files of what the test started, to print
// their tails when it fails.
type clientLogs struct{ paths []string }

func (l *clientLogs) add(path string) string { l.paths = append(l.paths, path); return path }

func (l *clientLogs) dump(t *testing.T) {
	for _, p := range l.paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Logf("--- %s: %v", p, err)
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		t.Logf("--- last %d lines of %s:\n%s", min(len(lines), 40), filepath.Base(p), strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
}

// startIn starts name with args inside ns, its output appended to logPath,
// and SIGKILLs it by PID when the test ends.
func startIn(t *testing.T, ns netlab.NS, logPath string, name string, args ...string) *exec.Cmd {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Not t.Context(): it ends before Cleanup runs, and the failure
	// report below still asks the clients for their state.
	cmd := ns.Command(context.Background(), name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s in %s: %v", name, ns.Name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

type scrapeCounts struct{ complete, incomplete, downloaded int64 }

// scrape asks the HTTP scrape at scrapeURL for hash's counts, and says
// whether it answered.
func scrape(t *testing.T, scrapeURL string, hash tracker.InfoHash) (scrapeCounts, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scrapeURL+"?info_hash="+url.QueryEscape(string(hash[:])), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return scrapeCounts{}, false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return scrapeCounts{}, false
	}
	v, err := tracker.DecodeBencode(body)
	if err != nil {
		t.Fatalf("%s answered bencode that does not parse (%v): %q", scrapeURL, err, body)
	}
	top, _ := v.(map[string]any)
	files, _ := top["files"].(map[string]any)
	e, _ := files[string(hash[:])].(map[string]any)
	n := func(k string) int64 { x, _ := e[k].(int64); return x }
	return scrapeCounts{complete: n("complete"), incomplete: n("incomplete"), downloaded: n("downloaded")}, true
}

// startTransmission runs transmission-daemon 3.00 in ns as the seeder and
// adds the torrent over its RPC, with the data already in seedDir.
// Transmission never dials a peer it got from a tracker on loopback and is
// shy on private networks too; as the seeder it only needs to accept.
func startTransmission(t *testing.T, dir string, ns netlab.NS, seedDir, torrent string, logs *clientLogs) *exec.Cmd {
	cfg := filepath.Join(dir, "a-transmission")
	os.MkdirAll(cfg, 0o700)
	settings := map[string]any{
		"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
		"port-forwarding-enabled": false, "blocklist-enabled": false,
		"bind-address-ipv4": ns.Addr.String(), "bind-address-ipv6": "::1",
		"peer-port": 51413, "peer-port-random-on-start": false,
		"rpc-enabled": true, "rpc-bind-address": ns.Addr.String(), "rpc-port": 9091,
		"rpc-authentication-required": false, "rpc-whitelist-enabled": false, "rpc-host-whitelist-enabled": false,
		"download-dir": seedDir, "incomplete-dir-enabled": false, "start-added-torrents": true,
		"ratio-limit-enabled": false, "idle-seeding-limit-enabled": false, "message-level": 2,
	}
	b, _ := json.MarshalIndent(settings, "", "  ")
	if err := os.WriteFile(filepath.Join(cfg, "settings.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := startIn(t, ns, logs.add(filepath.Join(dir, "a-transmission.log")), "transmission-daemon", "-f", "-g", cfg)
	rpc := ns.Addr.String() + ":9091"
	remote := func(args ...string) (string, error) {
		// Not t.Context(): the Cleanup below runs after it has ended.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "transmission-remote", append([]string{rpc}, args...)...).CombinedOutput()
		return string(out), err
	}
	poll.Until(t, 20*time.Second, "Transmission's RPC to answer", func() bool {
		_, err := remote("-l")
		return err == nil
	})
	if out, err := remote("-a", torrent, "-w", seedDir); err != nil || !strings.Contains(out, "success") {
		t.Fatalf("transmission-remote -a: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := remote("-t", "all", "-i", "-it", "-ip", "-l")
			t.Logf("--- Transmission's view of the torrent:\n%s", out)
		}
	})
	poll.Until(t, 30*time.Second, "Transmission to verify the data and seed", func() bool {
		out, err := remote("-t", "all", "-i")
		// 3.00 says Idle for a seeder nobody is downloading from.
		return err == nil && strings.Contains(out, "Percent Done: 100%") && (strings.Contains(out, "State: Seeding") || strings.Contains(out, "State: Idle"))
	})
	return cmd
}

// startAria2 runs aria2c in ns: it downloads into dataDir and then seeds
// for ever (--seed-ratio=0.0 without --seed-time).
func startAria2(t *testing.T, dir string, ns netlab.NS, dataDir, torrent string, logs *clientLogs) *exec.Cmd {
	os.MkdirAll(dataDir, 0o700)
	log := logs.add(filepath.Join(dir, "b-aria2.log"))
	cmd := startIn(t, ns, filepath.Join(dir, "b-aria2.out"), "aria2c",
		"--dir="+dataDir, "--listen-port=6881", "--disable-ipv6=true",
		"--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
		"--seed-ratio=0.0", "--file-allocation=none", "--summary-interval=0",
		"--log="+log, "--log-level=info", "--console-log-level=warn", torrent)
	logs.add(filepath.Join(dir, "b-aria2.out"))
	return cmd
}

// libtorrentStatus is one status line of testdata/trackerclients/lt_client.py.
type libtorrentStatus struct {
	Progress  float64  `json:"progress"`
	State     string   `json:"state"`
	IsSeeding bool     `json:"is_seeding"`
	PeersSeen []string `json:"peers_seen"`
	Tracker   []string `json:"tracker"`
}

// startLibtorrent runs testdata/trackerclients/lt_client.py with Debian's
// python3 (which has python3-libtorrent) in ns and returns it and its log.
func startLibtorrent(t *testing.T, dir string, ns netlab.NS, dataDir, torrent string, logs *clientLogs) (*exec.Cmd, string) {
	os.MkdirAll(dataDir, 0o700)
	script, err := filepath.Abs(filepath.Join("testdata", "trackerclients", "lt_client.py"))
	if err != nil {
		t.Fatal(err)
	}
	log := logs.add(filepath.Join(dir, "c-libtorrent.log"))
	cmd := startIn(t, ns, log, "/usr/bin/python3", script, torrent, dataDir, ns.Addr.String()+":6881")
	return cmd, log
}

// lastLibtorrentStatus returns the last complete status line in log.
func lastLibtorrentStatus(log string) (libtorrentStatus, bool) {
	b, err := os.ReadFile(log)
	if err != nil {
		return libtorrentStatus{}, false
	}
	var st libtorrentStatus
	ok := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var s libtorrentStatus
		if json.Unmarshal(sc.Bytes(), &s) == nil {
			st, ok = s, true
		}
	}
	return st, ok
}

// waitBytes polls until path holds exactly want.
func waitBytes(t *testing.T, timeout time.Duration, who, path string, want []byte) {
	t.Helper()
	poll.Until(t, timeout, who+" to write the whole file, byte for byte", func() bool {
		got, err := os.ReadFile(path)
		return err == nil && bytes.Equal(got, want)
	})
}
