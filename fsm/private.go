package fsm

import "fmt"

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

// More private tracker errors.
var (
	// ErrClientRefused means an announce's peer_id starts with a denied
	// prefix, or with none of the allowed ones (ClientPrefixes). Nothing
	// changed.
	ErrClientRefused = newError("client_refused", "client refused")
)

// The private tracker's command types (see CommandType).
const (
	CmdTrackerMember        CommandType = 14
	CmdTorrentFactors       CommandType = 15
	CmdClientPrefixes       CommandType = 16
	CmdPrivateAnnounceBatch CommandType = 17
)

// MemberOp is what a TrackerMember command does.
type MemberOp uint8

// The member operations.
const (
	// MemberAdd creates a member with Passkey.
	MemberAdd MemberOp = 1
	// MemberRotate gives a member Passkey instead of its old one, and
	// reinstates it if it was revoked.
	MemberRotate MemberOp = 2
	// MemberRevoke refuses the member's passkey from now on; its books
	// stay.
	MemberRevoke MemberOp = 3
)

// TrackerMember adds, rotates or revokes a member of the private tracker.
// The leader draws the passkey from crypto/rand and puts it in the
// command, so the FSM stays deterministic. Add fails with ErrMemberExists
// for an existing name, rotate and revoke with ErrUnknownMember for an
// unknown one; a passkey that another member holds is refused
// with ErrInvalid. A RequestID seen before (the private policy keeps a
// window of DedupWindow) is a Duplicate and changes nothing.
type TrackerMember struct {
	Op        MemberOp
	Name      string
	Passkey   []byte // PasskeySize bytes for add and rotate, empty for revoke
	RequestID uint64
	Time      int64 // the leader's clock, Unix nanoseconds
}

// TorrentFactors sets the percentages applied to a torrent's credited
// upload and download (100 normal, 0 freeleech, 200 double). Deduplicated
// like TrackerMember.
type TorrentFactors struct {
	InfoHash    InfoHash
	UploadPct   uint32 // at most MaxFactorPct
	DownloadPct uint32 // at most MaxFactorPct
	RequestID   uint64
}

// ClientPrefixes replaces the peer-ID prefix lists that private announces
// are checked against: a peer_id starting with a Deny prefix is refused,
// and, if Allow is not empty, one starting with no Allow prefix. Each
// prefix is 1 to 20 bytes. Deduplicated like TrackerMember.
type ClientPrefixes struct {
	Allow     []string // at most MaxClientPrefixes
	Deny      []string // at most MaxClientPrefixes
	RequestID uint64
}

// SwarmCredit is the event of a PrivateAnnounce that only reports
// counters (a re-announce that changes no membership): it credits an
// existing record and never creates one.
const SwarmCredit SwarmEvent = 4

// SwarmStarted is the event of a PrivateAnnounce for a client's started.
// It applies as SwarmUpdate, but a master never answers it as a no-op:
// on a record that exists it still commits, so the counters it carries
// (back at 0 when a client restarted) reach the books in the order the
// client sent them. Soft, they could reach the leader after a later
// report heard by another master and be taken for stale, and the growth
// before the restart would look like growth after it.
const SwarmStarted SwarmEvent = 2

// asOpen returns a with a private-only event replaced by the open one it
// applies as, for Announce.Validate.
func asOpen(a Announce) Announce {
	switch a.Event {
	case SwarmStarted:
		a.Event = SwarmUpdate
	case SwarmCredit:
		// A credit changes no record, so its port does not matter.
		a.Event = SwarmUpdate
		if a.Port == 0 {
			a.Port = 1
		}
	}
	return a
}

// ValidatePrivate is Validate for the announce of a PrivateAnnounce,
// which may carry SwarmStarted or SwarmCredit.
func (c Announce) ValidatePrivate() error { return asOpen(c).Validate() }

// PrivateAnnounce is an Announce made with a member's passkey, with the
// cumulative counters the client reported.
type PrivateAnnounce struct {
	Announce
	Passkey    [PasskeySize]byte
	Uploaded   uint64
	Downloaded uint64
	// At is the clock of the master that heard the announce, Unix
	// nanoseconds: reports are credited in At order per record, so a
	// report relayed late is never taken for a counter reset.
	At int64
}

// PrivateAnnounceBatch is AnnounceBatch for a private tracker: each
// announce is applied as an Announce (SwarmCredit ones change no
// membership), and the member its passkey names is credited with the
// growth of the counters since the record's baseline.
//
// Apply rules for each announce, in order:
//   - if the tracker is not in TrackerPrivate mode, it applies as a plain
//     Announce (a SwarmCredit does nothing, a SwarmStarted applies as
//     SwarmUpdate);
//   - the passkey must name a member that is not revoked, else ErrPasskey;
//     the peer_id must pass the client prefix lists, else
//     ErrClientRefused; nothing changes on a refusal;
//   - At is clamped to Time. A report whose At is not after the record's
//     changed time is stale (heard earlier than one already credited): it
//     credits nothing and moves no baseline;
//   - a record that has no member yet, or another member, takes the
//     reported counters as its baseline and credits nothing (the first
//     announce of a peer);
//   - otherwise each counter's growth is credited; a counter below its
//     baseline (the client restarted) becomes the new baseline and credits
//     nothing; growth above MaxRate over the time since the record's
//     changed time is clamped and counted suspicious; the torrent's
//     factors apply; the record's time as a seeder until now accrues as
//     seed time; a completed event that counts (see Announce) counts a
//     completion; each credit with anything in it is appended to the
//     ledger;
//   - SwarmStopped credits, then removes the record; SwarmUpdate,
//     SwarmStarted and SwarmCompleted apply the announce with Time = At,
//     then credit.
type PrivateAnnounceBatch struct {
	Time      int64
	Limits    SwarmLimits
	MaxRate   uint64 // bytes per second; 0: no clamp
	Announces []PrivateAnnounce
}

// Type implements Command.
func (TrackerMember) Type() CommandType { return CmdTrackerMember }

// Type implements Command.
func (TorrentFactors) Type() CommandType { return CmdTorrentFactors }

// Type implements Command.
func (ClientPrefixes) Type() CommandType { return CmdClientPrefixes }

// Type implements Command.
func (PrivateAnnounceBatch) Type() CommandType { return CmdPrivateAnnounceBatch }

func (TrackerMember) isCommand()        {}
func (TorrentFactors) isCommand()       {}
func (ClientPrefixes) isCommand()       {}
func (PrivateAnnounceBatch) isCommand() {}

// ValidMemberName reports whether name may name a member: 1 to
// MaxMemberName bytes of ASCII letters, digits, '.', '_' and '-'.
func ValidMemberName(name string) error {
	if name == "" || len(name) > MaxMemberName {
		return fmt.Errorf("%w: member name of %d bytes; use 1 to %d", ErrInvalid, len(name), MaxMemberName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: member name %.70q: use only letters, digits, '.', '_' and '-'", ErrInvalid, name)
		}
	}
	return nil
}

// Validate implements Command.
func (c TrackerMember) Validate() error {
	if c.RequestID == 0 {
		return fmt.Errorf("%w: tracker member: zero request id", ErrInvalid)
	}
	if err := ValidMemberName(c.Name); err != nil {
		return err
	}
	switch c.Op {
	case MemberAdd, MemberRotate:
		if len(c.Passkey) != PasskeySize || [PasskeySize]byte(c.Passkey) == ([PasskeySize]byte{}) {
			return fmt.Errorf("%w: tracker member %s: passkey of %d bytes, want %d non-zero", ErrInvalid, c.Name, len(c.Passkey), PasskeySize)
		}
	case MemberRevoke:
		if len(c.Passkey) != 0 {
			return fmt.Errorf("%w: tracker member %s: a revoke carries no passkey", ErrInvalid, c.Name)
		}
	default:
		return fmt.Errorf("%w: tracker member op %d (want 1 add, 2 rotate or 3 revoke)", ErrInvalid, c.Op)
	}
	return nil
}

// Validate implements Command.
func (c TorrentFactors) Validate() error {
	if c.RequestID == 0 {
		return fmt.Errorf("%w: torrent factors: zero request id", ErrInvalid)
	}
	if c.InfoHash.IsZero() {
		return fmt.Errorf("%w: torrent factors for the zero info-hash", ErrInvalid)
	}
	if c.UploadPct > MaxFactorPct || c.DownloadPct > MaxFactorPct {
		return fmt.Errorf("%w: torrent factors %d%% and %d%%: at most %d%% each", ErrInvalid, c.UploadPct, c.DownloadPct, MaxFactorPct)
	}
	return nil
}

// Validate implements Command.
func (c ClientPrefixes) Validate() error {
	if c.RequestID == 0 {
		return fmt.Errorf("%w: client prefixes: zero request id", ErrInvalid)
	}
	for _, l := range [][]string{c.Allow, c.Deny} {
		if len(l) > MaxClientPrefixes {
			return fmt.Errorf("%w: %d client prefixes, limit %d", ErrInvalid, len(l), MaxClientPrefixes)
		}
		for _, p := range l {
			if p == "" || len(p) > len(SwarmPeerID{}) {
				return fmt.Errorf("%w: client prefix %.30q: want 1 to 20 bytes", ErrInvalid, p)
			}
		}
	}
	return nil
}

// Validate implements Command.
func (c PrivateAnnounceBatch) Validate() error {
	if len(c.Announces) > MaxAnnouncesPerBatch {
		return fmt.Errorf("%w: %d announces in one batch, limit %d", ErrInvalid, len(c.Announces), MaxAnnouncesPerBatch)
	}
	for i := range c.Announces {
		a := c.Announces[i].Announce
		if a.Time != 0 {
			return fmt.Errorf("%w: announce %d of a batch carries its own time", ErrInvalid, i)
		}
		if err := a.ValidatePrivate(); err != nil {
			return err
		}
	}
	return nil
}
