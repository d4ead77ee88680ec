package client

import (
	"crypto/sha256"
	"encoding/base32"
)

// PeerKeyIDLen is the length of a peer ID derived from a key.
const PeerKeyIDLen = 26

// peerIDEncoding is lowercase RFC 4648 base32 without padding: letters and
// digits only, so a derived ID is also a valid fsm.PeerID.
var peerIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// PeerIDOf returns the self-certifying peer ID of an Ed25519 public key:
// the first 128 bits of its SHA-256 in lowercase base32 (26 characters), as
// Syncthing derives device IDs from certificates. Nobody can claim an ID
// without the key whose hash it is, so an ID can be neither squatted by
// joining first nor taken over. The index's token for the peer
// (fsm.TokenOf) is the whole hash.
func PeerIDOf(pub []byte) string {
	sum := sha256.Sum256(pub)
	return peerIDEncoding.EncodeToString(sum[:16])
}
