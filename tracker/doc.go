// Package tracker is the BitTorrent tracker front-end of a master: bencode,
// HTTP announce and scrape (BEP 3, 7, 23, 48) and UDP (BEP 15, 41), with
// request parsing that accepts what real clients send. It knows nothing of
// Raft: it calls a Backend, which the master implements over the replicated
// index.
package tracker
