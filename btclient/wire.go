package btclient

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"fileshare/tracker"
)

// The wire form of both protocols, built into and read from the caller's
// buffers without allocating, for load generators that send thousands of
// announces a second (the Announce and Scrape methods allocate per call).
// The protocol's numbers (BEP 15's protocol ID and actions, the events)
// are package tracker's, defined once for both ends.

// BEP 15 lengths.
const (
	// ConnectRequestLen is the length of a UDP connect request.
	ConnectRequestLen = 16
	// AnnounceRequestLen is the length of a UDP announce request without
	// BEP 41 options.
	AnnounceRequestLen = 98
	// announceReplyHead is an announce reply's action, transaction ID,
	// interval, leechers and seeders.
	announceReplyHead = 20
)

// AppendAnnounceQuery appends a's HTTP announce query (no leading '?')
// to dst, asking for compact peer lists: the raw 20-byte info_hash and
// peer_id %XX-escaped as BitTorrent clients send them.
func AppendAnnounceQuery(dst []byte, a *Announce) []byte {
	dst = append(dst, "info_hash="...)
	dst = appendEscaped(dst, a.InfoHash[:])
	dst = append(dst, "&peer_id="...)
	dst = appendEscaped(dst, a.PeerID[:])
	dst = append(dst, "&port="...)
	dst = strconv.AppendUint(dst, uint64(a.Port), 10)
	dst = append(dst, "&uploaded="...)
	dst = strconv.AppendUint(dst, a.Uploaded, 10)
	dst = append(dst, "&downloaded="...)
	dst = strconv.AppendUint(dst, a.Downloaded, 10)
	dst = append(dst, "&left="...)
	dst = strconv.AppendUint(dst, a.Left, 10)
	dst = append(dst, "&compact=1"...)
	if name := eventName(a.Event); name != "" {
		dst = append(dst, "&event="...)
		dst = append(dst, name...)
	}
	if a.NumWant > 0 {
		dst = append(dst, "&numwant="...)
		dst = strconv.AppendInt(dst, int64(a.NumWant), 10)
	}
	if a.HasKey {
		dst = append(dst, "&key="...)
		dst = strconv.AppendUint(dst, uint64(a.Key), 16)
	}
	return dst
}

// AppendConnectRequest appends a UDP connect request with transaction ID
// tid to dst.
func AppendConnectRequest(dst []byte, tid uint32) []byte {
	return appendUDPHeader(dst, tracker.UDPProtocolID, tracker.UDPActionConnect, tid)
}

// AppendAnnounceRequest appends a's UDP announce request (98 bytes) with
// connection ID connID and transaction ID tid to dst. The IP field is 0:
// the tracker takes the packet's source.
func AppendAnnounceRequest(dst []byte, connID uint64, tid uint32, a *Announce) []byte {
	dst = appendUDPHeader(dst, connID, tracker.UDPActionAnnounce, tid)
	dst = append(dst, a.InfoHash[:]...)
	dst = append(dst, a.PeerID[:]...)
	dst = binary.BigEndian.AppendUint64(dst, a.Downloaded)
	dst = binary.BigEndian.AppendUint64(dst, a.Left)
	dst = binary.BigEndian.AppendUint64(dst, a.Uploaded)
	dst = binary.BigEndian.AppendUint32(dst, uint32(a.Event))
	dst = binary.BigEndian.AppendUint32(dst, 0) // IP: the packet's source
	var key uint32
	if a.HasKey {
		key = a.Key
	}
	dst = binary.BigEndian.AppendUint32(dst, key)
	numWant := int32(-1) // the tracker's default
	if a.NumWant > 0 {
		numWant = int32(a.NumWant)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(numWant))
	return binary.BigEndian.AppendUint16(dst, a.Port)
}

// appendUDPHeader appends a request's first 16 bytes.
func appendUDPHeader(dst []byte, connID uint64, action, tid uint32) []byte {
	dst = binary.BigEndian.AppendUint64(dst, connID)
	dst = binary.BigEndian.AppendUint32(dst, action)
	return binary.BigEndian.AppendUint32(dst, tid)
}

// AnnounceRequestEvent reports the event of b when b is a UDP announce
// request, for tools that watch or fault a client's traffic.
func AnnounceRequestEvent(b []byte) (tracker.Event, bool) {
	if len(b) < 84 || binary.BigEndian.Uint32(b[8:]) != tracker.UDPActionAnnounce {
		return 0, false
	}
	return tracker.Event(binary.BigEndian.Uint32(b[80:])), true
}

// UDPReply is a decoded UDP tracker reply.
type UDPReply struct {
	Action uint32
	TID    uint32
	// ConnID is a connect reply's connection ID.
	ConnID uint64
	// Failure is an error reply's message ("(empty failure reason)" for
	// an empty one).
	Failure string
	// Peers counts an announce reply's IPv4 (6-byte) peer entries.
	Peers int
}

// ParseUDPReply decodes a connect, IPv4 announce or error reply. Any
// input returns a reply or an error wrapping ErrMalformedReply, never a
// panic; only an error reply allocates (its message).
func ParseUDPReply(b []byte) (UDPReply, error) {
	var r UDPReply
	if len(b) < 8 {
		return r, fmt.Errorf("%w: %d-byte packet", ErrMalformedReply, len(b))
	}
	r.Action = binary.BigEndian.Uint32(b)
	r.TID = binary.BigEndian.Uint32(b[4:])
	switch r.Action {
	case tracker.UDPActionConnect:
		if len(b) < ConnectRequestLen {
			return r, fmt.Errorf("%w: %d-byte connect reply", ErrMalformedReply, len(b))
		}
		r.ConnID = binary.BigEndian.Uint64(b[8:])
	case tracker.UDPActionAnnounce:
		if len(b) < announceReplyHead || (len(b)-announceReplyHead)%6 != 0 {
			return r, fmt.Errorf("%w: %d-byte announce reply", ErrMalformedReply, len(b))
		}
		r.Peers = (len(b) - announceReplyHead) / 6
	case tracker.UDPActionError:
		r.Failure = string(b[8:])
		if r.Failure == "" {
			r.Failure = "(empty failure reason)"
		}
	default:
		return r, fmt.Errorf("%w: action %d", ErrMalformedReply, r.Action)
	}
	return r, nil
}

// AnnounceSummary is what a load generator reads from an HTTP announce
// reply.
type AnnounceSummary struct {
	// Failure is the failure reason ("(empty failure reason)" for an
	// empty one); "" on success.
	Failure  string
	Interval int64 // seconds
	// Peers counts the entries of the compact peers (IPv4) and peers6
	// strings.
	Peers int
}

// ParseAnnounceSummary reads a bencoded HTTP announce reply, a
// dictionary with either "failure reason" or "interval" and compact
// "peers"/"peers6", without decoding the peers. Any input returns a
// summary or an error wrapping ErrMalformedReply, never a panic.
func ParseAnnounceSummary(b []byte) (AnnounceSummary, error) {
	var r AnnounceSummary
	if len(b) == 0 || b[0] != 'd' {
		return r, fmt.Errorf("%w: not a bencoded dictionary", ErrMalformedReply)
	}
	i := 1
	var ok bool
	for {
		if i >= len(b) {
			return r, fmt.Errorf("%w: dictionary not terminated", ErrMalformedReply)
		}
		if b[i] == 'e' {
			i++
			break
		}
		var key []byte
		if key, i, ok = bencodeString(b, i); !ok {
			return r, fmt.Errorf("%w: bad dictionary key", ErrMalformedReply)
		}
		start := i
		if i, ok = skipBencode(b, i, 1); !ok {
			return r, fmt.Errorf("%w: bad value for %q", ErrMalformedReply, key)
		}
		v := b[start:i]
		switch string(key) {
		case "failure reason":
			s, _, ok := bencodeString(v, 0)
			if !ok {
				return r, fmt.Errorf("%w: failure reason is not a string", ErrMalformedReply)
			}
			r.Failure = string(s)
			if r.Failure == "" {
				r.Failure = "(empty failure reason)"
			}
		case "interval":
			n, ok := bencodeInt(v)
			if !ok {
				return r, fmt.Errorf("%w: interval is not an integer", ErrMalformedReply)
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
				return r, fmt.Errorf("%w: %s is not a compact string", ErrMalformedReply, key)
			}
		}
	}
	if i != len(b) {
		return r, fmt.Errorf("%w: %d bytes after the dictionary", ErrMalformedReply, len(b)-i)
	}
	if r.Failure == "" && r.Interval <= 0 {
		return r, fmt.Errorf("%w: neither a failure reason nor a positive interval", ErrMalformedReply)
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
	if i >= len(b) || depth > tracker.MaxBencodeDepth {
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
