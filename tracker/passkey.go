package tracker

// Passkeys: a private tracker names its member in the announce URL,
// either as the first path segment (http://HOST/PASSKEY/announce, as
// Gazelle and Ocelot do) or the last (http://HOST/announce/PASSKEY, as
// UNIT3D and torrust do); a UDP client sends the URL's path in BEP 41 URL
// data. A passkey is 32 hex characters (16 bytes).

// Passkey is a private tracker member's key, decoded.
type Passkey [16]byte

// PasskeyStatus says what an announce URL carried.
type PasskeyStatus uint8

// The passkey states.
const (
	PasskeyNone      PasskeyStatus = iota // the URL has no passkey segment
	PasskeyOK                             // Passkey holds the decoded key
	PasskeyMalformed                      // a segment where the passkey goes is not 32 hex digits
)

// Endpoint is what a tracker URL path asks for.
type Endpoint uint8

// The endpoints.
const (
	EndpointUnknown Endpoint = iota
	EndpointAnnounce
	EndpointScrape
)

func endpointOf[T string | []byte](s T) Endpoint {
	switch string(s) {
	case "announce":
		return EndpointAnnounce
	case "scrape":
		return EndpointScrape
	}
	return EndpointUnknown
}

// ParseTrackerPath splits a URL path ("/announce", "/scrape",
// "/PASSKEY/announce", "/announce/PASSKEY", and the same for scrape; a
// query after '?' is ignored) into the endpoint and the passkey. Any other
// path is EndpointUnknown. It does not allocate.
func ParseTrackerPath(path string) (Endpoint, Passkey, PasskeyStatus) { return parseTrackerPath(path) }

func parseTrackerPath[T string | []byte](path T) (Endpoint, Passkey, PasskeyStatus) {
	for i := 0; i < len(path); i++ {
		if path[i] == '?' {
			path = path[:i]
			break
		}
	}
	var key Passkey
	if len(path) == 0 || path[0] != '/' {
		return EndpointUnknown, key, PasskeyNone
	}
	path = path[1:]
	slash := -1
	for i := 0; i < len(path); i++ {
		if path[i] == '/' {
			if slash >= 0 {
				return EndpointUnknown, key, PasskeyNone
			}
			slash = i
		}
	}
	if slash < 0 {
		return endpointOf(path), key, PasskeyNone
	}
	a, b := path[:slash], path[slash+1:]
	seg := b
	ep := endpointOf(a)
	if ep == EndpointUnknown {
		ep, seg = endpointOf(b), a
	}
	if ep == EndpointUnknown {
		return EndpointUnknown, key, PasskeyNone
	}
	if !decodePasskey(&key, seg) {
		return ep, Passkey{}, PasskeyMalformed
	}
	return ep, key, PasskeyOK
}

func decodePasskey[T string | []byte](dst *Passkey, s T) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := unhex(s[2*i])
		lo, ok2 := unhex(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
