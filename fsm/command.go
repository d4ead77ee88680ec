package fsm

import (
	"fmt"
	"slices"
	"strings"
)

// CommandType is the first byte of every encoded command.
type CommandType uint8

// The command types. Their values are part of the log format: never reuse or
// renumber one.
const (
	CmdJoinPeer        CommandType = 1
	CmdLeavePeer       CommandType = 2
	CmdRegisterFiles   CommandType = 3
	CmdUnregisterFiles CommandType = 4
	CmdExpirePeers     CommandType = 5
	CmdBatch           CommandType = 6

	CmdAnnounce         CommandType = 7
	CmdExpireSwarmPeers CommandType = 8
	CmdTrackerPolicy    CommandType = 9

	CmdRevokeCerts     CommandType = 10
	CmdUnrevokeCerts   CommandType = 11
	CmdSetConnIDSecret CommandType = 12
	CmdAnnounceBatch   CommandType = 13
)

// String returns the command's Go type name, or "CommandType(n)".
func (t CommandType) String() string {
	switch t {
	case CmdJoinPeer:
		return "JoinPeer"
	case CmdLeavePeer:
		return "LeavePeer"
	case CmdRegisterFiles:
		return "RegisterFiles"
	case CmdUnregisterFiles:
		return "UnregisterFiles"
	case CmdExpirePeers:
		return "ExpirePeers"
	case CmdBatch:
		return "Batch"
	case CmdAnnounce:
		return "Announce"
	case CmdExpireSwarmPeers:
		return "ExpireSwarmPeers"
	case CmdTrackerPolicy:
		return "TrackerPolicy"
	case CmdRevokeCerts:
		return "RevokeCerts"
	case CmdUnrevokeCerts:
		return "UnrevokeCerts"
	case CmdSetConnIDSecret:
		return "SetConnIDSecret"
	case CmdAnnounceBatch:
		return "AnnounceBatch"
	case CmdTrackerMember:
		return "TrackerMember"
	case CmdTorrentFactors:
		return "TorrentFactors"
	case CmdClientPrefixes:
		return "ClientPrefixes"
	case CmdPrivateAnnounceBatch:
		return "PrivateAnnounceBatch"
	}
	return fmt.Sprintf("CommandType(%d)", uint8(t))
}

// CommandVersion is the body version Encode writes (byte 1 of an encoded
// command). Decode accepts versions 1 through CommandVersion.
const CommandVersion = 1

// Size limits enforced by Encode, Decode and Validate, so that hostile bytes
// cannot make a node allocate without bound.
const (
	// MaxFilesPerCommand bounds RegisterFiles.Files and UnregisterFiles.Files.
	MaxFilesPerCommand = 10000
	// MaxPeersPerExpire bounds ExpirePeers.Peers.
	MaxPeersPerExpire = 10000
	// MaxBatchCommands bounds Batch.Commands.
	MaxBatchCommands = 4096
	// MaxCommandSize bounds the length of one encoded command, a Batch
	// included. It is far above what a log entry should carry: keep entries
	// under raft.SuggestedMaxDataSize (512 KiB) by splitting large
	// registrations and batches before proposing them.
	MaxCommandSize = 8 << 20
)

// Command is one of JoinPeer, LeavePeer, RegisterFiles, UnregisterFiles,
// ExpirePeers, Batch, Announce, ExpireSwarmPeers, TrackerPolicy,
// RevokeCerts, UnrevokeCerts, SetConnIDSecret, AnnounceBatch,
// TrackerMember, TorrentFactors, ClientPrefixes and PrivateAnnounceBatch. The set is
// closed: other types cannot implement it.
type Command interface {
	// Type returns the command's type byte.
	Type() CommandType
	// Validate reports whether the command is well formed, without looking
	// at any state. The error wraps ErrInvalid. Encode and Decode call it,
	// so a decoded command is always valid.
	Validate() error

	isCommand()
}

// JoinPeer announces a peer. The first JoinPeer for a PeerID creates the peer
// (JoinedAt = Time) and stores its Token; a later one with the same Token
// updates Addr and LastJoin and keeps the peer's files; one with a different
// Token fails with ErrUnauthorized.
type JoinPeer struct {
	Peer  PeerID
	Token Token
	// Addr is where other peers reach this peer's piece server: "host:port"
	// with a non-empty host and a port in 1..65535.
	Addr string
	// RequestID identifies the client request for deduplication; non-zero.
	RequestID uint64
	// Time is the leader's clock when it proposed the command, in Unix
	// nanoseconds.
	Time int64
}

// LeavePeer removes a peer and all its holdings. A file left without holders
// leaves the index.
type LeavePeer struct {
	Peer      PeerID
	Token     Token
	RequestID uint64
}

// RegisterFiles records that Peer holds Files. It has set semantics:
// registering a file the peer already holds is not an error and only updates
// the peer's name for it. It is atomic: if any entry conflicts with the index
// (same ID, different Size or PieceSize) nothing is applied and the result is
// ErrConflict. An ID may appear more than once only with identical metadata.
type RegisterFiles struct {
	Peer      PeerID
	Token     Token
	RequestID uint64
	Files     []FileMeta // at most MaxFilesPerCommand
}

// UnregisterFiles records that Peer no longer holds Files. It has set
// semantics: files the peer does not hold are ignored. A file left without
// holders leaves the index.
type UnregisterFiles struct {
	Peer      PeerID
	Token     Token
	RequestID uint64
	Files     []FileID // at most MaxFilesPerCommand
}

// ExpirePeers is proposed by the leader for peers whose lease ran out. Each
// listed peer is removed as by LeavePeer, except unknown peers and peers
// whose most recent JoinPeer carries a Time later than this command's Time
// (they announced themselves after the leader decided); both are skipped.
// Response.Expired lists the peers actually removed.
type ExpirePeers struct {
	Peers []PeerID // at most MaxPeersPerExpire; order and repeats do not matter
	// Time is the leader's clock when it decided, in Unix nanoseconds.
	Time int64
}

// Batch packs several encoded commands into one log entry. Each element is
// the output of Encode for a command that is not itself a Batch. Apply runs
// them in order as if each had its own entry and reports one Response each.
// A malformed element fails alone; it does not fail its neighbours.
type Batch struct {
	Commands [][]byte // at most MaxBatchCommands
}

// Type implements Command.
func (JoinPeer) Type() CommandType { return CmdJoinPeer }

// Type implements Command.
func (LeavePeer) Type() CommandType { return CmdLeavePeer }

// Type implements Command.
func (RegisterFiles) Type() CommandType { return CmdRegisterFiles }

// Type implements Command.
func (UnregisterFiles) Type() CommandType { return CmdUnregisterFiles }

// Type implements Command.
func (ExpirePeers) Type() CommandType { return CmdExpirePeers }

// Type implements Command.
func (Batch) Type() CommandType { return CmdBatch }

func (JoinPeer) isCommand()        {}
func (LeavePeer) isCommand()       {}
func (RegisterFiles) isCommand()   {}
func (UnregisterFiles) isCommand() {}
func (ExpirePeers) isCommand()     {}
func (Batch) isCommand()           {}

// validateAuth checks the fields every peer-issued command carries.
func validateAuth(peer PeerID, token Token, req uint64) error {
	if err := peer.Validate(); err != nil {
		return err
	}
	if token.IsZero() {
		return fmt.Errorf("%w: peer %s: zero token", ErrInvalid, peer)
	}
	if req == 0 {
		return fmt.Errorf("%w: peer %s: zero request id", ErrInvalid, peer)
	}
	return nil
}

// Validate implements Command.
func (c JoinPeer) Validate() error {
	if err := validateAuth(c.Peer, c.Token, c.RequestID); err != nil {
		return err
	}
	return validateAddr(c.Addr)
}

// Validate implements Command.
func (c LeavePeer) Validate() error {
	return validateAuth(c.Peer, c.Token, c.RequestID)
}

// Validate implements Command.
func (c RegisterFiles) Validate() error {
	if err := validateAuth(c.Peer, c.Token, c.RequestID); err != nil {
		return err
	}
	if err := validateEach(c.Files, MaxFilesPerCommand, "files"); err != nil {
		return err
	}
	if len(c.Files) < 2 {
		return nil
	}
	sorted := slices.Clone(c.Files)
	slices.SortFunc(sorted, func(a, b FileMeta) int { return strings.Compare(string(a.ID), string(b.ID)) })
	for i := 1; i < len(sorted); i++ {
		if sorted[i].ID == sorted[i-1].ID && sorted[i] != sorted[i-1] {
			return fmt.Errorf("%w: file %s listed twice with different metadata", ErrInvalid, sorted[i].ID)
		}
	}
	return nil
}

// Validate implements Command.
func (c UnregisterFiles) Validate() error {
	if err := validateAuth(c.Peer, c.Token, c.RequestID); err != nil {
		return err
	}
	return validateEach(c.Files, MaxFilesPerCommand, "files")
}

// Validate implements Command.
func (c ExpirePeers) Validate() error {
	return validateEach(c.Peers, MaxPeersPerExpire, "peers")
}

// validateEach checks that list has at most limit elements (what names
// them in the error) and that each is valid.
func validateEach[T interface{ Validate() error }](list []T, limit int, what string) error {
	if len(list) > limit {
		return fmt.Errorf("%w: %d %s, limit %d", ErrInvalid, len(list), what, limit)
	}
	for _, x := range list {
		if err := x.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Validate implements Command. It checks the framing of each element (at
// least two bytes, not a Batch), not the element's body: a malformed body
// fails only that element when applied.
func (c Batch) Validate() error {
	if len(c.Commands) > MaxBatchCommands {
		return fmt.Errorf("%w: %d commands in batch, limit %d", ErrInvalid, len(c.Commands), MaxBatchCommands)
	}
	for i, b := range c.Commands {
		if len(b) < 2 {
			return fmt.Errorf("%w: batch element %d is %d bytes", ErrInvalid, i, len(b))
		}
		if CommandType(b[0]) == CmdBatch {
			return fmt.Errorf("%w: batch element %d is a batch", ErrInvalid, i)
		}
	}
	return nil
}
