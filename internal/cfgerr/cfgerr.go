// Package cfgerr is the one shape of a configuration error that the
// libraries (master, peer, jepsenlike) return: it names the Config field
// at fault, never a command-line flag, so each caller can say it in its
// own terms (the CLI maps fields to its flags; see cmd/fileshare).
package cfgerr

import (
	"regexp"
	"strings"
)

// Error is a configuration mistake, or a failure a configuration field
// must change to fix (a port in use, a data dir that is not writable).
//
// Reason says what went wrong and what to do; it names fields as {Path},
// e.g. "{Tracker.PeerLifetime} must exceed {Tracker.Interval}", so that
// Format can spell each one as its caller does. Error spells them as the
// field paths themselves.
type Error struct {
	// Field is the path of the field at fault in the library's Config,
	// e.g. "PeerLease" or "Tracker.Interval".
	Field string
	// Reason is the explanation, naming fields as {Path}.
	Reason string
	// Err is what the error wraps: the library's ErrConfig, or a
	// sentinel such as ErrDataDirLocked. Nil wraps nothing.
	Err error
}

// New returns an Error for field, wrapping err, with the reason given.
func New(err error, field, reason string) *Error {
	return &Error{Field: field, Reason: reason, Err: err}
}

// Error spells fields as their paths.
func (e *Error) Error() string { return e.Format(nil) }

// Unwrap returns Err, so errors.Is(err, master.ErrConfig) holds.
func (e *Error) Unwrap() error { return e.Err }

var fieldRef = regexp.MustCompile(`\{([A-Za-z][A-Za-z0-9.]*)\}`)

// Format writes the error with each {Path} in Reason replaced by
// name(Path); a nil name, or one that returns "", keeps the path.
func (e *Error) Format(name func(field string) string) string {
	reason := fieldRef.ReplaceAllStringFunc(e.Reason, func(m string) string {
		path := m[1 : len(m)-1]
		if name != nil {
			if n := name(path); n != "" {
				return n
			}
		}
		return path
	})
	if e.Err == nil {
		return reason
	}
	var b strings.Builder
	b.WriteString(e.Err.Error())
	b.WriteString(": ")
	b.WriteString(reason)
	return b.String()
}
