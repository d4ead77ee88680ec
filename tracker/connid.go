package tracker

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"time"
)

// ConnIDSecrets is implemented by a Backend whose UDP connection IDs are valid on every master.
type ConnIDSecrets interface {
	// ConnIDSecrets returns the cluster's connection-ID secrets, newest first: the tracker signs with the first and accepts any. Nil or empty: the tracker uses a secret of its own process.
	ConnIDSecrets() [][]byte
}

// Connection IDs (BEP 15) are stateless: a keyed MAC of the client's
// address and a time slot, so any server holding the same secret accepts
// an ID another issued, and nothing is stored per client.
//
// Layout of the 64-bit ID: the top byte is the time slot modulo 256, the
// other 56 bits a MAC of (IP, port, slot). The slot byte lets a check
// compute one MAC per secret instead of one per slot it accepts; 56 bits
// leave a blind guess a 2⁻⁵⁶ chance.
//
// The MAC is AES-128 in CBC-MAC over two fixed-length blocks (the IPv6 or
// IPv4-mapped address, then port and slot), which is a pseudo-random
// function for fixed-length input. It was chosen over HMAC-SHA256 (what
// this tracker used before) because it costs two AES block operations —
// tens of nanoseconds with AES instructions — where an HMAC costs four
// SHA-256 compressions and a check of an expired or forged ID, which a
// flood is made of, tried every accepted slot; and over SipHash because
// the standard library has AES and not SipHash. The AES key is SHA-256
// of a domain string and the secret, so a secret of any length works and
// is used for nothing else.
const (
	// connIDSlot is the length of one connection-ID time slot. An ID is
	// accepted in the slot it was made in, the two after (so it works for
	// at least two minutes, BEP 15's window, and at most three), and the
	// one before, so that a master whose clock is a little behind the
	// issuer's accepts it too.
	connIDSlot = 60 * time.Second
	// connIDPast is how many slots back an ID is accepted.
	connIDPast = 2
	// connIDFuture is how many slots ahead an ID is accepted (clock skew
	// between masters).
	connIDFuture = 1
	// connIDDomain separates this use of a secret from any other.
	connIDDomain = "fileshare tracker udp connection id v1\x00"
)

// connIDKeys is one set of secrets turned into ciphers, newest first. It
// is immutable once built.
type connIDKeys struct {
	raw    [][]byte // copies of the secrets, to see when they change
	blocks []cipher.Block
}

func newConnIDKeys(secrets [][]byte) *connIDKeys {
	k := &connIDKeys{}
	for _, s := range secrets {
		if len(s) == 0 {
			continue
		}
		h := sha256.New()
		h.Write([]byte(connIDDomain))
		h.Write(s)
		sum := h.Sum(nil)
		b, err := aes.NewCipher(sum[:16])
		if err != nil { // cannot happen: the key is 16 bytes
			panic("tracker: aes.NewCipher with a 16-byte key: " + err.Error())
		}
		k.raw = append(k.raw, bytes.Clone(s))
		k.blocks = append(k.blocks, b)
	}
	return k
}

// same reports whether k was built from secrets (ignoring empty ones).
func (k *connIDKeys) same(secrets [][]byte) bool {
	i := 0
	for _, s := range secrets {
		if len(s) == 0 {
			continue
		}
		if i >= len(k.raw) || !bytes.Equal(k.raw[i], s) {
			return false
		}
		i++
	}
	return i == len(k.raw)
}

// connIDRing holds the keys a server signs and checks with: the backend's
// (ConnIDSecrets) when it has some, else the server's own.
type connIDRing struct {
	src  ConnIDSecrets // nil if the backend has none
	own  *connIDKeys
	last atomic.Pointer[connIDKeys] // the backend's, as last built
}

// keys returns the keys to use now. It asks the backend (if it has
// secrets) and rebuilds the ciphers only when the secrets changed, so it
// is cheap enough to call per batch of packets.
func (r *connIDRing) keys() *connIDKeys {
	if r.src == nil {
		return r.own
	}
	secrets := r.src.ConnIDSecrets()
	if len(secrets) == 0 {
		return r.own
	}
	if k := r.last.Load(); k != nil && k.same(secrets) {
		return k
	}
	k := newConnIDKeys(secrets)
	if len(k.blocks) == 0 {
		return r.own
	}
	r.last.Store(k)
	return k
}

// connIDMAC computes connection IDs; it holds scratch space (so it is used
// by one goroutine at a time) that keeps slices passed to cipher.Block off
// the heap per call.
type connIDMAC struct {
	x [aes.BlockSize]byte
}

func slotOf(t time.Time) uint64 { return uint64(t.Unix() / int64(connIDSlot/time.Second)) }

// id is the connection ID for from in slot under b.
func (m *connIDMAC) id(b cipher.Block, from netip.AddrPort, slot uint64) uint64 {
	m.x = from.Addr().As16()
	b.Encrypt(m.x[:], m.x[:])
	p := from.Port()
	m.x[0] ^= byte(p >> 8)
	m.x[1] ^= byte(p)
	binary.BigEndian.PutUint64(m.x[2:10], binary.BigEndian.Uint64(m.x[2:10])^slot)
	b.Encrypt(m.x[:], m.x[:])
	return uint64(byte(slot))<<56 | binary.BigEndian.Uint64(m.x[:8])>>8
}

// issue returns a fresh ID for from, signed with the newest key.
func (m *connIDMAC) issue(k *connIDKeys, from netip.AddrPort, now time.Time) uint64 {
	return m.id(k.blocks[0], from, slotOf(now))
}

// valid reports whether id was issued to from, under any of k's keys, in
// a slot still accepted at now.
func (m *connIDMAC) valid(k *connIDKeys, id uint64, from netip.AddrPort, now time.Time) bool {
	cur := slotOf(now)
	tag := byte(id >> 56)
	for s := cur - connIDPast; s <= cur+connIDFuture; s++ {
		if byte(s) != tag {
			continue
		}
		for _, b := range k.blocks {
			if m.id(b, from, s) == id {
				return true
			}
		}
		return false
	}
	return false
}
