package jepsenlike

import (
	"encoding/binary"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"fileshare/btclient"
	"fileshare/tracker"
)

// udpEcho is a UDP server that answers every datagram with itself.
func udpEcho(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			c.WriteToUDP(buf[:n], from)
		}
	}()
	return c.LocalAddr().String()
}

// announceDatagram is a BEP 15 announce request with seq in its
// transaction ID and the given event.
func announceDatagram(seq int, event uint32) []byte {
	return btclient.AppendAnnounceRequest(nil, 0, uint32(seq), &btclient.Announce{Event: tracker.Event(event)})
}

// exchange sends n announces through the proxy and returns the
// transaction IDs of the echoes that came back within a second of the
// last, in arrival order.
func exchange(t *testing.T, p *udpProxy, n int, event uint32) []int {
	t.Helper()
	c, err := net.Dial("udp", p.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range n {
		if _, err := c.Write(announceDatagram(i, event)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // keep the order on the way in
	}
	var got []int
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(time.Second))
	for {
		k, err := c.Read(buf)
		if err != nil {
			return got
		}
		got = append(got, int(binary.BigEndian.Uint32(buf[12:k])))
	}
}

// Each UDP fault does what it says, in both directions, and the proxy
// counts it: loss drops, dup sends twice (counting duplicated started
// announces), reorder lets a datagram overtake, and no fault forwards
// everything in order.
func TestUDPProxyFaults(t *testing.T) {
	p, err := newUDPProxy("127.0.0.1", udpEcho(t), 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()

	if got := exchange(t, p, 20, 2); len(got) != 20 {
		t.Fatalf("without faults %d of 20 echoes came back", len(got))
	}
	if c := p.takeCounts(); c.Forwarded != 40 || c.Dropped+c.Duplicated+c.Reordered != 0 {
		t.Fatalf("without faults: %+v, want 40 forwarded and nothing else", c)
	}

	p.set(UDPFaults{Loss: 0.5})
	got := exchange(t, p, 100, 2)
	if c := p.takeCounts(); len(got) > 60 || c.Dropped < 50 {
		t.Fatalf("loss 0.5: %d of 100 round trips survived, %d datagrams dropped", len(got), c.Dropped)
	}

	p.set(UDPFaults{Dup: 1})
	got = exchange(t, p, 10, 3)
	if c := p.takeCounts(); len(got) < 30 || c.DupStopped != 10 {
		t.Fatalf("dup 1: %d echoes of 10 (want 4 copies of each: twice each way), %d duplicated stopped announces counted", len(got), c.DupStopped)
	}

	p.set(UDPFaults{Reorder: 0.5})
	got = exchange(t, p, 40, 1)
	inversions := 0
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			inversions++
		}
	}
	if c := p.takeCounts(); len(got) != 40 || inversions == 0 || c.Reordered == 0 {
		t.Fatalf("reorder 0.5: %d of 40 echoes, %d out of order, %d reordered", len(got), inversions, c.Reordered)
	}

	p.set(UDPFaults{Delay: Duration(200 * time.Millisecond)})
	start := time.Now()
	c, _ := net.Dial("udp", p.addr())
	defer c.Close()
	c.Write(announceDatagram(0, 0))
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 2048)); err != nil || time.Since(start) < 400*time.Millisecond {
		t.Fatalf("delay 200ms each way: the echo took %v (%v), want at least 400ms", time.Since(start), err)
	}
}

// A compact reply (what opentracker sends whatever compact=0 asks) is
// read as ports, which the workload maps to its peers' peer_ids; an
// unknown port is a phantom named by its port, and port 1 is the
// watcher.
func TestCompactRepliesMapPortsToPeers(t *testing.T) {
	body := []byte("d8:completei1e10:incompletei2e8:intervali60e5:peers18:" +
		"\x7f\x00\x00\x01\x27\x11" + "\x7f\x00\x00\x01\x00\x01" + "\x7f\x00\x00\x01\xff\xfe" + "e")
	r, err := parseAnnounceReply(body)
	if err != nil || len(r.ports) != 3 || r.ports[0] != 10001 {
		t.Fatalf("compact reply: %+v, %v", r, err)
	}
	w := &trackerWorkload{byPort: map[uint16]string{10001: "-FSJP01-000000000001"}}
	got := w.holders(r)
	want := []string{"-FSJP01-000000000001", watcherID, "port 65534"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("holders %v, want %v", got, want)
	}
	if _, err := parseAnnounceReply([]byte("d8:completei0e10:incompletei0e5:peers5:abcdee")); err == nil {
		t.Fatal("compact peers of 5 bytes were accepted")
	}
}
