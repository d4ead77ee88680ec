package peer

import (
	"errors"
	"fmt"
	"strings"

	"fileshare/client"
	"fileshare/internal/cfgerr"
)

// Sentinel errors of the peer library. Every error a Peer method returns for
// one of these conditions wraps the sentinel; test with errors.Is, never with
// the message text.
var (
	// ErrConfig wraps every configuration mistake New rejects; most
	// are a *ConfigError naming the field.
	ErrConfig = errors.New("invalid peer configuration")

	// ErrClosed means the Peer was closed (or is closing) while the call
	// was running or before it began.
	ErrClosed = errors.New("the peer is closed")

	// ErrDataDirLocked means another running peer process uses the data
	// dir. Two peers must not share one identity and hash cache.
	ErrDataDirLocked = errors.New("the data dir is in use by another running peer")

	// ErrIdentity means the identity file in the data dir exists but cannot
	// be used (unreadable, malformed, or naming another peer than
	// Config.PeerID). The peer does not silently mint a new identity: that
	// would orphan its registrations in the index.
	ErrIdentity = errors.New("unusable peer identity")

	// ErrFileNotFound means the index knows no file with the given ID or
	// name (nobody holds it, or it never existed).
	ErrFileNotFound = errors.New("no file with that ID or name is in the index")

	// ErrAmbiguous means a name does not single out one file: several
	// have it, or none has it and some contain it. The concrete error is
	// an *AmbiguousError listing the candidates.
	ErrAmbiguous = errors.New("the name does not single out one file")

	// ErrNoHonestHolder means every holder that was reachable sent data that
	// failed verification (a piece whose SHA-256 differs from the file's
	// Merkle tree, or a piece-hash list whose root is not the file ID). The
	// error text names the file and the holders that were dropped.
	ErrNoHonestHolder = errors.New("every holder of the file sent data that failed verification")

	// ErrNoHolders means no holder of the file could be reached for longer
	// than the download's stall timeout, or the index lists no holder other
	// than this peer.
	ErrNoHolders = errors.New("no holder of the file could be reached")

	// ErrHoldersChanged means every holder that answered said its copy of
	// the file changed on disk since it registered it (the file's hashes no
	// longer match), and no other holder is left: the file under this ID may
	// be gone from the swarm. Search again for the file's new ID. It is not
	// a verdict on the holders' honesty.
	ErrHoldersChanged = errors.New("the holders' copies of the file changed since they registered it")

	// ErrRefused means the index refused this peer's join, registration or
	// heartbeat for a reason retrying cannot change: the peer is not
	// authorized, is over a quota, or sent a request the masters reject as
	// invalid. The error wraps the masters' own error (test it with
	// errors.Is against fsm.ErrUnauthorized, master.ErrQuota,
	// transport.ErrForbidden…) and says what to do. A Peer that meets it
	// stops registering and heartbeating; Peer.Err returns it.
	ErrRefused = errors.New("the index refused this peer for good")

	// ErrDestinationExists means the download's destination path already
	// exists. Downloads never overwrite a file.
	ErrDestinationExists = errors.New("the destination already exists")

	// ErrDiskFull means a download stopped because the disk (or quota) of
	// its destination ran out of room: a write of the partial file failed
	// with ENOSPC or EDQUOT, which the error also wraps. The pieces verified
	// before it are kept in the partial file and its resume state; running
	// the same download again once there is room continues from them.
	ErrDiskFull = errors.New("no room left on the download's disk")

	// ErrFileTooLarge means a file has more pieces than MaxPieces even with
	// the largest piece size (it is larger than 4 TiB).
	ErrFileTooLarge = errors.New("file too large to share")
)

// AmbiguousError is returned by Resolve when a name does not single out
// one file. It matches ErrAmbiguous under errors.Is.
type AmbiguousError struct {
	// Query is the name the caller gave.
	Query string
	// Candidates are the files that have the name (Named) or whose names
	// contain it, sorted by name then ID.
	Candidates []client.FileSummary
	// Named is true when every candidate has exactly the name Query; false
	// when none has it and the candidates only contain it, or when Prefix.
	Named bool
	// Prefix is true when some candidates fit because their IDs start with
	// Query (and others by ID or by name).
	Prefix bool
}

// Error names the query and the candidates (name and short ID of each).
func (e *AmbiguousError) Error() string {
	names := make([]string, 0, len(e.Candidates))
	for _, c := range e.Candidates {
		names = append(names, fmt.Sprintf("%s (%s)", c.Name, c.ID[:12]))
	}
	if e.Prefix {
		return fmt.Sprintf("%q fits %d files, by name or as the start of an ID: %s; give the file's whole ID", e.Query, len(e.Candidates), strings.Join(names, ", "))
	}
	if !e.Named {
		return fmt.Sprintf("no file is named %q, but %d contain it: %s; give the full name or the file's ID", e.Query, len(e.Candidates), strings.Join(names, ", "))
	}
	return fmt.Sprintf("%d files are named %q: %s; give the file's ID instead", len(e.Candidates), e.Query, strings.Join(names, ", "))
}

// Is reports whether target is ErrAmbiguous.
func (e *AmbiguousError) Is(target error) bool { return target == ErrAmbiguous }

// ConfigError names the Config field at fault (as "DataDir"), never a
// command-line flag; the CLI maps fields to its flags. The same type as
// master.ConfigError.
type ConfigError = cfgerr.Error

// configErr returns a *ConfigError wrapping ErrConfig. reason names
// fields as {Path}; see cfgerr.Error.
func configErr(field, reason string, args ...any) error {
	return cfgerr.New(ErrConfig, field, fmt.Sprintf(reason, args...))
}

// fieldErr is configErr wrapping err instead of ErrConfig.
func fieldErr(err error, field, reason string, args ...any) error {
	return cfgerr.New(err, field, fmt.Sprintf(reason, args...))
}
