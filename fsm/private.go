package fsm

// Private tracker vocabulary: members and their passkeys, per-torrent
// factors, client prefix lists, books and the ledger. See privstate.go for
// how Apply keeps them.

// Private tracker errors. Like the sentinels in errors.go they keep their
// identity across RPC (Code).
var (
	// ErrMemberExists means a TrackerMember add names a member that
	// exists. Nothing changed.
	ErrMemberExists = newError("member_exists", "member exists")
	// ErrUnknownMember means a command or query names no member. Nothing
	// changed.
	ErrUnknownMember = newError("unknown_member", "unknown member")
	// ErrPasskey means a private announce carries a passkey that is
	// missing, unknown, or revoked (or rotated away). Nothing changed.
	ErrPasskey = newError("passkey", "passkey refused")
	// ErrLedgerGone means a ledger read asked for deltas after a cursor
	// older than the oldest the ledger retains (LedgerRetention).
	ErrLedgerGone = newError("ledger_gone", "ledger cursor too old")
)

// Private tracker limits.
const (
	// PasskeySize is the size of a passkey; it is written as 32 lowercase
	// hex characters.
	PasskeySize = 16
	// MaxMemberName bounds a member's name, in bytes.
	MaxMemberName = 64
	// MaxMembers bounds the members of a tracker.
	MaxMembers = 1 << 20
	// MaxFactorPct bounds a torrent's upload and download factors.
	MaxFactorPct = 10000
	// MaxClientPrefixes bounds each client prefix list.
	MaxClientPrefixes = 256
	// LedgerRetention is how many credited deltas the ledger keeps; the
	// oldest go first. About 100 bytes each in memory.
	LedgerRetention = 1 << 16
	// DefaultMaxRate is the credit rate above which a delta is clamped and
	// counted suspicious, in bytes per second: 1 GiB/s.
	DefaultMaxRate = 1 << 30
)
