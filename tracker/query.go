package tracker

import (
	"hash/fnv"
	"net/netip"
	"strconv"
)

// Query strings are parsed from the raw bytes of the URL (r.URL.RawQuery),
// not with url.ParseQuery, because real clients send what url.ParseQuery
// gets wrong:
//
//   - %XX escapes in upper or lower case;
//   - any byte other than '&', '=' and '%' left literal, even ones RFC 3986
//     says to escape (so info_hash may arrive half escaped);
//   - '+' meaning the byte '+', not a space (this is a query string, not a
//     form); url.ParseQuery would corrupt a hash containing 0x2B;
//   - key as raw bytes, 8 hex digits, letters, or a signed decimal.
//
// Pairs are separated by '&' only; a pair without '=' has an empty value;
// a malformed escape (a '%' not followed by two hex digits) refuses the
// request, since the value cannot be known. Of a repeated single-valued
// parameter the first wins, except info_hash in an announce, which is
// refused as ambiguous.

// ReplyFormat is how an HTTP announce reply encodes its peer list.
type ReplyFormat struct {
	// Compact selects BEP 23's 6-byte (and BEP 7's 18-byte) peer strings.
	// It is true unless the client sent compact=0.
	Compact bool
	// NoPeerID drops "peer id" from the non-compact dictionaries; the
	// client sent no_peer_id=1.
	NoPeerID bool
}

// ParseAnnounce parses and checks an announce query string (the raw bytes
// after '?'). src is the request's source IP: the peer's address is src
// with the announced port. The ip, ipv4 and ipv6 parameters are ignored:
// honouring them would let anyone point a swarm's peers at a victim's
// address (a traffic amplifier), and the source address is the one that
// can be reached anyway.
//
// cfg supplies DefaultNumWant and MaxNumWant (zero fields mean the
// defaults). Every error is a *Refusal whose reason names the parameter.
// ParseAnnounce never panics and allocates only for an unusually long key.
func ParseAnnounce(rawQuery string, src netip.Addr, cfg *Config) (AnnounceRequest, ReplyFormat, error) {
	var req AnnounceRequest
	format := ReplyFormat{Compact: true}
	defNum, maxNum := numWantLimits(cfg)
	numWant := -1
	var haveHash, havePeer, havePort, haveLeft, haveUp, haveDown, haveEvent, haveNumWant, haveCompact, haveNoPeerID bool
	var kbuf [32]byte
	var vbuf [64]byte
	err := eachPair(rawQuery, func(rawKey, rawVal string) error {
		key, ok := unescape(kbuf[:0], rawKey)
		if !ok {
			return Refuse("a parameter name has a malformed %-escape; escape bytes as %XX with two hex digits")
		}
		switch string(key) {
		case "info_hash":
			if haveHash {
				return Refuse("info_hash given more than once; an announce is for one torrent")
			}
			haveHash = true
			return parseHash((*[20]byte)(&req.InfoHash), rawVal, "info_hash")
		case "peer_id":
			if !firstValue(&havePeer) {
				return nil
			}
			return parseHash((*[20]byte)(&req.PeerID), rawVal, "peer_id")
		case "port":
			if !firstValue(&havePort) {
				return nil
			}
			v, ok := unescape(vbuf[:0], rawVal)
			n, ok2 := parseUint(v)
			if !ok || !ok2 || n < 1 || n > 65535 {
				return Refuse("port must be a number from 1 to 65535")
			}
			req.Addr = netip.AddrPortFrom(src, uint16(n))
		case "uploaded", "downloaded", "left":
			var dst *uint64
			var seen *bool
			switch string(key) {
			case "uploaded":
				dst, seen = &req.Uploaded, &haveUp
			case "downloaded":
				dst, seen = &req.Downloaded, &haveDown
			default:
				dst, seen = &req.Left, &haveLeft
			}
			if !firstValue(seen) {
				return nil
			}
			v, ok := unescape(vbuf[:0], rawVal)
			n, ok2 := parseUint(v)
			if !ok || !ok2 {
				return Refuse(string(key) + " must be an unsigned decimal number of bytes")
			}
			*dst = n
		case "event":
			if !firstValue(&haveEvent) {
				return nil
			}
			v, ok := unescape(vbuf[:0], rawVal)
			if !ok {
				return Refuse("event has a malformed %-escape")
			}
			switch string(v) {
			case "started":
				req.Event = EventStarted
			case "completed":
				req.Event = EventCompleted
			case "stopped":
				req.Event = EventStopped
			case "", "empty", "paused":
				req.Event = EventNone
			default:
				return Refuse("event must be started, completed, stopped, empty or paused")
			}
		case "numwant", "num_want":
			if !firstValue(&haveNumWant) {
				return nil
			}
			v, ok := unescape(vbuf[:0], rawVal)
			if !ok {
				return Refuse("numwant has a malformed %-escape")
			}
			if len(v) > 0 && v[0] == '-' {
				n, ok := parseUint(v[1:])
				if !ok || n == 0 {
					return Refuse("numwant must be a decimal number")
				}
				return nil // negative: the default
			}
			n, ok := parseUint(v)
			if !ok {
				return Refuse("numwant must be a decimal number")
			}
			numWant = int(min(n, uint64(maxNum)))
		case "compact":
			if !firstValue(&haveCompact) {
				return nil
			}
			v, _ := unescape(vbuf[:0], rawVal)
			format.Compact = string(v) != "0"
		case "no_peer_id":
			if !firstValue(&haveNoPeerID) {
				return nil
			}
			v, _ := unescape(vbuf[:0], rawVal)
			format.NoPeerID = string(v) == "1"
		case "key":
			if req.HasKey {
				return nil
			}
			v, ok := unescape(vbuf[:0], rawVal)
			if !ok {
				return Refuse("key has a malformed %-escape")
			}
			if len(v) > 0 {
				req.Key, req.HasKey = ReduceKey(v), true
			}
		}
		return nil
	})
	if err != nil {
		return AnnounceRequest{}, format, err
	}
	switch {
	case !haveHash:
		return AnnounceRequest{}, format, Refuse("missing info_hash: the 20-byte SHA-1 of the torrent's info dictionary, %-escaped")
	case !havePeer:
		return AnnounceRequest{}, format, Refuse("missing peer_id: 20 bytes the client picks, %-escaped")
	case !havePort:
		return AnnounceRequest{}, format, Refuse("missing port: the TCP port this peer accepts connections on")
	case !haveLeft:
		return AnnounceRequest{}, format, Refuse("missing left: the bytes this peer still needs (0 for a seeder)")
	}
	if numWant < 0 {
		numWant = defNum
	}
	if req.Event == EventStopped {
		numWant = 0
	}
	req.NumWant = numWant
	return req, format, nil
}

// firstValue reports whether a parameter is met for the first time, and
// marks it met in *seen: of a repeated single-valued parameter the first
// wins, and the caller ignores the later ones.
func firstValue(seen *bool) bool {
	first := !*seen
	*seen = true
	return first
}

// ParseScrape parses a scrape query string and appends each info_hash to
// dst, in the order given (repeats kept). A scrape without info_hash is
// refused: the tracker does not list every swarm it knows. So is one with
// more than MaxScrapeHashes hashes. Every error is a *Refusal.
func ParseScrape(rawQuery string, dst []InfoHash) ([]InfoHash, error) {
	var kbuf [32]byte
	n := 0
	err := eachPair(rawQuery, func(rawKey, rawVal string) error {
		key, ok := unescape(kbuf[:0], rawKey)
		if !ok {
			return Refuse("a parameter name has a malformed %-escape; escape bytes as %XX with two hex digits")
		}
		if string(key) != "info_hash" {
			return nil
		}
		if n++; n > MaxScrapeHashes {
			return Refuse("a scrape may name at most " + strconv.Itoa(MaxScrapeHashes) + " info_hash values; split it")
		}
		var h InfoHash
		if err := parseHash((*[20]byte)(&h), rawVal, "info_hash"); err != nil {
			return err
		}
		dst = append(dst, h)
		return nil
	})
	if err != nil {
		return dst, err
	}
	if n == 0 {
		return dst, Refuse("scrape needs at least one info_hash; this tracker does not list every torrent")
	}
	return dst, nil
}

// ReduceKey maps a client's key parameter (already unescaped) to 32 bits,
// deterministically, whatever form the client uses:
//
//   - exactly 8 hex digits (either case): their value (libtorrent, and most
//     clients that send hex);
//   - a decimal number, optionally signed, within the int32 or uint32 range:
//     its value modulo 2³² (so "-1" is 0xFFFFFFFF);
//   - anything else (raw bytes, letters, longer strings): the FNV-1a hash of
//     the bytes.
func ReduceKey(v []byte) uint32 {
	if len(v) == 8 {
		var n uint32
		ok := true
		for _, c := range v {
			d, isHex := hexVal(c)
			if !isHex {
				ok = false
				break
			}
			n = n<<4 | uint32(d)
		}
		if ok {
			return n
		}
	}
	if len(v) > 0 && len(v) <= 11 {
		digits, neg := v, false
		if v[0] == '-' || v[0] == '+' {
			digits, neg = v[1:], v[0] == '-'
		}
		if n, ok := parseUint(digits); ok && len(digits) > 0 {
			switch {
			case !neg && n <= 0xFFFFFFFF:
				return uint32(n)
			case neg && n <= 1<<31:
				return uint32(-int64(n))
			}
		}
	}
	h := fnv.New32a()
	h.Write(v)
	return h.Sum32()
}

func numWantLimits(cfg *Config) (def, maxN int) {
	maxN = MaxNumWant
	def = DefaultNumWant
	if cfg != nil {
		if cfg.MaxNumWant > 0 && cfg.MaxNumWant < MaxNumWant {
			maxN = cfg.MaxNumWant
		}
		if cfg.DefaultNumWant > 0 {
			def = cfg.DefaultNumWant
		}
	}
	return min(def, maxN), maxN
}

// eachPair calls fn with the raw key and value of each '&'-separated pair,
// stopping at fn's first error. Empty pairs are skipped.
func eachPair(q string, fn func(key, val string) error) error {
	for len(q) > 0 {
		var pair string
		if i := indexByte(q, '&'); i >= 0 {
			pair, q = q[:i], q[i+1:]
		} else {
			pair, q = q, ""
		}
		if pair == "" {
			continue
		}
		key, val := pair, ""
		if i := indexByte(pair, '='); i >= 0 {
			key, val = pair[:i], pair[i+1:]
		}
		if err := fn(key, val); err != nil {
			return err
		}
	}
	return nil
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// parseHash unescapes raw into exactly 20 bytes, or refuses naming param.
func parseHash(dst *[20]byte, raw, param string) error {
	var buf [20]byte
	n := 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '%' {
			if i+2 >= len(raw) {
				return Refuse(param + " has a malformed %-escape; escape each byte as %XX with two hex digits")
			}
			hi, ok1 := hexVal(raw[i+1])
			lo, ok2 := hexVal(raw[i+2])
			if !ok1 || !ok2 {
				return Refuse(param + " has a malformed %-escape; escape each byte as %XX with two hex digits")
			}
			c = hi<<4 | lo
			i += 2
		}
		if n == len(buf) {
			return Refuse(param + " must be exactly 20 bytes after unescaping; got more")
		}
		buf[n] = c
		n++
	}
	if n != 20 {
		return Refuse(param + " must be exactly 20 bytes after unescaping; got " + strconv.Itoa(n))
	}
	*dst = buf
	return nil
}

// unescape appends the %-decoded bytes of s to dst; '+' stays '+'. ok is
// false for a '%' not followed by two hex digits.
func unescape(dst []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) {
				return dst, false
			}
			hi, ok1 := hexVal(s[i+1])
			lo, ok2 := hexVal(s[i+2])
			if !ok1 || !ok2 {
				return dst, false
			}
			c = hi<<4 | lo
			i += 2
		}
		dst = append(dst, c)
	}
	return dst, true
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// parseUint parses a non-empty unsigned decimal that fits in 64 bits.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (^uint64(0)-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}
