package btclient

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"fileshare/tracker"
)

// The BEP 15 client rules.
const (
	// connIDLifetime is how long a client may use a connection ID.
	connIDLifetime = time.Minute
	// maxScrapeHashes is the most info-hashes one UDP scrape may carry.
	maxScrapeHashes = 74
)

// UDPClient speaks BEP 15 to UDP trackers. It keeps each tracker's
// connection ID for the minute BEP 15 allows. The zero value is ready to
// use; a UDPClient is safe for concurrent use.
type UDPClient struct {
	// Retransmit is how long a request waits for its reply before it is
	// sent again, with a fresh connection ID; the wait doubles each time,
	// until the context ends. Zero means BEP 15's 15 s; a tool on loopback
	// wants far less.
	Retransmit time.Duration

	mu  sync.Mutex
	ids map[string]connID // by tracker address
}

type connID struct {
	id  uint64
	got time.Time
}

// Announce announces a to the UDP tracker at addr: "host:port", or an
// announce URL "udp://host:port/path?query", whose path and query go to
// the tracker as BEP 41 URL data (a private tracker's passkey:
// udp://host:port/PASSKEY/announce). The peers come back in the family of
// the socket: IPv4 peers to an IPv4 tracker address, IPv6 peers to an
// IPv6 one. A refusal is a *FailureError.
func (c *UDPClient) Announce(ctx context.Context, addr string, a Announce) (Response, error) {
	addr, urlData, err := splitUDPURL(addr)
	if err != nil {
		return Response{}, err
	}
	req := make([]byte, 98, 98+len(urlData)+2*(len(urlData)/255+1)+1)
	copy(req[16:36], a.InfoHash[:])
	copy(req[36:56], a.PeerID[:])
	binary.BigEndian.PutUint64(req[56:], a.Downloaded)
	binary.BigEndian.PutUint64(req[64:], a.Left)
	binary.BigEndian.PutUint64(req[72:], a.Uploaded)
	binary.BigEndian.PutUint32(req[80:], uint32(a.Event))
	// req[84:88], the IP, stays 0: the tracker uses the packet's source.
	if a.HasKey {
		binary.BigEndian.PutUint32(req[88:], a.Key)
	}
	numWant := int32(-1)
	if a.NumWant > 0 {
		numWant = int32(a.NumWant)
	}
	binary.BigEndian.PutUint32(req[92:], uint32(numWant))
	binary.BigEndian.PutUint16(req[96:], a.Port)
	req = appendURLData(req, urlData)
	var r Response
	err = c.exchange(ctx, addr, tracker.UDPActionAnnounce, req[:], func(conn net.Conn, b []byte) error {
		if len(b) < 20 {
			return fmt.Errorf("%w: announce reply of %d bytes", ErrMalformedReply, len(b))
		}
		r.Interval = time.Duration(binary.BigEndian.Uint32(b[8:])) * time.Second
		r.Incomplete = int(binary.BigEndian.Uint32(b[12:]))
		r.Complete = int(binary.BigEndian.Uint32(b[16:]))
		size := 6
		if ua, ok := conn.RemoteAddr().(*net.UDPAddr); ok && ua.IP.To4() == nil {
			size = 18
		}
		var ok bool
		if r.Peers, ok = compactPeers(nil, b[20:], size); !ok {
			return fmt.Errorf("%w: %d bytes of peers, not a multiple of %d", ErrMalformedReply, len(b)-20, size)
		}
		return nil
	})
	return r, err
}

// Scrape scrapes up to 74 hashes from the UDP tracker at addr and returns
// one entry per hash, in order.
func (c *UDPClient) Scrape(ctx context.Context, addr string, hashes ...tracker.InfoHash) ([]tracker.ScrapeEntry, error) {
	if len(hashes) == 0 || len(hashes) > maxScrapeHashes {
		return nil, fmt.Errorf("btclient: a UDP scrape carries 1 to %d info-hashes, not %d", maxScrapeHashes, len(hashes))
	}
	req := make([]byte, 16, 16+20*len(hashes))
	for _, h := range hashes {
		req = append(req, h[:]...)
	}
	out := make([]tracker.ScrapeEntry, len(hashes))
	err := c.exchange(ctx, addr, tracker.UDPActionScrape, req, func(_ net.Conn, b []byte) error {
		if len(b) != 8+12*len(hashes) {
			return fmt.Errorf("%w: scrape reply of %d bytes for %d hashes", ErrMalformedReply, len(b), len(hashes))
		}
		for i := range out {
			e := b[8+12*i:]
			out[i] = tracker.ScrapeEntry{
				Complete:   int(binary.BigEndian.Uint32(e)),
				Downloaded: int(binary.BigEndian.Uint32(e[4:])),
				Incomplete: int(binary.BigEndian.Uint32(e[8:])),
			}
		}
		return nil
	})
	return out, err
}

// exchange sends req (whose first 16 bytes it fills in: connection ID,
// action, transaction ID) to addr, connecting first when it holds no
// fresh connection ID, and hands the matching reply to parse. It sends
// again, after a new connect, each time a reply fails to come within the
// retransmit wait.
func (c *UDPClient) exchange(ctx context.Context, addr string, action uint32, req []byte, parse func(net.Conn, []byte) error) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return fmt.Errorf("btclient: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	wait := c.Retransmit
	if wait <= 0 {
		wait = 15 * time.Second
	}
	buf := make([]byte, 2048)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			c.forget(addr) // perhaps the tracker no longer takes our ID
			wait *= 2
		}
		id, err := c.connectionID(ctx, conn, addr, wait, buf)
		if err == nil {
			err = c.roundTrip(ctx, conn, id, action, req, wait, buf, parse)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("btclient: no answer from %s: %w", addr, ctx.Err())
		}
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			return err
		}
		if err == nil {
			return nil
		}
	}
}

// connectionID returns a fresh connection ID for addr, connecting over conn
// when it has none.
func (c *UDPClient) connectionID(ctx context.Context, conn net.Conn, addr string, wait time.Duration, buf []byte) (uint64, error) {
	c.mu.Lock()
	id, ok := c.ids[addr]
	c.mu.Unlock()
	if ok && time.Since(id.got) < connIDLifetime {
		return id.id, nil
	}
	var got uint64
	req := make([]byte, 16)
	err := c.roundTrip(ctx, conn, tracker.UDPProtocolID, tracker.UDPActionConnect, req, wait, buf, func(_ net.Conn, b []byte) error {
		if len(b) < 16 {
			return fmt.Errorf("%w: connect reply of %d bytes", ErrMalformedReply, len(b))
		}
		got = binary.BigEndian.Uint64(b[8:])
		return nil
	})
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	if c.ids == nil {
		c.ids = map[string]connID{}
	}
	c.ids[addr] = connID{id: got, got: time.Now()}
	c.mu.Unlock()
	return got, nil
}

func (c *UDPClient) forget(addr string) {
	c.mu.Lock()
	delete(c.ids, addr)
	c.mu.Unlock()
}

// roundTrip sends one request and waits up to wait for the reply with its
// transaction ID; replies to other transactions are skipped.
func (c *UDPClient) roundTrip(ctx context.Context, conn net.Conn, id uint64, action uint32, req []byte, wait time.Duration, buf []byte, parse func(net.Conn, []byte) error) error {
	var tid [4]byte
	rand.Read(tid[:])
	binary.BigEndian.PutUint64(req, id)
	binary.BigEndian.PutUint32(req[8:], action)
	copy(req[12:16], tid[:])
	if _, err := conn.Write(req); err != nil {
		return fmt.Errorf("btclient: send to %s: %w", conn.RemoteAddr(), err)
	}
	conn.SetReadDeadline(time.Now().Add(wait))
	// The context's AfterFunc moves the deadline to now when the context
	// ends; had it run before the line above, the context has ended.
	if err := ctx.Err(); err != nil {
		return err
	}
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return err
		}
		b := buf[:n]
		if n < 8 || [4]byte(b[4:8]) != tid {
			continue // a late reply to an earlier attempt, or noise
		}
		switch got := binary.BigEndian.Uint32(b); got {
		case action:
			return parse(conn, b)
		case tracker.UDPActionError:
			return &FailureError{Reason: string(b[8:])}
		default:
			return fmt.Errorf("%w: action %d in reply to action %d", ErrMalformedReply, got, action)
		}
	}
}

// splitUDPURL splits "udp://host:port/path?query" into "host:port" and
// "/path?query"; anything without the udp:// scheme is an address alone.
func splitUDPURL(s string) (addr, urlData string, err error) {
	rest, ok := strings.CutPrefix(s, "udp://")
	if !ok {
		return s, "", nil
	}
	host, path := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		host, path = rest[:i], rest[i:]
	}
	if host == "" {
		return "", "", fmt.Errorf("btclient: announce URL %q has no host:port", s)
	}
	if path == "/" {
		path = ""
	}
	return host, path, nil
}

// appendURLData appends urlData as BEP 41 URLData options of at most 255
// bytes each, then EndOfOptions; nothing if urlData is empty.
func appendURLData(b []byte, urlData string) []byte {
	if urlData == "" {
		return b
	}
	for len(urlData) > 0 {
		n := min(len(urlData), 255)
		b = append(b, 0x2, byte(n))
		b = append(b, urlData[:n]...)
		urlData = urlData[n:]
	}
	return append(b, 0x0)
}
