package master_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/master/mastertest"
	"fileshare/tracker"
	"fileshare/transport"
)

// trackerCluster is a 3-master TLS cluster whose every master serves an
// HTTP tracker on a loopback port of its own.
func trackerCluster(t *testing.T, adjust func(*master.TrackerConfig)) *mastertest.T {
	t.Helper()
	return mastertest.New(t, 3, mastertest.Options{TLS: true, Config: func(c *master.Config) {
		c.Tracker.HTTP = "127.0.0.1:0"
		if adjust != nil {
			adjust(&c.Tracker)
		}
	}})
}

// btPeer is one simulated BitTorrent client.
type btPeer struct {
	id    tracker.PeerID
	port  int
	local string // source IP, "" for the default
}

func newBTPeer(port int) btPeer {
	var p btPeer
	rand.Read(p.id[:])
	p.port = port
	return p
}

func randomHash() tracker.InfoHash {
	var h tracker.InfoHash
	rand.Read(h[:])
	return h
}

// escape %-escapes every byte, as many clients do.
func escape(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		fmt.Fprintf(&sb, "%%%02X", c)
	}
	return sb.String()
}

// announceReply is the part of an HTTP announce reply the tests read.
type announceReply struct {
	failure    string
	complete   int64
	incomplete int64
	peers      []int // ports of the compact IPv4 peers
}

func announce(t *testing.T, trackerAddr string, ih tracker.InfoHash, p btPeer, event string, left int) announceReply {
	t.Helper()
	q := fmt.Sprintf("info_hash=%s&peer_id=%s&port=%d&uploaded=0&downloaded=0&left=%d&compact=1&numwant=50", escape(ih[:]), escape(p.id[:]), p.port, left)
	if event != "" {
		q += "&event=" + event
	}
	body := get(t, p.local, "http://"+trackerAddr+"/announce?"+q)
	v, err := tracker.DecodeBencode(body)
	if err != nil {
		t.Fatalf("announce reply %q: %v", body, err)
	}
	d, _ := v.(map[string]any)
	var out announceReply
	if f, ok := d["failure reason"].(string); ok {
		out.failure = f
		return out
	}
	out.complete, _ = d["complete"].(int64)
	out.incomplete, _ = d["incomplete"].(int64)
	peers, _ := d["peers"].(string)
	for i := 0; i+6 <= len(peers); i += 6 {
		out.peers = append(out.peers, int(peers[i+4])<<8|int(peers[i+5]))
	}
	return out
}

func get(t *testing.T, localIP, url string) []byte {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func hasPort(ports []int, p int) bool {
	for _, q := range ports {
		if q == p {
			return true
		}
	}
	return false
}

// An acknowledged started survives the loss of the leader: the peer a
// follower acknowledged is in the peer list a surviving master serves
// after the leader is killed, and a restart of every master keeps it.
func TestTrackerStartedSurvivesLeaderLossAndFullRestart(t *testing.T) {
	c := trackerCluster(t, nil)
	lead := c.Leader()
	f := c.Follower(lead)
	ih := randomHash()
	seeder := newBTPeer(6881)
	if r := announce(t, c.Master(f).TrackerHTTPAddr(), ih, seeder, "started", 0); r.failure != "" {
		t.Fatalf("started refused: %s", r.failure)
	}
	c.Kill(lead)
	other := 3 - lead - f // the third master
	leecher := newBTPeer(6882)
	var r announceReply
	poll.Until(t, 20*time.Second, "the third master to list the seeder a follower acknowledged before the leader died", func() bool {
		r = announce(t, c.Master(other).TrackerHTTPAddr(), ih, leecher, "started", 100)
		return r.failure == "" && hasPort(r.peers, seeder.port)
	})
	if r.complete != 1 {
		t.Errorf("complete = %d, want 1 (the seeder)", r.complete)
	}

	c.Restart(lead)
	for i := range 3 {
		c.Stop(i)
	}
	for i := range 3 {
		c.Stop(i)
	}
	for i := range 3 {
		c.Restart(i)
	}
	c.Leader()
	poll.Until(t, 20*time.Second, "both acknowledged peers to be listed after every master restarted", func() bool {
		r = announce(t, c.Master(0).TrackerHTTPAddr(), ih, newBTPeer(6883), "", 100)
		return r.failure == "" && hasPort(r.peers, seeder.port) && hasPort(r.peers, leecher.port)
	})
}

// A re-announce that changes nothing never costs a log entry.
func TestTrackerReannounceIsNotALogEntry(t *testing.T) {
	c := trackerCluster(t, nil)
	lead := c.Leader()
	f := c.Follower(lead)
	ih, p := randomHash(), newBTPeer(7000)
	addr := c.Master(f).TrackerHTTPAddr()
	if r := announce(t, addr, ih, p, "started", 10); r.failure != "" {
		t.Fatal(r.failure)
	}
	c.Converge()
	before := c.Status(lead).LastIndex
	for range 20 {
		if r := announce(t, addr, ih, p, "", 10); r.failure != "" {
			t.Fatal(r.failure)
		}
	}
	if after := c.Status(lead).LastIndex; after != before {
		t.Errorf("20 re-announces moved the leader's last index from %d to %d; want no log entries", before, after)
	}
	// A change of seeder state is a membership change.
	if r := announce(t, addr, ih, p, "completed", 0); r.failure != "" {
		t.Fatal(r.failure)
	}
	if after := c.Status(lead).LastIndex; after == before {
		t.Errorf("completed did not reach the log (last index still %d)", after)
	}
	scrape := string(get(t, "", "http://"+c.Master(lead).TrackerHTTPAddr()+"/scrape?info_hash="+escape(ih[:])))
	poll.Until(t, 20*time.Second, "scrape to count one seeder and one completed download", func() bool {
		scrape = string(get(t, "", "http://"+c.Master(lead).TrackerHTTPAddr()+"/scrape?info_hash="+escape(ih[:])))
		return strings.Contains(scrape, "8:completei1e10:downloadedi1e")
	})
}

// A peer_id is not a lock. Someone who saw a client's peer_id cannot
// remove its entry (a stopped from another address removes nothing), and
// cannot lock it out of a swarm by announcing that peer_id there first:
// the client still gets in, from its own address.
func TestTrackerPeerIDIsNotALock(t *testing.T) {
	c := trackerCluster(t, nil)
	lead := c.Leader()
	addr, faddr := c.Master(lead).TrackerHTTPAddr(), c.Master(c.Follower(lead)).TrackerHTTPAddr()
	ih, victim := randomHash(), newBTPeer(7100)
	victim.local = "127.0.0.1"
	if r := announce(t, addr, ih, victim, "started", 10); r.failure != "" {
		t.Fatal(r.failure)
	}
	attacker := victim
	attacker.local = "127.0.0.2"
	attacker.port = 7199
	if r := announce(t, faddr, ih, attacker, "stopped", 10); r.failure != "" {
		t.Fatalf("stopped from another address: %q, want an answer that changes nothing", r.failure)
	}
	watcher := newBTPeer(7101)
	if r := announce(t, addr, ih, watcher, "started", 10); !hasPort(r.peers, victim.port) {
		t.Errorf("victim gone from the swarm after a stranger's stopped: peers %v", r.peers)
	}
	// Squatting: the attacker announces the victim's peer_id in another
	// swarm first, over the follower; the victim still joins it.
	other := randomHash()
	if r := announce(t, faddr, other, attacker, "started", 10); r.failure != "" {
		t.Fatal(r.failure)
	}
	for _, a := range []string{addr, faddr} {
		if r := announce(t, a, other, victim, "started", 10); r.failure != "" {
			t.Fatalf("victim locked out of a swarm by its own peer_id: %q", r.failure)
		}
	}
	if r := announce(t, addr, other, watcher, "started", 10); !hasPort(r.peers, victim.port) || !hasPort(r.peers, attacker.port) {
		t.Errorf("peers %v, want the victim's and the attacker's entries", r.peers)
	}
	// The victim itself may leave.
	if r := announce(t, addr, ih, victim, "stopped", 10); r.failure != "" {
		t.Fatal(r.failure)
	}
	if r := announce(t, addr, ih, watcher, "", 10); hasPort(r.peers, victim.port) {
		t.Errorf("victim still listed after its own stopped: %v", r.peers)
	}
}

// Announces that change nothing are answered without a log entry, on the
// leader and through a follower: stopped for absent peers, and started,
// completed and stopped repeated.
func TestTrackerNoOpAnnounceIsNotALogEntry(t *testing.T) {
	c := trackerCluster(t, nil)
	lead := c.Leader()
	f := c.Follower(lead)
	p := newBTPeer(7020)
	ih := randomHash()
	if r := announce(t, c.Master(lead).TrackerHTTPAddr(), ih, p, "completed", 0); r.failure != "" {
		t.Fatal(r.failure)
	}
	c.Converge()
	before := c.Status(lead).LastIndex
	for i := range 100 {
		addr := c.Master([]int{lead, f}[i%2]).TrackerHTTPAddr()
		if r := announce(t, addr, randomHash(), newBTPeer(7021), "stopped", 10); r.failure != "" {
			t.Fatal(r.failure)
		}
		if r := announce(t, addr, ih, p, []string{"started", "completed"}[i%2], 0); r.failure != "" {
			t.Fatal(r.failure)
		}
	}
	if after := c.Status(lead).LastIndex; after != before {
		t.Errorf("200 announces that change nothing moved the leader's last index from %d to %d", before, after)
	}
}

// A follower answers a refusal from the leader with its real reason (the
// error keeps its type across the relay), and a follower's reply counts
// the announce's own change even before the follower applied it.
func TestTrackerFollowerAnswersLikeTheLeader(t *testing.T) {
	c := trackerCluster(t, func(tc *master.TrackerConfig) { tc.MaxPeers = 1 })
	f := c.Follower(c.Leader())
	addr := c.Master(f).TrackerHTTPAddr()
	ih, p := randomHash(), newBTPeer(7030)
	if r := announce(t, addr, ih, p, "started", 10); r.failure != "" || r.incomplete != 1 {
		t.Fatalf("started: %+v, want one leecher", r)
	}
	if r := announce(t, addr, ih, p, "completed", 0); r.failure != "" || r.complete != 1 || r.incomplete != 0 {
		t.Fatalf("completed through a follower: %+v, want complete 1, incomplete 0", r)
	}
	if r := announce(t, addr, ih, newBTPeer(7031), "started", 10); !strings.Contains(r.failure, "full") {
		t.Fatalf("over the cap through a follower: failure %q, want the tracker-full refusal", r.failure)
	}
}

// The swarm cap holds exactly under concurrency: announces racing for the
// last slots through every master never overshoot it.
func TestTrackerCapIsExactUnderConcurrency(t *testing.T) {
	const limit = 20
	c := trackerCluster(t, func(tc *master.TrackerConfig) { tc.MaxPeers = limit })
	ih := randomHash()
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for i := range 60 {
		wg.Go(func() {
			p := newBTPeer(8000 + i)
			p.local = fmt.Sprintf("127.0.1.%d", i+1)
			r := announce(t, c.Master(i%3).TrackerHTTPAddr(), ih, p, "started", 1)
			if r.failure == "" {
				mu.Lock()
				accepted++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	lead := c.Leader()
	list, err := c.Client().TrackerList(t.Context(), client.ReadLinearizable)
	if err != nil {
		t.Fatal(err)
	}
	if list.Peers != limit || accepted != limit {
		t.Errorf("%d entries held, %d announces accepted; want exactly %d (leader m%d)", list.Peers, accepted, limit, lead+1)
	}
}

// Every master signs UDP connection IDs with one replicated secret, which
// survives a restart of every master.
func TestTrackerConnIDSecretIsShared(t *testing.T) {
	c := trackerCluster(t, nil)
	var first [][]byte
	poll.Until(t, 20*time.Second, "every master to hold the same connection-ID secret", func() bool {
		first = c.Master(0).ConnIDSecrets()
		if len(first) == 0 {
			return false
		}
		for i := 1; i < 3; i++ {
			if s := c.Master(i).ConnIDSecrets(); len(s) == 0 || !bytes.Equal(s[0], first[0]) {
				return false
			}
		}
		return true
	})
	for i := range 3 {
		c.Stop(i)
	}
	for i := range 3 {
		c.Restart(i)
	}
	c.Leader()
	poll.Until(t, 20*time.Second, "the secret back after a full restart", func() bool {
		s := c.Master(0).ConnIDSecrets()
		return len(s) > 0 && (bytes.Equal(s[0], first[0]) || len(s) > 1 && bytes.Equal(s[1], first[0]))
	})
}

// Peers that stop re-announcing leave the swarm after their lifetime;
// peers that keep re-announcing through a follower stay (the follower
// passes the renewals to the leader).
func TestTrackerSilentPeersExpireRenewedOnesStay(t *testing.T) {
	c := trackerCluster(t, func(tc *master.TrackerConfig) {
		tc.Interval = time.Second
		tc.PeerLifetime = 3 * time.Second
	})
	lead := c.Leader()
	f := c.Follower(lead)
	ih := randomHash()
	silent, live := newBTPeer(7200), newBTPeer(7201)
	addr := c.Master(f).TrackerHTTPAddr()
	announce(t, addr, ih, silent, "started", 10)
	announce(t, addr, ih, live, "started", 10)
	watcher := newBTPeer(7202)
	watcher.local = "127.0.0.3"
	var r announceReply
	poll.Until(t, 20*time.Second, "the silent peer to expire", func() bool {
		announce(t, addr, ih, live, "", 10) // renew through the follower
		r = announce(t, addr, ih, watcher, "", 10)
		// An empty list is a follower that has not applied the starts yet.
		return len(r.peers) > 0 && !hasPort(r.peers, silent.port)
	})
	if !hasPort(r.peers, live.port) {
		t.Errorf("the peer that kept re-announcing expired too: peers %v", r.peers)
	}
}

// The allowlist is replicated and needs admin credentials: a peer's
// certificate cannot change it, and in allowlist mode only allowed
// torrents are tracked.
func TestTrackerAllowlistNeedsAdminAndIsEnforced(t *testing.T) {
	c := trackerCluster(t, nil)
	ctx := t.Context()
	id := identity("tracker-user")
	allowed, other := randomHash(), randomHash()
	hexOf := func(h tracker.InfoHash) string { return fmt.Sprintf("%x", h[:]) }
	if _, err := c.PeerClient(id).TrackerPolicy(ctx, client.TrackerPolicyRequest{Mode: "allowlist"}); !errors.Is(err, transport.ErrForbidden) {
		t.Fatalf("policy change with a peer certificate: err %v, want ErrForbidden", err)
	}
	admin := c.Client()
	rep, err := admin.TrackerPolicy(ctx, client.TrackerPolicyRequest{Mode: "allowlist", Allow: []string{hexOf(allowed)}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "allowlist" || len(rep.Allow) != 1 || rep.Allow[0] != hexOf(allowed) {
		t.Fatalf("policy reply %+v", rep)
	}
	c.Converge()
	for i := range 3 {
		addr := c.Master(i).TrackerHTTPAddr()
		if r := announce(t, addr, other, newBTPeer(7300), "started", 1); !strings.Contains(r.failure, "allowlist") {
			t.Errorf("master %d: announce of a torrent not allowed: failure %q, want an allowlist refusal", i, r.failure)
		}
		if r := announce(t, addr, allowed, newBTPeer(7301+i), "started", 1); r.failure != "" {
			t.Errorf("master %d: announce of an allowed torrent refused: %s", i, r.failure)
		}
	}
	if _, err := admin.TrackerPolicy(ctx, client.TrackerPolicyRequest{Allow: []string{"not-a-hash"}}); !errors.Is(err, fsm.ErrInvalid) {
		t.Errorf("allow of a malformed hash: err %v, want invalid input", err)
	}
	list, err := admin.TrackerList(ctx, client.ReadLinearizable)
	if err != nil {
		t.Fatal(err)
	}
	if list.Swarms != 1 || list.Peers != 3 {
		t.Errorf("list: %d swarms, %d peers; want 1 swarm of 3 peers", list.Swarms, list.Peers)
	}
}

// One address cannot fill the tracker: past the per-IP cap new entries are
// refused with a reason, while other addresses still get in.
func TestTrackerPerIPCap(t *testing.T) {
	c := trackerCluster(t, func(tc *master.TrackerConfig) { tc.MaxPeersPerIP = 3 })
	addr := c.Master(c.Leader()).TrackerHTTPAddr()
	ih := randomHash()
	for i := range 3 {
		p := newBTPeer(7400 + i)
		p.local = "127.0.0.5"
		if r := announce(t, addr, ih, p, "started", 1); r.failure != "" {
			t.Fatalf("entry %d refused: %s", i, r.failure)
		}
	}
	p := newBTPeer(7410)
	p.local = "127.0.0.5"
	if r := announce(t, addr, ih, p, "started", 1); !strings.Contains(r.failure, "too many swarm entries from your address") {
		t.Errorf("fourth entry from one address: failure %q, want the per-IP refusal", r.failure)
	}
	q := newBTPeer(7411)
	q.local = "127.0.0.6"
	if r := announce(t, addr, ih, q, "started", 1); r.failure != "" {
		t.Errorf("another address refused: %s", r.failure)
	}
}

// Empty swarms cannot pile up: a swarm outlives its peers only when it
// counted a completed download, it counts toward the cap on swarms and its
// last address's quota, and it ends after EmptySwarmLifetime. A completed
// then stopped pair on a fresh torrent leaves nothing behind.
func TestTrackerSwarmCap(t *testing.T) {
	c := trackerCluster(t, func(tc *master.TrackerConfig) {
		tc.MaxSwarms = 2
		tc.EmptySwarmLifetime = 2 * time.Second
		tc.Interval = time.Second // expiry runs every PeerLifetime/8
		tc.PeerLifetime = 8 * time.Second
	})
	addr := c.Master(c.Leader()).TrackerHTTPAddr()
	for i := range 5 {
		ih, p := randomHash(), newBTPeer(7520+i)
		if r := announce(t, addr, ih, p, "completed", 0); r.failure != "" {
			t.Fatalf("pair %d refused: %s", i, r.failure)
		}
		if r := announce(t, addr, ih, p, "stopped", 0); r.failure != "" {
			t.Fatalf("stopped %d refused: %s", i, r.failure)
		}
	}
	for i := range 2 {
		ih, p := randomHash(), newBTPeer(7500+i)
		for _, ev := range []string{"started", "completed", "stopped"} {
			if r := announce(t, addr, ih, p, ev, map[string]int{"started": 1}[ev]); r.failure != "" {
				t.Fatalf("swarm %d: %s refused: %s", i, ev, r.failure)
			}
		}
	}
	if r := announce(t, addr, randomHash(), newBTPeer(7510), "started", 1); !strings.Contains(r.failure, "full") {
		t.Errorf("third swarm: failure %q, want the tracker-full refusal", r.failure)
	}
	poll.Until(t, 30*time.Second, "the empty swarms to end and make room", func() bool {
		return announce(t, addr, randomHash(), newBTPeer(7511), "started", 1).failure == ""
	})
}

// The persisted downloaded count cannot be forged: completed events for
// entries that were never downloading, or repeated by one entry, count
// nothing; one real download counts once.
func TestTrackerDownloadedCannotBeForged(t *testing.T) {
	c := trackerCluster(t, nil)
	addr := c.Master(c.Follower(c.Leader())).TrackerHTTPAddr()
	ih, p := randomHash(), newBTPeer(7040)
	for range 20 {
		announce(t, addr, ih, p, "completed", 0)
		announce(t, addr, ih, p, "stopped", 0)
	}
	l := newBTPeer(7041)
	announce(t, addr, ih, l, "started", 10)
	for range 5 {
		announce(t, addr, ih, l, "completed", 0)
		announce(t, addr, ih, l, "", 10)
	}
	lead := c.Leader()
	poll.Until(t, 20*time.Second, "the scrape to count exactly one download", func() bool {
		scrape := string(get(t, "", "http://"+c.Master(lead).TrackerHTTPAddr()+"/scrape?info_hash="+escape(ih[:])))
		return strings.Contains(scrape, "10:downloadedi1e")
	})
}
