package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"fileshare/tracker"
)

// The client side of the two tracker protocols, as little of each as the
// announce benchmark needs: an HTTP announce query (BEP 3, compact=1,
// BEP 23), its bencoded reply, and BEP 15's UDP connect and announce
// packets, built into reused buffers without allocating (btclient, the
// project's general client, allocates per call). The protocol's numbers
// (BEP 15's protocol ID and actions) are package tracker's, defined once.

// announceParams is one announce as a client sends it.
type announceParams struct {
	InfoHash [20]byte
	PeerID   [20]byte
	Port     uint16
	Left     uint64
	Event    uint32 // BEP 15's numbering: 0 none, 1 completed, 2 started, 3 stopped
	Key      uint32
	NumWant  int32
}

// The announce events, as BEP 15 numbers them.
const (
	evNone      uint32 = 0
	evCompleted uint32 = 1
	evStarted   uint32 = 2
	evStopped   uint32 = 3
)

var httpEventName = [...]string{evNone: "", evCompleted: "completed", evStarted: "started", evStopped: "stopped"}

// appendEscaped appends b to dst with every byte outside RFC 3986's
// unreserved set written as %XX, as BitTorrent clients send the raw
// 20-byte info_hash and peer_id.
func appendEscaped(dst, b []byte) []byte {
	const hex = "0123456789ABCDEF"
	for _, c := range b {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '%', hex[c>>4], hex[c&15])
	}
	return dst
}

// appendHTTPAnnounce appends an HTTP/1.1 GET of path (the announce URL's
// path, e.g. "/announce") with p's query to dst, keeping the connection
// alive.
func appendHTTPAnnounce(dst []byte, host, path string, p *announceParams) []byte {
	dst = append(dst, "GET "...)
	dst = append(dst, path...)
	dst = append(dst, "?info_hash="...)
	dst = appendEscaped(dst, p.InfoHash[:])
	dst = append(dst, "&peer_id="...)
	dst = appendEscaped(dst, p.PeerID[:])
	dst = append(dst, "&port="...)
	dst = strconv.AppendUint(dst, uint64(p.Port), 10)
	dst = append(dst, "&uploaded=0&downloaded=0&left="...)
	dst = strconv.AppendUint(dst, p.Left, 10)
	dst = append(dst, "&compact=1&numwant="...)
	dst = strconv.AppendInt(dst, int64(p.NumWant), 10)
	dst = append(dst, "&key="...)
	dst = strconv.AppendUint(dst, uint64(p.Key), 16)
	if p.Event != evNone && int(p.Event) < len(httpEventName) {
		dst = append(dst, "&event="...)
		dst = append(dst, httpEventName[p.Event]...)
	}
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	dst = append(dst, "\r\nUser-Agent: fileshare-bench\r\nAccept-Encoding: identity\r\n\r\n"...)
	return dst
}

// httpReply is what the benchmark reads from a bencoded announce reply.
type httpReply struct {
	Failure  string // the failure reason; "" on success
	Interval int64
	Peers    int // entries in the compact peers (IPv4) and peers6 strings
}

// Errors the reply decoders return.
var (
	// errBadReply means a tracker's reply is not what the protocol allows.
	errBadReply = errors.New("malformed tracker reply")
)

// maxBencodeDepth bounds the nesting a reply may have; a tracker reply
// needs two levels.
const maxBencodeDepth = 16

// parseHTTPReply decodes a bencoded announce reply: a dictionary with
// either "failure reason" or "interval" and compact "peers"/"peers6".
// Any input returns a reply or an error wrapping errBadReply, never a
// panic.
func parseHTTPReply(b []byte) (httpReply, error) {
	var r httpReply
	if len(b) == 0 || b[0] != 'd' {
		return r, fmt.Errorf("%w: not a bencoded dictionary", errBadReply)
	}
	i := 1
	var ok bool
	for {
		if i >= len(b) {
			return r, fmt.Errorf("%w: dictionary not terminated", errBadReply)
		}
		if b[i] == 'e' {
			i++
			break
		}
		var key []byte
		if key, i, ok = bencodeString(b, i); !ok {
			return r, fmt.Errorf("%w: bad dictionary key", errBadReply)
		}
		start := i
		if i, ok = skipBencode(b, i, 1); !ok {
			return r, fmt.Errorf("%w: bad value for %q", errBadReply, key)
		}
		v := b[start:i]
		switch string(key) {
		case "failure reason":
			s, _, ok := bencodeString(v, 0)
			if !ok {
				return r, fmt.Errorf("%w: failure reason is not a string", errBadReply)
			}
			r.Failure = string(s)
			if r.Failure == "" {
				r.Failure = "(empty failure reason)"
			}
		case "interval":
			n, ok := bencodeInt(v)
			if !ok {
				return r, fmt.Errorf("%w: interval is not an integer", errBadReply)
			}
			r.Interval = n
		case "peers", "peers6":
			size := 6
			if string(key) == "peers6" {
				size = 18
			}
			s, _, ok := bencodeString(v, 0)
			if ok && len(s)%size == 0 {
				r.Peers += len(s) / size
			} else if v[0] != 'l' { // a non-compact list is allowed; count nothing
				return r, fmt.Errorf("%w: %s is not a compact string", errBadReply, key)
			}
		}
	}
	if i != len(b) {
		return r, fmt.Errorf("%w: %d bytes after the dictionary", errBadReply, len(b)-i)
	}
	if r.Failure == "" && r.Interval <= 0 {
		return r, fmt.Errorf("%w: neither a failure reason nor a positive interval", errBadReply)
	}
	return r, nil
}

// bencodeString reads a byte string at b[i:], returning it and the index
// after it.
func bencodeString(b []byte, i int) ([]byte, int, bool) {
	n := 0
	j := i
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		if n > len(b) { // longer than the input: cannot be complete
			return nil, 0, false
		}
		n = n*10 + int(b[j]-'0')
	}
	if j == i || j >= len(b) || b[j] != ':' || n > len(b)-j-1 {
		return nil, 0, false
	}
	return b[j+1 : j+1+n], j + 1 + n, true
}

// bencodeInt parses a whole bencoded integer "i<n>e".
func bencodeInt(v []byte) (int64, bool) {
	if len(v) < 3 || v[0] != 'i' || v[len(v)-1] != 'e' {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v[1:len(v)-1]), 10, 64)
	return n, err == nil
}

// skipBencode returns the index after the value at b[i:].
func skipBencode(b []byte, i, depth int) (int, bool) {
	if i >= len(b) || depth > maxBencodeDepth {
		return 0, false
	}
	switch c := b[i]; {
	case c == 'i':
		for j := i + 1; j < len(b); j++ {
			if b[j] == 'e' {
				_, ok := bencodeInt(b[i : j+1])
				return j + 1, ok
			}
		}
		return 0, false
	case c == 'l' || c == 'd':
		i++
		for {
			if i >= len(b) {
				return 0, false
			}
			if b[i] == 'e' {
				return i + 1, true
			}
			var ok bool
			if c == 'd' {
				if _, i, ok = bencodeString(b, i); !ok {
					return 0, false
				}
			}
			if i, ok = skipBencode(b, i, depth+1); !ok {
				return 0, false
			}
		}
	case c >= '0' && c <= '9':
		_, j, ok := bencodeString(b, i)
		return j, ok
	}
	return 0, false
}

// BEP 15 lengths (the protocol ID and actions are package tracker's).
const (
	udpConnectLen   = 16
	udpAnnounceLen  = 98
	udpAnnounceHead = 20 // action, transaction ID, interval, leechers, seeders
)

// appendUDPConnect appends a connect request with transaction ID tid.
func appendUDPConnect(dst []byte, tid uint32) []byte {
	dst = binary.BigEndian.AppendUint64(dst, tracker.UDPProtocolID)
	dst = binary.BigEndian.AppendUint32(dst, tracker.UDPActionConnect)
	return binary.BigEndian.AppendUint32(dst, tid)
}

// appendUDPAnnounce appends an IPv4 announce request (98 bytes).
func appendUDPAnnounce(dst []byte, connID uint64, tid uint32, p *announceParams) []byte {
	dst = binary.BigEndian.AppendUint64(dst, connID)
	dst = binary.BigEndian.AppendUint32(dst, tracker.UDPActionAnnounce)
	dst = binary.BigEndian.AppendUint32(dst, tid)
	dst = append(dst, p.InfoHash[:]...)
	dst = append(dst, p.PeerID[:]...)
	dst = binary.BigEndian.AppendUint64(dst, 0) // downloaded
	dst = binary.BigEndian.AppendUint64(dst, p.Left)
	dst = binary.BigEndian.AppendUint64(dst, 0) // uploaded
	dst = binary.BigEndian.AppendUint32(dst, p.Event)
	dst = binary.BigEndian.AppendUint32(dst, 0) // IP: the packet's source
	dst = binary.BigEndian.AppendUint32(dst, p.Key)
	dst = binary.BigEndian.AppendUint32(dst, uint32(p.NumWant))
	return binary.BigEndian.AppendUint16(dst, p.Port)
}

// udpReply is a decoded UDP tracker reply.
type udpReply struct {
	Action  uint32
	TID     uint32
	ConnID  uint64 // connect replies
	Failure string // error replies
	Peers   int    // announce replies: 6-byte entries after the header
}

// parseUDPReply decodes a connect, announce or error reply. Any input
// returns a reply or an error wrapping errBadReply, never a panic.
func parseUDPReply(b []byte) (udpReply, error) {
	var r udpReply
	if len(b) < 8 {
		return r, fmt.Errorf("%w: %d-byte packet", errBadReply, len(b))
	}
	r.Action = binary.BigEndian.Uint32(b)
	r.TID = binary.BigEndian.Uint32(b[4:])
	switch r.Action {
	case tracker.UDPActionConnect:
		if len(b) < udpConnectLen {
			return r, fmt.Errorf("%w: %d-byte connect reply", errBadReply, len(b))
		}
		r.ConnID = binary.BigEndian.Uint64(b[8:])
	case tracker.UDPActionAnnounce:
		if len(b) < udpAnnounceHead || (len(b)-udpAnnounceHead)%6 != 0 {
			return r, fmt.Errorf("%w: %d-byte announce reply", errBadReply, len(b))
		}
		r.Peers = (len(b) - udpAnnounceHead) / 6
	case tracker.UDPActionError:
		r.Failure = string(b[8:])
		if r.Failure == "" {
			r.Failure = "(empty failure reason)"
		}
	default:
		return r, fmt.Errorf("%w: action %d", errBadReply, r.Action)
	}
	return r, nil
}
