package client

import (
	"bytes"
	"errors"
	"net/netip"
)

// The UDP observation protocol: a peer sends a binding request from its
// QUIC socket to a master's cluster address (UDP, same port as the TCP
// cluster port), and the master answers with the address the datagram
// came from, which is the peer's UDP mapping on its NAT (what STUN does;
// ours is smaller and needs no library). The first byte of both messages
// is below 0x40, so a QUIC stack sharing the socket (quic-go's
// ReadNonQUICPacket) hands them to the peer instead of parsing them as
// QUIC.
//
// Request, BindingRequestLen bytes: 0x01 "FSU" (magic), a 12-byte
// transaction ID, zero padding. The padding makes the request at least as
// long as any answer, so a forged source address gains an attacker no
// amplification.
//
// Response, at most BindingRequestLen bytes: 0x02 "FSU", the transaction
// ID, one length byte, the observed address as text (ip:port, no IPv6
// zone).
const (
	BindingRequestLen = 64
	bindingIDLen      = 12
)

var (
	bindingReqMagic  = [4]byte{0x01, 'F', 'S', 'U'}
	bindingRespMagic = [4]byte{0x02, 'F', 'S', 'U'}
)

// ErrBadBinding is returned for a datagram that is not a well-formed
// binding message.
var ErrBadBinding = errors.New("not a well-formed UDP binding message")

// AppendBindingRequest appends a binding request with transaction ID id.
func AppendBindingRequest(b []byte, id [bindingIDLen]byte) []byte {
	b = append(b, bindingReqMagic[:]...)
	b = append(b, id[:]...)
	return append(b, make([]byte, BindingRequestLen-4-bindingIDLen)...)
}

// ParseBindingRequest returns the transaction ID of a binding request.
func ParseBindingRequest(b []byte) (id [bindingIDLen]byte, err error) {
	if len(b) != BindingRequestLen || !bytes.Equal(b[:4], bindingReqMagic[:]) {
		return id, ErrBadBinding
	}
	copy(id[:], b[4:])
	return id, nil
}

// AppendBindingResponse appends the answer to request id: the observed
// address from.
func AppendBindingResponse(b []byte, id [bindingIDLen]byte, from netip.AddrPort) []byte {
	// Without a zone the longest address (47 bytes) fits the 64.
	s := netip.AddrPortFrom(from.Addr().WithZone(""), from.Port()).String()
	b = append(b, bindingRespMagic[:]...)
	b = append(b, id[:]...)
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// ParseBindingResponse returns the transaction ID and observed address of
// a binding response.
func ParseBindingResponse(b []byte) (id [bindingIDLen]byte, from netip.AddrPort, err error) {
	const head = 4 + bindingIDLen + 1
	if len(b) < head || len(b) > BindingRequestLen || !bytes.Equal(b[:4], bindingRespMagic[:]) || int(b[head-1]) != len(b)-head {
		return id, from, ErrBadBinding
	}
	copy(id[:], b[4:])
	from, err = netip.ParseAddrPort(string(b[head:]))
	if err != nil {
		return id, from, ErrBadBinding
	}
	return id, from, nil
}
