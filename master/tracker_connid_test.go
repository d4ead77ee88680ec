package master_test

import (
	"encoding/binary"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"fileshare/internal/freeport"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/master/mastertest"
	"fileshare/tracker"
)

// udpTrackerClient is one BEP 15 client socket: libtorrent keeps one
// connection ID per tracker IP and uses it with every port there.
type udpTrackerClient struct {
	t    *testing.T
	conn *net.UDPConn
	tid  uint32
}

func newUDPTrackerClient(t *testing.T) *udpTrackerClient {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &udpTrackerClient{t: t, conn: conn}
}

// exchange sends one request with connID and action to addr and returns
// the reply's body after its 8-byte header, or ok false if no reply came
// within wait (the tracker drops a packet whose connection ID it refuses).
func (c *udpTrackerClient) exchange(addr string, connID uint64, action uint32, body []byte, wait time.Duration) (reply []byte, ok bool) {
	c.t.Helper()
	c.tid++
	req := binary.BigEndian.AppendUint64(nil, connID)
	req = binary.BigEndian.AppendUint32(req, action)
	req = binary.BigEndian.AppendUint32(req, c.tid)
	req = append(req, body...)
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.WriteToUDP(req, to); err != nil {
		c.t.Fatal(err)
	}
	buf := make([]byte, 2048)
	c.conn.SetReadDeadline(time.Now().Add(wait))
	for {
		n, _, err := c.conn.ReadFromUDP(buf)
		if err != nil {
			return nil, false
		}
		if n >= 8 && binary.BigEndian.Uint32(buf[4:]) == c.tid {
			if got := binary.BigEndian.Uint32(buf); got != action {
				c.t.Fatalf("reply action %d to action %d: %q", got, action, buf[8:n])
			}
			return append([]byte(nil), buf[8:n]...), true
		}
	}
}

func (c *udpTrackerClient) connect(addr string) uint64 {
	c.t.Helper()
	var reply []byte
	poll.Until(c.t, 20*time.Second, "a connect reply from "+addr, func() bool {
		var ok bool
		reply, ok = c.exchange(addr, tracker.UDPProtocolID, tracker.UDPActionConnect, nil, time.Second)
		return ok
	})
	return binary.BigEndian.Uint64(reply)
}

// scrapeAnswered reports whether addr answers a scrape carrying connID.
func (c *udpTrackerClient) scrapeAnswered(addr string, connID uint64) bool {
	c.t.Helper()
	_, ok := c.exchange(addr, connID, tracker.UDPActionScrape, make([]byte, 20), time.Second)
	return ok
}

// A UDP connection ID is the cluster's, not one process's: an ID one master
// issued is good on every other master (masters sharing an IP, as libtorrent
// keeps one ID per tracker IP), and still good after every master restarts
// (BEP 15 lets a client use an ID for two minutes). Before, an announce
// carrying such an ID was dropped without a reply, and a client's UDP
// stopped after a restart was lost.
func TestTrackerUDPConnectionIDsAreTheClusters(t *testing.T) {
	addrs := make([]string, 3)
	for i := range addrs {
		addrs[i] = freeport.Loopback(t)
	}
	c := mastertest.New(t, 3, mastertest.Options{TLS: true, Config: func(cfg *master.Config) {
		if i, err := strconv.Atoi(strings.TrimPrefix(cfg.ID, "m")); err == nil && i >= 1 && i <= 3 {
			cfg.Tracker.UDP = addrs[i-1]
		}
	}})
	c.Leader()
	poll.Until(t, 20*time.Second, "every master to hold the cluster's connection-ID secrets", func() bool {
		for i := range 3 {
			if len(c.Master(i).ConnIDSecrets()) == 0 {
				return false
			}
		}
		return true
	})
	cl := newUDPTrackerClient(t)
	id := cl.connect(addrs[0])
	for i := range 3 {
		if !cl.scrapeAnswered(addrs[i], id) {
			t.Fatalf("m%d dropped a scrape carrying m1's connection ID", i+1)
		}
	}
	for i := range 3 {
		c.Kill(i)
	}
	for i := range 3 {
		c.Restart(i)
	}
	c.Leader()
	poll.Until(t, 30*time.Second, "every restarted master to take the connection ID issued before the restart", func() bool {
		for i := range 3 {
			if !cl.scrapeAnswered(addrs[i], id) {
				return false
			}
		}
		return true
	})
	// A made-up ID is still dropped.
	if cl.scrapeAnswered(addrs[1], id^0xdeadbeef) {
		t.Fatal("a master answered a scrape carrying a forged connection ID")
	}
}
