package transport

import (
	"context"
	"errors"
	"fmt"
)

// Coded is implemented by errors that have a stable, machine-readable code.
// The code is what crosses the wire: a RemoteError with the same code
// matches the original sentinel under errors.Is, on the far side of a call.
type Coded interface {
	error
	Code() string
}

// CodedError is a sentinel error with a stable wire code. Packages declare
// their sentinels with NewError so that errors.Is works across RPC.
type CodedError struct {
	code string
	msg  string
}

// NewError returns a sentinel with the given wire code and message.
func NewError(code, msg string) *CodedError { return &CodedError{code: code, msg: msg} }

func (e *CodedError) Error() string { return e.msg }

// Code returns the stable wire code.
func (e *CodedError) Code() string { return e.code }

var (
	// ErrNotLeader means the node that answered is not the Raft leader. The
	// concrete error is a *NotLeaderError carrying the leader it knows of.
	ErrNotLeader = NewError("not_leader", "not the leader")
	// ErrNoLeader means the cluster has no leader right now (an election is
	// in progress or a majority is unreachable). Retry later.
	ErrNoLeader = NewError("no_leader", "no leader is known; an election may be in progress or a majority of masters is unreachable")
	// ErrConnection means the connection to the remote node failed. For a
	// write the outcome is unknown; retrying with the same request ID is safe.
	ErrConnection = NewError("connection", "connection to the node failed")
	// ErrFrameTooLarge means a frame exceeded MaxFrameSize.
	ErrFrameTooLarge = NewError("frame_too_large", "message larger than the frame size limit")
	// ErrUnknownMethod means the server has no handler for the method.
	ErrUnknownMethod = NewError("unknown_method", "unknown RPC method")
	// ErrBadRequest means the request body could not be decoded.
	ErrBadRequest = NewError("bad_request", "malformed request")
	// ErrShuttingDown means the node is closing and will not serve the call.
	ErrShuttingDown = NewError("shutting_down", "node is shutting down")
	// ErrTimeout means the call's deadline passed before it completed. For a
	// write the outcome is unknown.
	ErrTimeout = NewError("timeout", "deadline exceeded")
	// ErrUnknownOutcome means the node lost leadership while a write was in
	// flight: the write may or may not commit. Retrying with the same request
	// ID is safe; the index applies it at most once.
	ErrUnknownOutcome = NewError("unknown_outcome", "leadership was lost while the write was in flight; its outcome is unknown, retry it with the same request ID")
	// ErrBusy means the leader could not take the write in time (its
	// pipeline is full or a leadership transfer is under way). Nothing was
	// applied; retry.
	ErrBusy = NewError("busy", "the leader is busy (pipeline full or leadership transfer in progress); retry")
	// ErrInternal is used for a remote error that carried no code.
	ErrInternal = NewError("internal", "internal error")
	// ErrNoListener means nothing listens at the address: the connection
	// was refused, or no route leads to the host. Nothing was sent, so the
	// call did not apply. It also matches ErrConnection (so it stays
	// Retryable: the node may be restarting), but a caller that finds no
	// listener at any of its addresses should say so rather than wait.
	ErrNoListener = NewError("no_listener", "nothing listens at the address")
	// ErrNotFileShare means the address answered, but not as a FileShare
	// cluster port: it speaks another protocol (HTTP, say), or one side
	// speaks TLS and the other does not. Retrying cannot help, so it is
	// not Retryable. The concrete error is a *NotFileShareError.
	ErrNotFileShare = NewError("not_fileshare", "the address is not a FileShare cluster port")
	// ErrTLSMismatch means the address is a FileShare port (or at least
	// speaks TLS) but the two sides disagree about TLS: one of them runs
	// with TLS and the other without. It also matches ErrNotFileShare.
	ErrTLSMismatch = NewError("tls_mismatch", "one side speaks TLS and the other plaintext")
)

// What a foreign server's first bytes looked like (NotFileShareError.Answer).
const (
	AnswerHTTP      = "HTTP"                // an HTTP server, e.g. a master's HTTP port
	AnswerTLS       = "TLS"                 // a TLS server, when this side spoke plaintext
	AnswerPlaintext = "plaintext FileShare" // a FileShare port without TLS, when this side spoke TLS
	AnswerUnknown   = ""                    // bytes of no protocol we recognise
)

// NotFileShareError is returned when the server at Addr answers with bytes
// that are not FileShare's protocol. It matches ErrNotFileShare under
// errors.Is, and ErrTLSMismatch too when the server spoke TLS to a
// plaintext client or plaintext FileShare to a TLS client. Its message
// names the address and what to do.
type NotFileShareError struct {
	Addr string
	// Answer says what the server answered like: AnswerHTTP, AnswerTLS,
	// AnswerPlaintext or AnswerUnknown.
	Answer string
	// LocalTLS reports whether this side spoke TLS.
	LocalTLS bool
}

func (e *NotFileShareError) Error() string {
	switch {
	case e.Answer == AnswerHTTP:
		return fmt.Sprintf("%s is not a FileShare master's cluster port (it answered like HTTP); use a master's cluster port, not its HTTP port", e.Addr)
	case e.mismatch() && e.LocalTLS:
		return fmt.Sprintf("%s is a FileShare port without TLS (its cluster runs without TLS), but this side speaks TLS; talk to it without a CA or certificate", e.Addr)
	case e.mismatch():
		return fmt.Sprintf("%s answered with TLS, but this side speaks plaintext: the cluster runs with TLS; give the cluster CA (see README \"Security\")", e.Addr)
	case e.LocalTLS:
		return fmt.Sprintf("%s is not a FileShare master's cluster port (it answered with bytes that are neither TLS nor FileShare's protocol); check the port: use the masters' cluster ports", e.Addr)
	}
	return fmt.Sprintf("%s is not a FileShare master's cluster port (it answered with bytes that are not FileShare's protocol); check the port: use the masters' cluster ports", e.Addr)
}

func (e *NotFileShareError) mismatch() bool {
	return e.Answer == AnswerTLS && !e.LocalTLS || e.Answer == AnswerPlaintext && e.LocalTLS
}

// Code returns ErrNotFileShare's code, so a relayed error keeps its meaning.
func (e *NotFileShareError) Code() string { return ErrNotFileShare.code }

// Is reports whether target is ErrNotFileShare, or ErrTLSMismatch when the
// two sides disagree about TLS.
func (e *NotFileShareError) Is(target error) bool {
	return target == ErrNotFileShare || target == ErrTLSMismatch && e.mismatch()
}

// NotLeaderError is returned by a node that is not the leader. LeaderID and
// LeaderAddr name the leader it believes in, or are empty if it knows none.
// It matches ErrNotLeader under errors.Is.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderAddr == "" {
		return "not the leader, and no leader is known"
	}
	return fmt.Sprintf("not the leader; the leader is %s at %s", e.LeaderID, e.LeaderAddr)
}

// Code returns ErrNotLeader's code.
func (e *NotLeaderError) Code() string { return ErrNotLeader.code }

// Is reports whether target is ErrNotLeader.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// RemoteError is an error returned by a remote handler, as the caller sees
// it. It matches, under errors.Is, any Coded sentinel with the same code.
// It implements Coded, so a master that relays it keeps its code.
type RemoteError struct {
	WireCode string
	Message  string
}

func (e *RemoteError) Error() string { return e.Message }

// Code returns the wire code the remote side sent.
func (e *RemoteError) Code() string { return e.WireCode }

// Is reports whether target is a Coded error with the same code. A remote
// timeout also matches context.DeadlineExceeded, as a local one does.
func (e *RemoteError) Is(target error) bool {
	if target == context.DeadlineExceeded {
		return e.WireCode == ErrTimeout.code
	}
	var c Coded
	if errors.As(target, &c) {
		return c.Code() == e.WireCode
	}
	return false
}

// wireError is an error as encoded in a response frame.
type wireError struct {
	Code       string
	Message    string
	LeaderID   string `codec:",omitempty"`
	LeaderAddr string `codec:",omitempty"`
}

// Retryable reports whether a call that failed with err may succeed when
// retried, possibly against another master: a leader change, a lost
// connection, a busy leader, an unknown outcome (retried with the same
// request ID). Errors that describe the request itself (invalid,
// unauthorized, conflict) are not retryable.
func Retryable(err error) bool {
	for _, e := range []error{ErrNotLeader, ErrNoLeader, ErrConnection, ErrShuttingDown, ErrUnknownOutcome, ErrBusy, ErrTimeout} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func toWire(err error) *wireError {
	if err == nil {
		return nil
	}
	w := &wireError{Code: ErrInternal.code, Message: err.Error()}
	var nl *NotLeaderError
	if errors.As(err, &nl) {
		w.Code = ErrNotLeader.code
		w.LeaderID, w.LeaderAddr = nl.LeaderID, nl.LeaderAddr
		return w
	}
	var c Coded
	switch {
	case errors.As(err, &c):
		w.Code = c.Code()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// The handler ran out of the caller's time (or the server is
		// stopping): for a write, the outcome is unknown.
		w.Code = ErrTimeout.code
	}
	return w
}

func (w *wireError) err() error {
	if w.Code == ErrNotLeader.code {
		return &NotLeaderError{LeaderID: w.LeaderID, LeaderAddr: w.LeaderAddr}
	}
	return &RemoteError{WireCode: w.Code, Message: w.Message}
}
