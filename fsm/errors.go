package fsm

// Error is the type of this package's sentinel errors. Code returns a
// stable machine-readable name, which is what crosses the wire between
// masters and peers (see transport.Coded), so errors.Is keeps working on
// the far side of an RPC.
type Error struct{ code, msg string }

func newError(code, msg string) *Error { return &Error{code: code, msg: msg} }

func (e *Error) Error() string { return e.msg }

// Code returns the error's stable wire code.
func (e *Error) Code() string { return e.code }

// Sentinel errors. Every error returned by this package, and every
// Response.Err produced by Apply, wraps exactly one of them; test with
// errors.Is, never with the message text.
var (
	// ErrInvalid means a command or query argument is malformed: a bad
	// PeerID, FileID, name, size, piece size, address, zero RequestID, zero
	// Token, a list over its limit, or bytes that do not decode. Retrying the
	// same input fails the same way.
	ErrInvalid = newError("invalid", "invalid input")

	// ErrUnknownPeer means the command names a peer that has not joined, or
	// has left or been expired. The peer must send JoinPeer again. A retried
	// LeavePeer whose first attempt succeeded also reports ErrUnknownPeer;
	// callers should treat that as success.
	ErrUnknownPeer = newError("unknown_peer", "unknown peer")

	// ErrUnauthorized means the command's Token differs from the one stored
	// when the peer first joined, or an Announce for a swarm record that
	// exists with another IP did not prove with its key that it is the same
	// client. Nothing changed and nothing was remembered for deduplication.
	ErrUnauthorized = newError("unauthorized", "unauthorized")

	// ErrConflict means a RegisterFiles entry names a FileID that the index
	// already holds with a different Size or PieceSize. The error text names
	// the file. Nothing in the command was applied.
	ErrConflict = newError("conflict", "conflicting file metadata")

	// ErrUnknownCommand means encoded bytes carry a command type or version
	// this build does not know. A cluster must be upgraded before any node
	// writes a newer CommandVersion.
	ErrUnknownCommand = newError("unknown_command", "unknown command")

	// ErrNotTracked means an Announce names an info-hash the tracker
	// policy does not accept (denied, or not allowed in allowlist mode).
	// Nothing changed. An operator allows a hash with TrackerPolicy.
	ErrNotTracked = newError("not_tracked", "info-hash not tracked")

	// ErrCorruptSnapshot means Restore rejected its input: bad framing, an
	// unknown format version, a value that violates an invariant, or a
	// digest that does not match the content. The FSM is left unchanged.
	ErrCorruptSnapshot = newError("corrupt_snapshot", "corrupt snapshot")
)
