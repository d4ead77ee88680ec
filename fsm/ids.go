package fsm

import (
	"crypto/sha256"
	"fmt"
	"net"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on identifiers and metadata. They bound the memory a single command
// can claim and are part of the replicated contract: changing one changes
// which commands are valid, so it needs a new CommandVersion.
const (
	// MaxPeerIDLen is the longest PeerID, in bytes.
	MaxPeerIDLen = 64
	// FileIDLen is the exact length of a FileID: 64 lowercase hex digits.
	FileIDLen = 64
	// MaxNameLen is the longest file name, in bytes of UTF-8.
	MaxNameLen = 255
	// MaxAddrLen is the longest peer address, in bytes.
	MaxAddrLen = 300
	// MinPieceSize is the smallest allowed FileMeta.PieceSize: 16 KiB.
	MinPieceSize = 16 << 10
	// MaxPieceSize is the largest allowed FileMeta.PieceSize: 16 MiB.
	MaxPieceSize = 16 << 20
)

// PeerID names a peer. The peer chooses it; it is 1 to MaxPeerIDLen bytes of
// ASCII letters, digits, '.', '_' and '-'.
type PeerID string

// Validate reports whether id is well formed. The error wraps ErrInvalid.
func (id PeerID) Validate() error {
	if len(id) == 0 || len(id) > MaxPeerIDLen {
		return fmt.Errorf("%w: peer id must be 1..%d bytes, got %d", ErrInvalid, MaxPeerIDLen, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: peer id %q: byte %d is not in [A-Za-z0-9._-]", ErrInvalid, string(id), i)
		}
	}
	return nil
}

// FileID is a file's content identity: the lowercase hex SHA-256 Merkle root
// over its piece hashes, exactly FileIDLen characters.
type FileID string

// Validate reports whether id is 64 lowercase hex digits. The error wraps
// ErrInvalid.
func (id FileID) Validate() error {
	if len(id) != FileIDLen {
		return fmt.Errorf("%w: file id must be %d hex digits, got %d bytes", ErrInvalid, FileIDLen, len(id))
	}
	for i := 0; i < len(id); i++ {
		if unhex(id[i]) < 0 {
			return fmt.Errorf("%w: file id %q: byte %d is not a lowercase hex digit", ErrInvalid, string(id), i)
		}
	}
	return nil
}

// unhex returns the value of a lowercase hex digit, or -1.
func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}

// TokenOf returns the token a peer with this public key proves itself
// with: the key's SHA-256. (A peer's ID is derived from the same hash:
// client.PeerIDOf.) The index stores it at a peer's first JoinPeer;
// the public key is not a secret, since the master accepts a key only from
// a caller that proved possession of it in its TLS handshake.
func TokenOf(pub []byte) Token { return Token(sha256.Sum256(pub)) }

// Token proves a peer's identity: the SHA-256 of the peer's public key
// (TokenOf), computed by the master that authenticated the caller. The FSM
// stores the token given at a peer's first JoinPeer; every later command
// for that peer must carry the same token. The zero Token is invalid, so a
// master that forgets to set it fails loudly instead of letting peers
// share a token.
type Token [32]byte

// IsZero reports whether t is the zero (invalid) token.
func (t Token) IsZero() bool { return t == Token{} }

// FileMeta describes a file as a holder registers it.
type FileMeta struct {
	// ID is the file's Merkle root.
	ID FileID
	// Name is what the registering holder calls the file: 1..MaxNameLen
	// bytes of valid UTF-8 with no NUL byte. Different holders may use
	// different names for the same ID.
	Name string
	// Size is the file length in bytes, >= 0.
	Size int64
	// PieceSize is the piece length in bytes: a power of two between
	// MinPieceSize and MaxPieceSize.
	PieceSize int64
}

// Validate reports whether m is well formed. The error wraps ErrInvalid.
func (m FileMeta) Validate() error {
	if err := m.ID.Validate(); err != nil {
		return err
	}
	if err := validateName(m.Name); err != nil {
		return fmt.Errorf("file %s: %w", m.ID, err)
	}
	if m.Size < 0 {
		return fmt.Errorf("%w: file %s: negative size %d", ErrInvalid, m.ID, m.Size)
	}
	if !validPieceSize(m.PieceSize) {
		return fmt.Errorf("%w: file %s: piece size %d is not a power of two in [%d, %d]",
			ErrInvalid, m.ID, m.PieceSize, MinPieceSize, MaxPieceSize)
	}
	return nil
}

func validPieceSize(n int64) bool {
	return n >= MinPieceSize && n <= MaxPieceSize && n&(n-1) == 0
}

func validateName(name string) error {
	if len(name) == 0 || len(name) > MaxNameLen {
		return fmt.Errorf("%w: name must be 1..%d bytes, got %d", ErrInvalid, MaxNameLen, len(name))
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: name %q is not valid UTF-8", ErrInvalid, name)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("%w: name %q contains a NUL byte", ErrInvalid, name)
	}
	return nil
}

// validateAddr accepts "host:port" with a non-empty host and a decimal port
// in 1..65535, as net.SplitHostPort parses it.
func validateAddr(addr string) error {
	if len(addr) == 0 || len(addr) > MaxAddrLen {
		return fmt.Errorf("%w: address must be 1..%d bytes, got %d", ErrInvalid, MaxAddrLen, len(addr))
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: address %q: %v", ErrInvalid, addr, err)
	}
	if host == "" {
		return fmt.Errorf("%w: address %q has no host", ErrInvalid, addr)
	}
	if !utf8.ValidString(host) || strings.ContainsAny(host, "\x00 \t\r\n") {
		return fmt.Errorf("%w: address %q has a malformed host", ErrInvalid, addr)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("%w: address %q: port must be 1..65535", ErrInvalid, addr)
	}
	return nil
}
