package bench

import (
	"fileshare/btclient"
)

// appendHTTPAnnounce appends an HTTP/1.1 GET of path (the announce URL's
// path, e.g. "/announce") with a's query to dst, keeping the connection
// alive. The query is btclient's; the benchmark writes the request
// itself to reuse one buffer and one connection without net/http's
// allocations.
func appendHTTPAnnounce(dst []byte, host, path string, a *btclient.Announce) []byte {
	dst = append(dst, "GET "...)
	dst = append(dst, path...)
	dst = append(dst, '?')
	dst = btclient.AppendAnnounceQuery(dst, a)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	dst = append(dst, "\r\nUser-Agent: fileshare-bench\r\nAccept-Encoding: identity\r\n\r\n"...)
	return dst
}
