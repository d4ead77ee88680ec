package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"fileshare/internal/freeport"
	"fileshare/internal/poll"
	"fileshare/master/mastertest"
	"fileshare/peer"
	"fileshare/transport"
)

// startMasters runs a 3-master cluster with TLS in this process on
// loopback and returns its --masters value and the path of its CA, for
// --trusted-ca-file. The masters stop at cleanup.
func startMasters(t *testing.T) (masters, ca string) {
	t.Helper()
	c := mastertest.New(t, 3, mastertest.Options{TLS: true})
	return strings.Join(c.Addrs(), ","), filepath.Join(c.TLSDir(), "ca.pem")
}

// peerIDRE finds the peer ID in a peer daemon's "sharing" log line.
var peerIDRE = regexp.MustCompile(`msg=sharing .*peer=(\S+)`)

func randomFile(t *testing.T, path string, seed uint64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed)}).Read(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func searchJSON(t *testing.T, masters, ca string, words ...string) []searchResult {
	t.Helper()
	out, stderr, code := fileshare(t, 20*time.Second, append([]string{"search", "-o", "json", "--masters", masters, "--trusted-ca-file", ca, "--trusted-ca-file", ca, "--timeout", "3s"}, words...)...)
	if code != 0 {
		return nil
	}
	var page searchPage
	if err := json.Unmarshal([]byte(out), &page); err != nil {
		t.Fatalf("search -o json printed invalid JSON (%v):\n%s\nstderr: %s", err, out, stderr)
	}
	return page.Files
}

// The peer daemon shares a folder; search finds its files (table and
// JSON); get downloads one by name, byte for byte; an ambiguous name lists
// the candidates and exits 1; get --seed adds a holder until interrupted;
// SIGTERM makes the daemon leave the index.
func TestPeerSearchGetProcesses(t *testing.T) {
	masters, ca := startMasters(t)
	dir := t.TempDir()
	share := filepath.Join(dir, "share")
	song := randomFile(t, filepath.Join(share, "music", "song.mp3"), 1, 3<<20)
	os.WriteFile(filepath.Join(share, "report-2023.txt"), []byte("2023"), 0o644)
	os.WriteFile(filepath.Join(share, "report-2024.txt"), []byte("2024"), 0o644)
	daemon := startProc(t, filepath.Join(dir, "peer.log"), "peer", "--masters", masters, "--trusted-ca-file", ca, "--data-dir", filepath.Join(dir, "data"),
		"--share", share, "--listen", "127.0.0.1:0", "--rescan", "200ms")

	poll.Until(t, 30*time.Second, "the daemon's files in search", func() bool { return len(searchJSON(t, masters, ca)) == 3 })
	var alice string // the daemon's peer ID, derived from the key it made
	poll.Until(t, 10*time.Second, "the daemon to log its peer ID", func() bool {
		log, _ := os.ReadFile(daemon.log)
		if m := peerIDRE.FindSubmatch(log); m != nil {
			alice = string(m[1])
		}
		return alice != ""
	})
	rs := searchJSON(t, masters, ca, "song")
	if len(rs) != 1 || rs[0].Name != "music/song.mp3" || rs[0].Size != int64(len(song)) || rs[0].Holders != 1 || len(rs[0].ID) != 64 {
		t.Fatalf("search song = %+v, want music/song.mp3 with 1 holder", rs)
	}
	out, _, code := fileshare(t, 20*time.Second, "search", "report", "--masters", masters, "--trusted-ca-file", ca)
	if code != 0 || !strings.Contains(out, "ID") || !strings.Contains(out, "HOLDERS") || strings.Count(out, "report-202") != 2 {
		t.Fatalf("search table (exit %d):\n%s", code, out)
	}

	dest := filepath.Join(dir, "got", "song.mp3")
	out, stderr, code := fileshare(t, 60*time.Second, "get", "song.mp3", "--masters", masters, "--trusted-ca-file", ca, "--out", dest)
	if code != 0 {
		t.Fatalf("get exited %d:\n%s\n%s", code, out, stderr)
	}
	if b, _ := os.ReadFile(dest); !bytes.Equal(b, song) {
		t.Fatal("downloaded song differs from the original")
	}
	if !strings.Contains(stderr, "saved "+dest) || !strings.Contains(stderr, alice+" 12") {
		t.Fatalf("get's summary (on stderr) lacks the path or the holder:\n%s", stderr)
	}

	_, stderr, code = fileshare(t, 20*time.Second, "get", "report", "--masters", masters, "--trusted-ca-file", ca, "--out", filepath.Join(dir, "r"))
	if code != 1 || !strings.Contains(stderr, "report-2023.txt") || !strings.Contains(stderr, "report-2024.txt") || !strings.Contains(stderr, "give the full name or the ID") {
		t.Fatalf("ambiguous get: exit %d, stderr:\n%s", code, stderr)
	}
	_, stderr, code = fileshare(t, 20*time.Second, "get", "no-such-file", "--masters", masters, "--trusted-ca-file", ca)
	if code != 1 || !strings.Contains(stderr, "nothing named like") {
		t.Fatalf("get of an unknown name: exit %d, stderr:\n%s", code, stderr)
	}
	_, stderr, code = fileshare(t, 20*time.Second, "get", "song.mp3", "--masters", masters, "--trusted-ca-file", ca, "--out", dest)
	if code != 1 || !strings.Contains(stderr, "already exists") {
		t.Fatalf("get over an existing file: exit %d, stderr:\n%s", code, stderr)
	}

	seeder := startProc(t, filepath.Join(dir, "seed.log"), "get", rs[0].ID, "--masters", masters, "--trusted-ca-file", ca, "--out", filepath.Join(dir, "seeded.mp3"), "--seed")
	poll.Until(t, 30*time.Second, "the seeder as a second holder", func() bool {
		rs := searchJSON(t, masters, ca, "song")
		return len(rs) == 1 && rs[0].Holders == 2
	})
	seeder.terminate(t, "get --seed")
	if rs := searchJSON(t, masters, ca, "song"); len(rs) != 1 || rs[0].Holders != 1 {
		t.Fatalf("after the seeder stopped, search song = %+v, want 1 holder", rs)
	}

	daemon.terminate(t, "peer")
	if rs := searchJSON(t, masters, ca); len(rs) != 0 {
		t.Fatalf("after the peer left, search lists %+v", rs)
	}
}

var (
	resumedRE = regexp.MustCompile(`resumed (\d+)/(\d+) pieces`)
	fetchedRE = regexp.MustCompile(`fetched (\d+) pieces, resumed (\d+)`)
	piecesRE  = regexp.MustCompile(`\((\d+)/(\d+) pieces\)`)
)

// A `fileshare get` killed with SIGKILL part way continues, when run again,
// from the pieces it had verified: it fetches only the rest, and the file
// is byte-identical.
func TestGetResumesAfterSIGKILL(t *testing.T) {
	masters, ca := startMasters(t)
	dir := t.TempDir()
	share := filepath.Join(dir, "share")
	data := randomFile(t, filepath.Join(share, "big.bin"), 2, 32<<20)
	caTLS, err := transport.LoadTLS("", "", ca)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := peer.New(peer.Config{Masters: splitList(masters), CA: caTLS, DataDir: filepath.Join(dir, "holder"), ShareDir: share, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := holder.Rescan(t.Context()); err != nil {
		t.Fatal(err)
	}

	dest := filepath.Join(dir, "out", "big.bin")
	first := startProc(t, filepath.Join(dir, "first.log"), "get", "big.bin", "--masters", masters, "--trusted-ca-file", ca, "--out", dest, "--limit-rate", "8MiB")
	poll.Until(t, 60*time.Second, "the first get to verify and record some pieces", func() bool {
		log, _ := os.ReadFile(first.log)
		m := piecesRE.FindAllSubmatch(log, -1)
		if len(m) == 0 {
			return false
		}
		done, _ := strconv.Atoi(string(m[len(m)-1][1]))
		_, err := os.Stat(dest + ".fileshare-resume")
		return done > 0 && err == nil
	})
	first.kill()
	firstLog, _ := os.ReadFile(first.log)
	if bytes.Contains(firstLog, []byte("saved ")) {
		t.Fatalf("the first get finished before it was killed:\n%s", firstLog)
	}

	out, stderr, code := fileshare(t, 60*time.Second, "get", "big.bin", "--masters", masters, "--trusted-ca-file", ca, "--out", dest)
	if code != 0 {
		t.Fatalf("second get exited %d:\n%s\n%s", code, out, stderr)
	}
	r := resumedRE.FindStringSubmatch(stderr)
	f := fetchedRE.FindStringSubmatch(stderr)
	if r == nil || f == nil {
		t.Fatalf("second get does not report resumed and fetched pieces on stderr:\n%s", stderr)
	}
	resumed, _ := strconv.Atoi(r[1])
	total, _ := strconv.Atoi(r[2])
	fetched, _ := strconv.Atoi(f[1])
	if resumed == 0 || fetched+resumed != total || total != 128 {
		t.Fatalf("resumed %d, fetched %d of %d pieces; want some resumed and only the rest fetched:\n%s", resumed, fetched, total, out)
	}
	if sha256File(t, dest) != sha256.Sum256(data) {
		t.Fatal("resumed download differs from the original")
	}
	for _, leftover := range []string{dest + ".fileshare-partial", dest + ".fileshare-resume"} {
		if _, err := os.Stat(leftover); err == nil {
			t.Fatalf("%s left behind", leftover)
		}
	}
	t.Logf("first run verified pieces before SIGKILL; second run resumed %d and fetched %d of %d", resumed, fetched, total)
}

func sha256File(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestPeerCLIMistakesGetClearErrors(t *testing.T) {
	dir := t.TempDir()
	nowhere := freeport.Loopback(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"peer without share", []string{"peer", "--data-dir", dir}, "--share is required"},
		{"peer without data dir", []string{"peer", "--share", dir}, "--data-dir is required"},
		{"peer share not a folder", []string{"peer", "--data-dir", dir, "--share", filepath.Join(dir, "missing")}, "is not a folder"},
		{"search bad output", []string{"search", "-o", "yaml"}, "use table or json"},
		{"search no master", []string{"search", "x", "--masters", nowhere, "--timeout", "1s"}, "check --masters"},
		{"get no args", []string{"get"}, "accepts 1 arg"},
		{"get bad rate", []string{"get", "x", "--limit-rate", "fast"}, "--limit-rate"},
		{"get no master", []string{"get", "x", "--masters", nowhere, "--stall-timeout", "1s"}, "check --masters"},
		{"demo bad size", []string{"demo", "--size", "1KiB"}, "--size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := fileshare(t, 30*time.Second, tc.args...)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, want 1 with %q in stderr:\n%s", code, tc.want, stderr)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Fatalf("the binary panicked:\n%s", stderr)
			}
		})
	}
}

func TestParseBytesAndHumanBytes(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "1048576": 1 << 20, "10MiB": 10 << 20, "500KiB": 500 << 10, "2M": 2 << 20, "1.5GB": 1.5e9, "8MiB/s": 8 << 20, "3kb": 3000, "7B": 7} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"fast", "-1MiB", "0", "MiB"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) succeeded, want an error", bad)
		}
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 64 << 20: "64.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
