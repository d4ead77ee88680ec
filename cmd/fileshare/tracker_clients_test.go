//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"fileshare/internal/netlab"
	"fileshare/internal/poll"
)

// labEnv carries the lab's netlab.Layout (JSON) to the copy of this test
// that runs inside the hub namespace.
const labEnv = "FILESHARE_TRACKER_LAB"

// Real, unmodified BitTorrent clients find each other only through the
// tracker. The layout, and why:
//
//   - netlab builds a hub namespace with a bridge and one namespace per
//     client, each with one veth into the bridge. A client sees nothing
//     but the lab (no route out, no loopback shared with another client),
//     and DHT, PEX, LSD, UPnP and NAT-PMP are off in every client, so a
//     peer it connects to came from a tracker reply.
//   - The test re-executes itself inside the hub. Everything it starts
//     there (trackers, the status CLI, its HTTP scrapes) runs in the hub
//     unchanged, with the helpers the other process tests use, and the
//     PIDs it holds are the programs' own. Clients start through
//     `ip netns exec CLIENT`, which also execs the program itself.
//   - Each client gets its own address on the bridge, so the tracker sees
//     distinct source IPs; none is 127.x, which Transmission 3.00 would
//     refuse to dial.
//
// The outer test only builds the lab, runs the inner one, prints its
// output, and deletes the lab, SIGKILLing by PID anything left inside.
func TestTrackerClientsFindEachOtherThroughTheTracker(t *testing.T) {
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
	for _, tool := range []string{"transmission-daemon", "transmission-remote", "aria2c", "opentracker"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" is not installed (apt-get install aria2 transmission-daemon opentracker)")
		}
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import libtorrent").Run(); err != nil {
		missing = append(missing, "/usr/bin/python3 cannot import libtorrent (apt-get install python3-libtorrent)")
	}
	if len(missing) > 0 {
		msg := "needs " + strings.Join(missing, "; ")
		if os.Getenv("FILESHARE_REQUIRE_ROOT_TESTS") == "1" {
			t.Fatal(msg + "; failing because FILESHARE_REQUIRE_ROOT_TESTS=1")
		}
		t.Skip(msg + "; set FILESHARE_REQUIRE_ROOT_TESTS=1 to make this a failure")
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

	trk := &testTracker{announce: "http://" + lay.HubAddrs[0].String() + ":6969/announce", scrapeURL: "http://" + lay.HubAddrs[0].String() + ":6969/scrape"}
	torrent, hash := makeTestTorrent(t, name, data, [][]string{{trk.announce}})
	torrentPath := filepath.Join(dir, "test.torrent")
	if err := os.WriteFile(torrentPath, torrent, 0o600); err != nil {
		t.Fatal(err)
	}
	startOpentracker(t, dir, lay, logs, hash)

	// A: Transmission seeds the file it already has.
	seedDir := filepath.Join(dir, "a-data")
	os.MkdirAll(seedDir, 0o700)
	if err := os.WriteFile(filepath.Join(seedDir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
	startTransmission(t, dir, a, seedDir, torrentPath, logs)
	poll.Until(t, 30*time.Second, "the tracker to count Transmission as a seeder", func() bool {
		return trk.scrape(t, hash).complete >= 1
	})

	// B: aria2 downloads through the tracker and keeps seeding.
	bDir := filepath.Join(dir, "b-data")
	startAria2(t, dir, b, bDir, torrentPath, logs)
	waitBytes(t, 60*time.Second, "aria2", filepath.Join(bDir, name), data)

	// C: libtorrent, started last, must find both A and B.
	cDir := filepath.Join(dir, "c-data")
	cLog := startLibtorrent(t, dir, c, cDir, torrentPath, logs)
	poll.Until(t, 60*time.Second, "libtorrent to finish and to have met Transmission and aria2", func() bool {
		st, ok := lastLibtorrentStatus(cLog)
		return ok && st.IsSeeding && slices.Contains(st.PeersSeen, a.Addr.String()) && slices.Contains(st.PeersSeen, b.Addr.String())
	})
	waitBytes(t, 10*time.Second, "libtorrent", filepath.Join(cDir, name), data)

	if got := trk.scrape(t, hash); got.complete < 3 {
		t.Fatalf("scrape after three clients completed: %+v, want complete >= 3", got)
	}
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
	cmd := ns.Command(t.Context(), name, args...)
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

// testTracker is the tracker the clients announce to.
type testTracker struct {
	announce  string // the announce URL
	scrapeURL string
}

// startOpentracker runs Debian's opentracker in the hub on its first extra
// address. Debian builds it whitelist-only, so hash is written to its
// whitelist first.
func startOpentracker(t *testing.T, dir string, lay netlab.Layout, logs *clientLogs, hash [20]byte) {
	// opentracker refuses to run as root: it chroots into root (which
	// the user nobody must be able to read) and reads the whitelist
	// there.
	root := filepath.Join(dir, "opentracker")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "whitelist.txt"), fmt.Appendf(nil, "%x\n", hash), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := lay.HubAddrs[0].String()
	startIn(t, lay.Hub, logs.add(filepath.Join(dir, "opentracker.log")), "opentracker", "-i", addr, "-p", "6969", "-P", "6969", "-w", "/whitelist.txt", "-d", root, "-u", "nobody")
	poll.Until(t, 10*time.Second, "opentracker to answer", func() bool {
		resp, err := http.Get("http://" + addr + ":6969/stats")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
}

type scrapeCounts struct{ complete, incomplete, downloaded int64 }

// scrape asks the tracker's HTTP scrape for hash's counts; zero counts
// if it does not answer.
func (trk *testTracker) scrape(t *testing.T, hash [20]byte) scrapeCounts {
	t.Helper()
	resp, err := http.Get(trk.scrapeURL + "?info_hash=" + url.QueryEscape(string(hash[:])))
	if err != nil {
		return scrapeCounts{}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return scrapeCounts{}
	}
	v, err := bdecode(body)
	if err != nil {
		t.Fatalf("scrape answered bencode that does not parse (%v): %q", err, body)
	}
	files, _ := v.(map[string]any)["files"].(map[string]any)
	e, _ := files[string(hash[:])].(map[string]any)
	n := func(k string) int64 { x, _ := e[k].(int64); return x }
	return scrapeCounts{complete: n("complete"), incomplete: n("incomplete"), downloaded: n("downloaded")}
}

// startTransmission runs transmission-daemon 3.00 in ns as the seeder and
// adds the torrent over its RPC, with the data already in seedDir.
// Transmission never dials a peer it got from a tracker on loopback and is
// shy on private networks too; as the seeder it only needs to accept.
func startTransmission(t *testing.T, dir string, ns netlab.NS, seedDir, torrent string, logs *clientLogs) {
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
	startIn(t, ns, logs.add(filepath.Join(dir, "a-transmission.log")), "transmission-daemon", "-f", "-g", cfg)
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
}

// startAria2 runs aria2c in ns: it downloads into dataDir and then seeds
// for ever (--seed-ratio=0.0 without --seed-time).
func startAria2(t *testing.T, dir string, ns netlab.NS, dataDir, torrent string, logs *clientLogs) {
	os.MkdirAll(dataDir, 0o700)
	log := logs.add(filepath.Join(dir, "b-aria2.log"))
	startIn(t, ns, filepath.Join(dir, "b-aria2.out"), "aria2c",
		"--dir="+dataDir, "--listen-port=6881", "--disable-ipv6=true",
		"--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
		"--seed-ratio=0.0", "--file-allocation=none", "--summary-interval=0",
		"--log="+log, "--log-level=info", "--console-log-level=warn", torrent)
	logs.add(filepath.Join(dir, "b-aria2.out"))
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
// python3 (which has python3-libtorrent) in ns and returns its log.
func startLibtorrent(t *testing.T, dir string, ns netlab.NS, dataDir, torrent string, logs *clientLogs) string {
	os.MkdirAll(dataDir, 0o700)
	script, err := filepath.Abs(filepath.Join("testdata", "trackerclients", "lt_client.py"))
	if err != nil {
		t.Fatal(err)
	}
	log := logs.add(filepath.Join(dir, "c-libtorrent.log"))
	startIn(t, ns, log, "/usr/bin/python3", script, torrent, dataDir, ns.Addr.String()+":6881")
	return log
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

// waitBytes polls until path holds exactly want, and fails saying how far
// the client got.
func waitBytes(t *testing.T, timeout time.Duration, who, path string, want []byte) {
	t.Helper()
	var size int
	poll.Until(t, timeout, who+" to write the whole file, byte for byte", func() bool {
		got, err := os.ReadFile(path)
		size = len(got)
		return err == nil && bytes.Equal(got, want)
	})
	_ = size
}

// makeTestTorrent builds a single-file v1 torrent of data with tiers as
// its announce-list (BEP 12) and returns it with its info-hash.
func makeTestTorrent(t *testing.T, name string, data []byte, tiers [][]string) ([]byte, [20]byte) {
	var pieces []byte
	for off := 0; off < len(data); off += clientPieceLen {
		h := sha1.Sum(data[off:min(off+clientPieceLen, len(data))])
		pieces = append(pieces, h[:]...)
	}
	info := map[string]any{"length": int64(len(data)), "name": name, "piece length": int64(clientPieceLen), "pieces": string(pieces)}
	var list []any
	for _, tier := range tiers {
		var urls []any
		for _, u := range tier {
			urls = append(urls, u)
		}
		list = append(list, urls)
	}
	infoB := bencode(info)
	hash := sha1.Sum(infoB)
	var buf bytes.Buffer
	buf.WriteString("d8:announce" + bstr(tiers[0][0]) + "13:announce-list" + string(bencode(list)) + "4:info")
	buf.Write(infoB)
	buf.WriteString("e")
	return buf.Bytes(), hash
}

func bstr(s string) string { return strconv.Itoa(len(s)) + ":" + s }

func bencode(v any) []byte {
	switch v := v.(type) {
	case int64:
		return []byte("i" + strconv.FormatInt(v, 10) + "e")
	case string:
		return []byte(bstr(v))
	case []any:
		b := []byte("l")
		for _, x := range v {
			b = append(b, bencode(x)...)
		}
		return append(b, 'e')
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b := []byte("d")
		for _, k := range keys {
			b = append(b, bstr(k)...)
			b = append(b, bencode(v[k])...)
		}
		return append(b, 'e')
	}
	panic(fmt.Sprintf("bencode: %T", v))
}

// bdecode decodes one bencoded value into int64, string, []any and
// map[string]any.
func bdecode(b []byte) (any, error) {
	v, rest, err := bdecodeOne(b)
	if err == nil && len(rest) > 0 {
		err = errors.New("trailing bytes")
	}
	return v, err
}

func bdecodeOne(b []byte) (any, []byte, error) {
	if len(b) == 0 {
		return nil, nil, io.ErrUnexpectedEOF
	}
	switch c := b[0]; {
	case c == 'i':
		end := bytes.IndexByte(b, 'e')
		if end < 0 {
			return nil, nil, io.ErrUnexpectedEOF
		}
		n, err := strconv.ParseInt(string(b[1:end]), 10, 64)
		return n, b[end+1:], err
	case c >= '0' && c <= '9':
		colon := bytes.IndexByte(b, ':')
		if colon < 0 {
			return nil, nil, io.ErrUnexpectedEOF
		}
		n, err := strconv.Atoi(string(b[:colon]))
		if err != nil || n < 0 || colon+1+n > len(b) {
			return nil, nil, errors.New("bad string length")
		}
		return string(b[colon+1 : colon+1+n]), b[colon+1+n:], nil
	case c == 'l' || c == 'd':
		var list []any
		rest := b[1:]
		for len(rest) > 0 && rest[0] != 'e' {
			var v any
			var err error
			if v, rest, err = bdecodeOne(rest); err != nil {
				return nil, nil, err
			}
			list = append(list, v)
		}
		if len(rest) == 0 {
			return nil, nil, io.ErrUnexpectedEOF
		}
		if c == 'l' {
			return list, rest[1:], nil
		}
		if len(list)%2 != 0 {
			return nil, nil, errors.New("odd dictionary")
		}
		m := map[string]any{}
		for i := 0; i < len(list); i += 2 {
			k, ok := list[i].(string)
			if !ok {
				return nil, nil, errors.New("non-string key")
			}
			m[k] = list[i+1]
		}
		return m, rest[1:], nil
	}
	return nil, nil, fmt.Errorf("unexpected byte %q", b[0])
}
