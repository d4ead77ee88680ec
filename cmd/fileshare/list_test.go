package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/master"
	"fileshare/master/mastertest"
)

// listCluster starts three TLS masters whose peer leases outlast the test
// and returns them, their addresses and the CA path for --trusted-ca-file.
func listCluster(t *testing.T) (c *mastertest.T, masters, ca string) {
	t.Helper()
	c = mastertest.New(t, 3, mastertest.Options{TLS: true, Config: func(cfg *master.Config) { cfg.PeerLease = 5 * time.Minute }})
	return c, strings.Join(c.Addrs(), ","), filepath.Join(c.TLSDir(), "ca.pem")
}

// joinWith joins a new peer at addr and registers files for it.
func joinWith(t *testing.T, c *mastertest.T, addr string, files ...client.FileEntry) client.Identity {
	t.Helper()
	id, err := client.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	pc := c.PeerClient(id)
	if _, err := pc.Join(t.Context(), id, addr); err != nil {
		t.Fatalf("join %s: %v", addr, err)
	}
	if len(files) > 0 {
		if _, err := pc.Register(t.Context(), id, files); err != nil {
			t.Fatalf("register for %s: %v", addr, err)
		}
	}
	return id
}

// entry is a file entry with an ID made of prefix padded with fill.
func entry(prefix, fill, name string) client.FileEntry {
	return client.FileEntry{ID: prefix + strings.Repeat(fill, 64-len(prefix)), Name: name, Size: 1 << 20, PieceSize: 1 << 18}
}

var nextPageRE = regexp.MustCompile(`next page: --after (\S+) \(or --all\)`)

// search never cuts its results silently: a cut page says how many
// matched in all and how to get the next page, the pages together list
// every match once, --all lists them all, JSON carries the total and the
// cursor, and a page size outside 1..MaxSearchLimit is refused with a
// message saying what to give.
func TestSearchSaysWhatItCut(t *testing.T) {
	c, masters, ca := listCluster(t)
	var files []client.FileEntry
	for i := range 25 {
		files = append(files, entry(fmt.Sprintf("%02x", i), "c", fmt.Sprintf("file-%02d.txt", i)))
	}
	files = append(files, entry("ff", "0", "other.bin"))
	joinWith(t, c, "127.0.0.1:9001", files...)
	conn := []string{"--masters", masters, "--trusted-ca-file", ca, "--timeout", "5s"}
	search := func(args ...string) (string, string, int) {
		return fileshare(t, 20*time.Second, append(append([]string{"search"}, args...), conn...)...)
	}

	// Table pages: a footer with the position, the total and the cursor.
	wantFooters := []string{
		"showing 10 of 25 matching files; next page: --after ",
		"showing 11–20 of 25 matching files; next page: --after ",
		"showing 21–25 of 25 matching files; this is the last page",
	}
	seen := map[string]bool{}
	var after []string
	for i, want := range wantFooters {
		out, stderr, code := search(append([]string{"file", "--limit", "10"}, after...)...)
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("page %d: exit %d, want a footer %q, got:\n%s\nstderr: %s", i+1, code, want, out, stderr)
		}
		for _, name := range regexp.MustCompile(`file-\d\d\.txt`).FindAllString(out, -1) {
			if seen[name] {
				t.Fatalf("page %d lists %s again", i+1, name)
			}
			seen[name] = true
		}
		if m := nextPageRE.FindStringSubmatch(out); m != nil {
			after = []string{"--after", m[1]}
		}
	}
	if len(seen) != 25 {
		t.Fatalf("the three pages listed %d distinct files, want 25", len(seen))
	}
	// Nothing cut, no footer.
	if out, _, code := search("other"); code != 0 || !strings.Contains(out, "other.bin") || strings.Contains(out, "showing") {
		t.Fatalf("search with every match on the page: exit %d, want no footer:\n%s", code, out)
	}

	// JSON: total and next; following next lists everything once.
	var page searchPage
	ids := map[string]bool{}
	next := ""
	for pages := 0; pages == 0 || next != ""; pages++ {
		if pages > 5 {
			t.Fatal("JSON paging did not end after 5 pages of 10")
		}
		args := []string{"file", "-o", "json", "--limit", "10"}
		if next != "" {
			args = append(args, "--after", next)
		}
		out, stderr, code := search(args...)
		if code != 0 || json.Unmarshal([]byte(out), &page) != nil {
			t.Fatalf("search -o json: exit %d, output:\n%s\nstderr: %s", code, out, stderr)
		}
		if page.Total != 25 || len(page.Files) == 0 || len(page.Files) > 10 {
			t.Fatalf("JSON page %d: total %d with %d files, want 25 with 1..10", pages+1, page.Total, len(page.Files))
		}
		for _, f := range page.Files {
			if ids[f.ID] {
				t.Fatalf("JSON paging lists %s twice", f.Name)
			}
			ids[f.ID] = true
		}
		next = page.Next
	}
	if len(ids) != 25 {
		t.Fatalf("JSON pages listed %d files, want 25", len(ids))
	}
	if !strings.Contains(mustRun(t, search, "-o", "json", "other"), `"next": ""`) {
		t.Fatal(`search -o json of the last page lacks "next": ""`)
	}

	// --all follows the cursors.
	out, stderr, code := search("--all", "--limit", "7", "-o", "json")
	if code != 0 || json.Unmarshal([]byte(out), &page) != nil || page.Total != 26 || len(page.Files) != 26 || page.Next != "" {
		t.Fatalf("search --all --limit 7: exit %d, want all 26 files and no next:\n%s\nstderr: %s", code, out, stderr)
	}
	if out := mustRun(t, search, "--all", "--limit", "7"); strings.Count(out, "\n") != 27 || strings.Contains(out, "showing") {
		t.Fatalf("search --all table: want a header and 26 rows without a footer, got:\n%s", out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--limit", "0"}, "--limit 0: give a page size from 1 to 10000"},
		{[]string{"--limit", "-1"}, "--limit -1: give a page size from 1 to 10000"},
		{[]string{"--limit", "10001"}, "--limit 10001: give a page size from 1 to 10000"},
		{[]string{"--after", "not-a-cursor"}, "--after: "},
	} {
		if _, stderr, code := search(tc.args...); code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("search %v: exit %d, want 1 and %q, stderr:\n%s", tc.args, code, tc.want, stderr)
		}
	}
}

// mustRun runs a CLI call and returns its stdout, failing on a non-zero exit.
func mustRun(t *testing.T, run func(...string) (string, string, int), args ...string) string {
	t.Helper()
	out, stderr, code := run(args...)
	if code != 0 {
		t.Fatalf("%v: exit %d\n%s\nstderr: %s", args, code, out, stderr)
	}
	return out
}

// peers lists every joined peer with its address and file count; holders
// lists every holder of one file with the name each uses, found by name,
// full ID or a unique ID prefix; an ambiguous prefix lists the candidates
// and exits 1; an unknown file exits 1 and says so.
func TestPeersAndHoldersProcesses(t *testing.T) {
	c, masters, ca := listCluster(t)
	song := entry("5a5a5a5a", "1", "music/song.mp3")
	alice := joinWith(t, c, "127.0.0.1:9101", song, entry("abcdef01", "1", "twin-1"), entry("abcdef01", "2", "twin-2"))
	bob := joinWith(t, c, "127.0.0.1:9102", client.FileEntry{ID: song.ID, Name: "copy of song.mp3", Size: song.Size, PieceSize: song.PieceSize})
	conn := []string{"--masters", masters, "--trusted-ca-file", ca, "--timeout", "5s"}
	run := func(args ...string) (string, string, int) {
		return fileshare(t, 20*time.Second, append(args, conn...)...)
	}

	out := mustRun(t, run, "peers")
	for _, want := range []string{"ID", "ADDRESS", "JOINED", "FILES", alice.PeerID, bob.PeerID, "127.0.0.1:9101", "127.0.0.1:9102", "2 peers"} {
		if !strings.Contains(out, want) {
			t.Fatalf("peers table lacks %q:\n%s", want, out)
		}
	}
	var ps []peerResult
	if err := json.Unmarshal([]byte(mustRun(t, run, "peers", "-o", "json")), &ps); err != nil || len(ps) != 2 {
		t.Fatalf("peers -o json: %v, %+v; want 2 peers", err, ps)
	}
	files := map[string]int{}
	for _, p := range ps {
		files[p.ID] = p.Files
		if _, err := time.Parse(time.RFC3339, p.JoinedAt); err != nil {
			t.Errorf("peer %s joined_at %q: %v", p.ID, p.JoinedAt, err)
		}
	}
	if files[alice.PeerID] != 3 || files[bob.PeerID] != 1 {
		t.Fatalf("peers -o json file counts = %v, want alice 3 and bob 1", files)
	}

	for _, ref := range []string{"song.mp3", song.ID, song.ID[:8]} {
		out := mustRun(t, run, "holders", ref)
		for _, want := range []string{song.ID, "PEER", alice.PeerID, bob.PeerID, "music/song.mp3", "copy of song.mp3", "127.0.0.1:9102", "2 holders"} {
			if !strings.Contains(out, want) {
				t.Fatalf("holders %s lacks %q:\n%s", ref, want, out)
			}
		}
	}
	var hr holdersResult
	if err := json.Unmarshal([]byte(mustRun(t, run, "holders", song.ID[:10], "-o", "json")), &hr); err != nil || hr.File.ID != song.ID || hr.File.Holders != 2 || len(hr.Holders) != 2 {
		t.Fatalf("holders -o json: %v, %+v; want song with 2 holders", err, hr)
	}

	_, stderr, code := run("holders", "abcdef01")
	if code != 1 || !strings.Contains(stderr, "twin-1") || !strings.Contains(stderr, "twin-2") || !strings.Contains(stderr, "fits several files") {
		t.Fatalf("holders of an ambiguous prefix: exit %d, want 1 and both candidates, stderr:\n%s", code, stderr)
	}
	if _, stderr, code := run("holders", "no-such-file"); code != 1 || !strings.Contains(stderr, "nothing named like") {
		t.Fatalf("holders of an unknown file: exit %d, stderr:\n%s", code, stderr)
	}
	if _, stderr, code := run("peers", "-o", "yaml"); code != 1 || !strings.Contains(stderr, "use table or json") {
		t.Fatalf("peers -o yaml: exit %d, stderr:\n%s", code, stderr)
	}
}
