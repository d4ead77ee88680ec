package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The cluster's deny list of certificates: serial numbers of CA-signed
// certificates (a master's or an admin's) that the cluster no longer
// accepts, whatever the CA says. It is replicated like the index, so
// every master refuses a revoked certificate at the TLS handshake and
// closes the connections that presented one, and it survives restarts in
// snapshots. Peers are not on it: a peer is its key, and the index already
// ties every write to the key that made it.

// Limits of the deny list.
const (
	// MaxRevocations bounds the deny list. Certificates past their
	// expiry need no entry: remove them (UnrevokeCerts) to make room.
	MaxRevocations = 10000
	// MaxSerialsPerCommand bounds RevokeCerts.Serials and
	// UnrevokeCerts.Serials.
	MaxSerialsPerCommand = 1000
	// MaxSerialLen bounds a serial's hex digits: RFC 5280 serials are at
	// most 20 bytes.
	MaxSerialLen = 40
)

// RevokeCerts adds certificate serial numbers to the deny list. It has
// set semantics: a serial already on it keeps its first Time. A command
// that would take the list past MaxRevocations changes nothing and fails
// with ErrInvalid.
type RevokeCerts struct {
	// Serials are lower-case hex without leading zeros, as
	// transport.SerialOf writes them (ValidSerial).
	Serials []string
	// Time is the leader's clock when it proposed the command, in Unix
	// nanoseconds.
	Time int64
}

// UnrevokeCerts removes serial numbers from the deny list; serials not on
// it are ignored.
type UnrevokeCerts struct {
	Serials []string
}

// Type implements Command.
func (RevokeCerts) Type() CommandType { return CmdRevokeCerts }

// Type implements Command.
func (UnrevokeCerts) Type() CommandType { return CmdUnrevokeCerts }

func (RevokeCerts) isCommand()   {}
func (UnrevokeCerts) isCommand() {}

// ValidSerial reports whether s is a serial as the deny list writes it:
// 1 to MaxSerialLen lower-case hex digits, no leading zero (except "0").
func ValidSerial(s string) error {
	if len(s) == 0 || len(s) > MaxSerialLen {
		return fmt.Errorf("%w: serial %.50q: give 1 to %d hex digits", ErrInvalid, s, MaxSerialLen)
	}
	if len(s) > 1 && s[0] == '0' {
		return fmt.Errorf("%w: serial %q has a leading zero; write it without", ErrInvalid, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("%w: serial %.50q: only lower-case hex digits", ErrInvalid, s)
		}
	}
	return nil
}

func validateSerials(what string, serials []string) error {
	if len(serials) == 0 {
		return fmt.Errorf("%w: %s needs at least one serial", ErrInvalid, what)
	}
	if len(serials) > MaxSerialsPerCommand {
		return fmt.Errorf("%w: %s lists %d serials, limit %d", ErrInvalid, what, len(serials), MaxSerialsPerCommand)
	}
	for _, s := range serials {
		if err := ValidSerial(s); err != nil {
			return err
		}
	}
	return nil
}

// Validate implements Command.
func (c RevokeCerts) Validate() error { return validateSerials("RevokeCerts", c.Serials) }

// Validate implements Command.
func (c UnrevokeCerts) Validate() error { return validateSerials("UnrevokeCerts", c.Serials) }

// revocations is the deny list in the state: a map never changed in
// place (a change installs a new one), so a snapshot shares it safely.
type revocations struct {
	revoked map[string]int64 // serial → Time it was revoked
}

// Revocation is one entry of the deny list.
type Revocation struct {
	Serial string
	Time   int64 // Unix nanoseconds, the leader's clock
}

func (f *FSM) revokeCerts(c RevokeCerts) Response {
	add := 0
	for _, s := range c.Serials {
		if _, ok := f.st.revoked[s]; !ok {
			add++
		}
	}
	if add == 0 {
		return Response{}
	}
	if len(f.st.revoked)+add > MaxRevocations {
		return Response{Err: fmt.Errorf("%w: the deny list holds %d serials and would hold %d, over the limit of %d; remove entries of expired certificates first", ErrInvalid, len(f.st.revoked), len(f.st.revoked)+add, MaxRevocations)}
	}
	m := make(map[string]int64, len(f.st.revoked)+add)
	maps.Copy(m, f.st.revoked)
	for _, s := range c.Serials {
		if _, ok := m[s]; !ok {
			m[s] = c.Time
			f.add(revocationHash(s, c.Time))
		}
	}
	f.st.revoked = m
	return Response{}
}

func (f *FSM) unrevokeCerts(c UnrevokeCerts) Response {
	var m map[string]int64
	for _, s := range c.Serials {
		t, ok := f.st.revoked[s]
		if !ok {
			continue
		}
		if m == nil {
			m = maps.Clone(f.st.revoked)
		}
		if _, still := m[s]; !still {
			continue // listed twice
		}
		delete(m, s)
		f.sub(revocationHash(s, t))
	}
	if m != nil {
		f.st.revoked = m
	}
	return Response{}
}

// Revoked reports whether serial is on the deny list. Safe from any
// goroutine.
func (f *FSM) Revoked(serial string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, ok := f.st.revoked[serial]
	return ok
}

// Revocations returns the deny list, sorted by serial. Safe from any
// goroutine.
func (f *FSM) Revocations() []Revocation {
	f.mu.RLock()
	m := f.st.revoked
	f.mu.RUnlock()
	out := make([]Revocation, 0, len(m))
	for s, t := range m {
		out = append(out, Revocation{Serial: s, Time: t})
	}
	slices.SortFunc(out, func(a, b Revocation) int { return compareSerials(a.Serial, b.Serial) })
	return out
}

// RevokedSet returns the deny list as a set the caller must not change;
// it is the FSM's own, never changed in place, so a caller may keep it
// and compare it by identity with a later call's to see a change. Safe
// from any goroutine.
func (f *FSM) RevokedSet() map[string]int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.revoked
}

// revocationHash is a deny-list entry's share of the state digest.
func revocationHash(serial string, t int64) [32]byte {
	b := make([]byte, 0, 16+len(serial)+binary.MaxVarintLen64)
	b = append(b, "fileshare/revoked\x00"...)
	b = binary.AppendUvarint(b, uint64(len(serial)))
	b = append(b, serial...)
	b = binary.AppendVarint(b, t)
	return sha256.Sum256(b)
}

func (h *hasher) recomputeRevocations(s *state, sum *sum256) {
	for serial, t := range s.revoked {
		sum.add(revocationHash(serial, t))
	}
}

// writeRevocations writes the deny list section of a snapshot: count,
// then (serial str, time varint) in ascending order of serial (by
// length, then bytes, which is numeric order).
func (w *snapWriter) writeRevocations(st *state) {
	serials := slices.Collect(maps.Keys(st.revoked))
	slices.SortFunc(serials, compareSerials)
	w.uvarint(uint64(len(serials)))
	for _, s := range serials {
		w.str(s)
		w.varint(st.revoked[s])
	}
}

func compareSerials(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

func (r *snapReader) readRevocations(st *state) {
	n := r.uvarint()
	if r.err == nil && n > MaxRevocations {
		r.corrupt("deny list of %d serials, limit %d", n, MaxRevocations)
	}
	if r.err != nil || n == 0 {
		return
	}
	m := make(map[string]int64, n)
	prev := ""
	for i := uint64(0); i < n && r.err == nil; i++ {
		s := r.str("serial", MaxSerialLen)
		t := r.varint()
		if r.err != nil {
			return
		}
		if err := ValidSerial(s); err != nil {
			r.corrupt("deny list: %v", err)
			return
		}
		if i > 0 && compareSerials(prev, s) >= 0 {
			r.corrupt("deny list serials out of order: %q after %q", s, prev)
			return
		}
		m[s] = t
		prev = s
	}
	st.revoked = m
}
