package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"fileshare/btclient"
	"fileshare/tracker"
)

// announcer sends announces over one connection. It is used by one
// goroutine at a time.
type announcer interface {
	// announce sends p and waits for the answer until deadline; it
	// returns how many peers the answer held, an error for which
	// isTimeout holds on a timeout, and a *btclient.FailureError for a failure
	// reason.
	announce(p *btclient.Announce, deadline time.Time) (int, error)
	close()
	connects() int
}

// newAnnouncer returns an announcer for an http:// or udp:// announce URL.
func newAnnouncer(target string, seed uint64) (announcer, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("announce URL %q: %w", target, err)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("announce URL %q has no port; write it as http://HOST:PORT/announce or udp://HOST:PORT/announce", target)
	}
	switch u.Scheme {
	case "http":
		path := u.EscapedPath()
		if path == "" {
			path = "/announce"
		}
		return &httpAnnouncer{addr: u.Host, path: path}, nil
	case "udp":
		return &udpAnnouncer{addr: u.Host, tid: uint32(seed)}, nil
	}
	return nil, fmt.Errorf("announce URL %q: the scheme must be http or udp", target)
}

// httpAnnouncer sends HTTP/1.1 GETs over one keep-alive connection and
// dials again when the tracker closes it (opentracker closes after every
// answer).
type httpAnnouncer struct {
	addr, path string
	conn       net.Conn
	br         *bufio.Reader
	buf        []byte
}

func (h *httpAnnouncer) connects() int { return 0 }

func (h *httpAnnouncer) close() {
	if h.conn != nil {
		h.conn.Close()
		h.conn = nil
	}
}

func (h *httpAnnouncer) announce(p *btclient.Announce, deadline time.Time) (int, error) {
	h.buf = appendHTTPAnnounce(h.buf[:0], h.addr, h.path, p)
	for attempt := 0; ; attempt++ {
		fresh := h.conn == nil
		if fresh {
			conn, err := net.DialTimeout("tcp", h.addr, time.Until(deadline))
			if err != nil {
				return 0, err
			}
			h.conn = conn
			if h.br == nil {
				h.br = bufio.NewReaderSize(conn, 4096)
			} else {
				h.br.Reset(conn)
			}
		}
		h.conn.SetDeadline(deadline)
		n, unanswered, err := h.roundTrip()
		if err == nil || !unanswered || fresh || attempt > 0 || isTimeout(err) {
			return n, err
		}
		// A kept-alive connection the tracker had closed before reading
		// the request: dial again, once.
	}
}

// roundTrip sends h.buf and reads the answer; unanswered says that the
// connection broke before any answer came (and was closed).
func (h *httpAnnouncer) roundTrip() (peers int, unanswered bool, err error) {
	if _, err := h.conn.Write(h.buf); err != nil {
		h.close()
		return 0, true, fmt.Errorf("%w: %w", errClosed, err)
	}
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		h.close()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			return 0, true, fmt.Errorf("%w: %w", errClosed, err)
		}
		return 0, false, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil || resp.Close {
		h.close()
	}
	if err != nil {
		return 0, false, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("HTTP status %s: %.100q", resp.Status, body)
	}
	r, err := btclient.ParseAnnounceSummary(body)
	if err != nil {
		return 0, false, err
	}
	if r.Failure != "" {
		return 0, false, &btclient.FailureError{Reason: r.Failure}
	}
	return r.Peers, false, nil
}

// udpConnIDLifetime is how long a client may use a connection ID (BEP 15:
// one minute); the announcer connects again after that.
const udpConnIDLifetime = 60 * time.Second

// udpAnnouncer sends BEP 15 announces from one socket, reusing a
// connection ID for udpConnIDLifetime. It does not retransmit: a lost
// packet is a timeout, which is what the benchmark reports.
type udpAnnouncer struct {
	addr    string
	conn    *net.UDPConn
	connID  uint64
	connAt  time.Time // when connID was obtained; zero: none
	tid     uint32
	failRun int // error replies in a row
	nconn   int
	buf     []byte
	rbuf    []byte
}

func (u *udpAnnouncer) connects() int { return u.nconn }

func (u *udpAnnouncer) close() {
	if u.conn != nil {
		u.conn.Close()
		u.conn = nil
	}
}

// dial opens the announcer's socket if it has none.
func (u *udpAnnouncer) dial() error {
	if u.conn != nil {
		return nil
	}
	raddr, err := net.ResolveUDPAddr("udp", u.addr)
	if err != nil {
		return err
	}
	if u.conn, err = net.DialUDP("udp", nil, raddr); err != nil {
		return err
	}
	u.conn.SetReadBuffer(1 << 20)
	u.rbuf = make([]byte, 2048)
	return nil
}

// connect obtains a connection ID (BEP 15's connect exchange) if the
// socket has none younger than maxAge. The socket's deadline must be set.
func (u *udpAnnouncer) connect(maxAge time.Duration) error {
	if !u.connAt.IsZero() && time.Since(u.connAt) < maxAge {
		return nil
	}
	u.tid++
	u.buf = btclient.AppendConnectRequest(u.buf[:0], u.tid)
	u.nconn++
	r, err := u.exchange(tracker.UDPActionConnect)
	if err != nil {
		return err
	}
	u.connID, u.connAt = r.ConnID, time.Now()
	return nil
}

func (u *udpAnnouncer) announce(p *btclient.Announce, deadline time.Time) (int, error) {
	if err := u.dial(); err != nil {
		return 0, err
	}
	u.conn.SetDeadline(deadline)
	if err := u.connect(udpConnIDLifetime); err != nil {
		return 0, err
	}
	u.tid++
	u.buf = btclient.AppendAnnounceRequest(u.buf[:0], u.connID, u.tid, p)
	r, err := u.exchange(tracker.UDPActionAnnounce)
	var f *btclient.FailureError
	switch {
	case errors.As(err, &f):
		// BEP 15 gives errors no codes: an expired or unknown connection
		// ID (a restarted tracker) shows as every announce failing, a
		// refused torrent as one. Connect again after two in a row.
		if u.failRun++; u.failRun >= 2 {
			u.connAt, u.failRun = time.Time{}, 0
		}
		return 0, err
	case isTimeout(err):
		u.connAt = time.Time{} // trackers drop packets with an unknown ID
		return 0, err
	case err != nil:
		return 0, err
	}
	u.failRun = 0
	return r.Peers, nil
}

// exchange sends u.buf and reads until the reply with u.tid arrives;
// replies to earlier, timed-out requests are dropped.
func (u *udpAnnouncer) exchange(want uint32) (btclient.UDPReply, error) {
	if _, err := u.conn.Write(u.buf); err != nil {
		return btclient.UDPReply{}, err
	}
	for {
		n, err := u.conn.Read(u.rbuf)
		if err != nil {
			return btclient.UDPReply{}, err
		}
		r, err := btclient.ParseUDPReply(u.rbuf[:n])
		if err == nil && r.TID != u.tid {
			continue
		}
		switch {
		case err != nil:
			return r, err
		case r.Action == tracker.UDPActionError:
			return r, &btclient.FailureError{Reason: r.Failure}
		case r.Action != want:
			return r, fmt.Errorf("%w: action %d in answer to action %d", btclient.ErrMalformedReply, r.Action, want)
		}
		return r, nil
	}
}
