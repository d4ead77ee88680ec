// Package tracker is the BitTorrent tracker front-end of a master: bencode,
// HTTP announce and scrape (BEP 3, 7, 23, 48) and UDP (BEP 15, 41), with
// request parsing that accepts what real clients send. It knows nothing of
// Raft: it calls a Backend, which the master implements over the replicated
// index (trackertest.MemoryBackend is an in-memory one for tests).
//
// # How a request flows
//
// HTTP: an HTTPServer (keep-alive, timeouts, 8 KiB header cap, connection
// caps in all and per source: IPv4 address, or IPv6 address within /64
// within /48) hands each request to an HTTPHandler. GET /announce is
// parsed from the raw query bytes by ParseAnnounce (never url.ParseQuery:
// see query.go for the quirks), the source IP is taken from the connection
// (the ip parameter is ignored), and Backend.Announce is called with a
// context that ends within BackendTimeout. The reply is bencoded into a
// pooled buffer (the handler allocates nothing per announce): interval (with jitter) and min interval, complete,
// incomplete, and peers as BEP 23 compact 6-byte IPv4 entries plus BEP 7
// peers6 18-byte IPv6 entries, or (compact=0) a list of dictionaries.
// GET /scrape (BEP 48) takes one or more info_hash values — never none: we
// do not dump every swarm — and answers a files dictionary.
//
// UDP: ListenUDP opens one SO_REUSEPORT socket per core (Linux; one
// socket elsewhere) and UDPServer.Serve runs a read loop on each that
// moves 32 datagrams per system call (recvmmsg, sendmmsg) and answers
// connects, scrapes and renewals in place, with no goroutine or
// allocation per datagram. Announces that carry an event usually change
// membership, which the Backend answers only after commit, so they go to
// a bounded set of workers; a loop stuck in a Backend call anyway is
// replaced (udploop.go says why and how). Each source (IPv4 address, IPv6
// /64 within /48) is held to a packet rate, and one that keeps sending
// bad connection IDs is banned for a while; dropped datagrams are counted
// and logged, at most one line per kind every few seconds. A connect is
// answered with a stateless connection ID (a MAC of the client's address
// and a time slot, keyed by the Backend's ConnIDSecrets when it has them,
// so every master accepts every master's IDs), and announce and scrape
// only with a valid one, which proves the client can receive at its
// source address.
//
// A Backend error that is a Refusal becomes the failure reason (HTTP
// "failure reason", UDP error action); any other error is logged and the
// client gets a generic reason, so internal detail never reaches a
// stranger. Parse errors are Refusals that name the parameter. Each server
// counts what it did in Stats.
//
// # What is implemented
//
//   - BEP 3: announce and bencoded replies; failure reasons as HTTP 200.
//   - BEP 7: peers6 for IPv6 peers; UDP replies by the packet's family.
//   - BEP 12: MakeTorrent writes announce-list tiers.
//   - BEP 15: UDP connect, announce, scrape (up to 74 hashes), error.
//   - BEP 23: compact peer lists (the default; compact=0 for the old form,
//     no_peer_id=1 to drop peer ids from it).
//   - BEP 27: MakeTorrent's private flag.
//   - BEP 41: UDP URL-data options parsed and ignored.
//   - BEP 48: HTTP scrape.
//
// Not implemented: a full scrape, the ip parameter, HTTP redirects between
// masters (every master answers for the whole cluster), tracker id, and v2
// metainfo in MakeTorrent.
package tracker
