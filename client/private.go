package client

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"fileshare/fsm"
)

// Private tracker administration.
//
// A tracker in private mode serves only allowlisted torrents, and only to
// announces that carry a member's passkey; it credits each member's upload
// and download from the cumulative counters BitTorrent clients report (the
// books). Everything here is replicated through the log, so every master
// answers the same, a leader kill or a full restart loses nothing, and a
// retry with the same request ID applies at most once. Every method needs
// admin credentials.
//
// The reply types carry JSON tags so that an HTTP API can serve them as
// they are.

// The private tracker's RPC methods (admin).
const (
	MethodTrackerUser    = "Tracker.User"    // add, rotate or revoke a member
	MethodTrackerUsers   = "Tracker.Users"   // list the members
	MethodTrackerBooks   = "Tracker.Books"   // one member's books
	MethodTrackerTorrent = "Tracker.Torrent" // a torrent's upload and download factors
	MethodTrackerClients = "Tracker.Clients" // the peer-ID prefix allow and deny lists
	MethodTrackerLedger  = "Tracker.Ledger"  // the feed of credited deltas
)

// Tracker modes, as TrackerSetMode takes them and TrackerPolicyReply.Mode
// reports them.
const (
	TrackerModeOpen      = "open"      // every torrent that is not denied, no passkey
	TrackerModeAllowlist = "allowlist" // only allowed torrents, no passkey
	TrackerModePrivate   = "private"   // only allowed torrents, and a member's passkey on every announce
)

// TrackerMember is a member of a private tracker. Passkey is 32 lowercase
// hex characters; it goes into the announce URLs
// (http://HOST:PORT/PASSKEY/announce, http://HOST:PORT/announce/PASSKEY,
// udp://HOST:PORT/PASSKEY/announce) and is a secret of the member's.
type TrackerMember struct {
	Name    string `json:"name"`
	Passkey string `json:"passkey"`
	Revoked bool   `json:"revoked"`
	// Created is the leader's clock when the member was added, Unix
	// nanoseconds.
	Created int64 `json:"created"`
	// Index is the log index the reply reflects.
	Index uint64 `json:"index,omitempty"`
	LeaderHint
}

// TrackerUserRequest adds, rotates or revokes a member. Op is "add",
// "rotate" or "revoke". The serving leader picks the passkey (crypto/rand)
// for add and rotate; RequestID makes a retry apply at most once (a
// retried add or rotate returns the passkey the first attempt set).
type TrackerUserRequest struct {
	Op        string
	Name      string
	RequestID uint64
	Forwarded bool `codec:",omitempty"`
}

// TrackerUsersRequest lists the members.
type TrackerUsersRequest struct{ ReadHeader }

// TrackerUsersReply lists every member, sorted by name, with its totals
// (the rows carry no per-torrent data).
type TrackerUsersReply struct {
	Members []TrackerBooks `json:"members"`
	Index   uint64         `json:"index"`
	LeaderHint
}

// TrackerBooksRequest asks for one member's books.
type TrackerBooksRequest struct {
	ReadHeader
	Name string
}

// TrackerBooks is one member's books: credited totals, current swarm
// entries, and one row per torrent the member was ever credited on.
// Uploaded and Downloaded are credited bytes (after the torrents' factors);
// RawUploaded and RawDownloaded the counter growth before factors and
// after clamping.
type TrackerBooks struct {
	Name          string `json:"name"`
	Revoked       bool   `json:"revoked"`
	Uploaded      uint64 `json:"uploaded"`
	Downloaded    uint64 `json:"downloaded"`
	RawUploaded   uint64 `json:"raw_uploaded"`
	RawDownloaded uint64 `json:"raw_downloaded"`
	// Completed counts the member's completed events credited (one per
	// swarm entry at most).
	Completed uint64 `json:"completed"`
	// Seeding and Leeching count the member's swarm entries now.
	Seeding  int `json:"seeding"`
	Leeching int `json:"leeching"`
	// SeedTimeS is the seconds credited while the member's entries were
	// seeders, measured between announces.
	SeedTimeS uint64 `json:"seed_time_s"`
	// Suspicious counts credits clamped to the tracker's maximum rate.
	Suspicious uint64 `json:"suspicious"`
	// Torrents has one row per torrent, sorted by info-hash; nil in
	// TrackerUsersReply.
	Torrents []TrackerBookRow `json:"torrents,omitempty"`
	// Index is the log index the reply reflects.
	Index uint64 `json:"index"`
	LeaderHint
}

// TrackerBookRow is a member's books on one torrent.
type TrackerBookRow struct {
	InfoHash      string `json:"info_hash"` // 40 lowercase hex digits
	Uploaded      uint64 `json:"uploaded"`
	Downloaded    uint64 `json:"downloaded"`
	RawUploaded   uint64 `json:"raw_uploaded"`
	RawDownloaded uint64 `json:"raw_downloaded"`
	Completed     uint64 `json:"completed"`
	SeedTimeS     uint64 `json:"seed_time_s"`
	Suspicious    uint64 `json:"suspicious"`
	Seeding       int    `json:"seeding"`
	Leeching      int    `json:"leeching"`
}

// TrackerTorrentRequest sets a torrent's factors, in percent: 100 is
// normal, 0 on download is freeleech, 200 on upload double upload. They
// apply to deltas credited from then on.
type TrackerTorrentRequest struct {
	InfoHash          string
	UploadFactorPct   uint32
	DownloadFactorPct uint32
	RequestID         uint64
	Forwarded         bool `codec:",omitempty"`
}

// TrackerTorrentReply is a torrent's factors as committed.
type TrackerTorrentReply struct {
	InfoHash          string `json:"info_hash"`
	UploadFactorPct   uint32 `json:"upload_factor_pct"`
	DownloadFactorPct uint32 `json:"download_factor_pct"`
	Index             uint64 `json:"index"`
	LeaderHint
}

// TrackerClientsRequest replaces the peer-ID prefix lists: an announce
// whose peer_id starts with a Deny prefix is refused; if Allow is not
// empty, one whose peer_id starts with no Allow prefix is refused too.
// Prefixes are 1 to 20 bytes ("-qB4", "-TR3", "-lt0D"). The lists apply
// in every mode.
type TrackerClientsRequest struct {
	Allow     []string `codec:",omitempty"`
	Deny      []string `codec:",omitempty"`
	RequestID uint64
	Forwarded bool `codec:",omitempty"`
}

// TrackerClientsReply is the lists as committed, sorted.
type TrackerClientsReply struct {
	Allow []string `json:"allow"`
	Deny  []string `json:"deny"`
	Index uint64   `json:"index"`
	LeaderHint
}

// LedgerCursor names a position in the ledger: the log index of the entry
// that credited a delta and the delta's position within that entry. The
// zero cursor is before the first delta. As text it is "INDEX.POS".
type LedgerCursor struct {
	Index uint64 `json:"index"`
	Pos   uint32 `json:"pos"`
}

// String returns "INDEX.POS".
func (c LedgerCursor) String() string { return fmt.Sprintf("%d.%d", c.Index, c.Pos) }

// Less reports whether c is before d.
func (c LedgerCursor) Less(d LedgerCursor) bool {
	return c.Index < d.Index || c.Index == d.Index && c.Pos < d.Pos
}

// ParseLedgerCursor parses "INDEX.POS" (or "" or "0", the zero cursor).
// The error wraps fsm.ErrInvalid.
func ParseLedgerCursor(s string) (LedgerCursor, error) {
	if s == "" || s == "0" {
		return LedgerCursor{}, nil
	}
	a, b, ok := strings.Cut(s, ".")
	i, err1 := strconv.ParseUint(a, 10, 64)
	p, err2 := strconv.ParseUint(b, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return LedgerCursor{}, fmt.Errorf("%w: ledger cursor %.40q is not INDEX.POS; pass the next cursor a ledger reply gave, or 0 to start from the oldest retained delta", fsm.ErrInvalid, s)
	}
	return LedgerCursor{Index: i, Pos: uint32(p)}, nil
}

// LedgerEntry is one credited delta: what one announce (or the final
// stopped) added to one member's books on one torrent. Uploaded and
// Downloaded are after the torrent's factors, Raw* before them (after
// clamping).
type LedgerEntry struct {
	Cursor        LedgerCursor `json:"cursor"`
	Time          int64        `json:"time"` // the leader's clock at the credit, Unix nanoseconds
	Member        string       `json:"member"`
	InfoHash      string       `json:"info_hash"`
	Uploaded      uint64       `json:"uploaded"`
	Downloaded    uint64       `json:"downloaded"`
	RawUploaded   uint64       `json:"raw_uploaded"`
	RawDownloaded uint64       `json:"raw_downloaded"`
	SeedTimeS     uint64       `json:"seed_time_s"`
	Completed     bool         `json:"completed"`
	Suspicious    bool         `json:"suspicious"`
}

// TrackerLedgerRequest reads the ledger after a cursor.
type TrackerLedgerRequest struct {
	ReadHeader
	After LedgerCursor
	Limit int
}

// TrackerLedgerReply is one page of the ledger.
type TrackerLedgerReply struct {
	Entries []LedgerEntry `json:"entries"`
	// Next is the cursor to pass next time: the last entry's, or After if
	// the page is empty.
	Next LedgerCursor `json:"next"`
	// Oldest is the cursor just before the oldest retained delta.
	Oldest LedgerCursor `json:"oldest"`
	Index  uint64       `json:"index"`
	LeaderHint
}

// MaxLedgerPage is the most entries one ledger read returns; a Limit of 0
// or above it means MaxLedgerPage.
const MaxLedgerPage = 1000

// TrackerSetMode sets the tracker's mode: TrackerModeOpen,
// TrackerModeAllowlist or TrackerModePrivate. The mode is replicated like
// the allowlist; TrackerList reports it. Switching to allowlist or private
// drops the swarms of torrents that are not allowed.
func (c *Client) TrackerSetMode(ctx context.Context, mode string) error {
	_, err := c.TrackerPolicy(ctx, TrackerPolicyRequest{Mode: mode})
	return err
}

func (c *Client) trackerUser(ctx context.Context, op, name string) (TrackerMember, error) {
	var out TrackerMember
	err := c.Call(ctx, MethodTrackerUser, &TrackerUserRequest{Op: op, Name: name, RequestID: newRequestID()}, &out)
	return out, err
}

// TrackerUserAdd adds a member and returns it with its new passkey. A
// name is 1 to 64 bytes of letters, digits, '.', '_' and '-'. Adding a
// name that exists fails with fsm.ErrMemberExists.
func (c *Client) TrackerUserAdd(ctx context.Context, name string) (TrackerMember, error) {
	return c.trackerUser(ctx, "add", name)
}

// TrackerUserRotate gives a member a new passkey; the old one is refused
// from the moment the change commits. It also reinstates a revoked
// member. Unknown names fail with fsm.ErrUnknownMember.
func (c *Client) TrackerUserRotate(ctx context.Context, name string) (TrackerMember, error) {
	return c.trackerUser(ctx, "rotate", name)
}

// TrackerUserRevoke refuses a member's passkey from the moment the change
// commits; the member's books stay. Unknown names fail with
// fsm.ErrUnknownMember.
func (c *Client) TrackerUserRevoke(ctx context.Context, name string) (TrackerMember, error) {
	return c.trackerUser(ctx, "revoke", name)
}

// TrackerUsers lists the members with their totals at the given read
// level. ReadStale served by a Client whose only master is M reads M's
// own applied state.
func (c *Client) TrackerUsers(ctx context.Context, level ReadLevel) (TrackerUsersReply, error) {
	var out TrackerUsersReply
	err := c.Call(ctx, MethodTrackerUsers, &TrackerUsersRequest{ReadHeader{Level: level}}, &out)
	return out, err
}

// TrackerUserBooks returns one member's books at the given read level
// (ReadStale through a single-master Client reads that master's applied
// state). Unknown names fail with fsm.ErrUnknownMember.
func (c *Client) TrackerUserBooks(ctx context.Context, name string, level ReadLevel) (TrackerBooks, error) {
	var out TrackerBooks
	err := c.Call(ctx, MethodTrackerBooks, &TrackerBooksRequest{ReadHeader: ReadHeader{Level: level}, Name: name}, &out)
	return out, err
}

// TrackerTorrentSet sets a torrent's upload and download factors in
// percent (at most fsm.MaxFactorPct).
func (c *Client) TrackerTorrentSet(ctx context.Context, infoHash string, uploadFactorPct, downloadFactorPct uint32) (TrackerTorrentReply, error) {
	var out TrackerTorrentReply
	err := c.Call(ctx, MethodTrackerTorrent, &TrackerTorrentRequest{
		InfoHash: infoHash, UploadFactorPct: uploadFactorPct, DownloadFactorPct: downloadFactorPct, RequestID: newRequestID(),
	}, &out)
	return out, err
}

// TrackerClients replaces the peer-ID prefix allow and deny lists (both
// empty: every client is accepted).
func (c *Client) TrackerClients(ctx context.Context, allow, deny []string) (TrackerClientsReply, error) {
	var out TrackerClientsReply
	err := c.Call(ctx, MethodTrackerClients, &TrackerClientsRequest{Allow: allow, Deny: deny, RequestID: newRequestID()}, &out)
	return out, err
}

// TrackerLedger returns up to limit credited deltas after cursor after,
// in commit order, each delta exactly once, and the cursor to continue
// from. A site stores next with the deltas it imported (in one database
// transaction) and so imports each delta exactly once, whichever master
// it reads and however often it retries.
//
// The ledger keeps the newest fsm.LedgerRetention deltas (in memory and
// in snapshots). If after is older than the oldest one kept, the call
// fails with fsm.ErrLedgerGone: deltas were lost to the site, which must
// resynchronize from the books (TrackerUsers, TrackerUserBooks: totals
// are never lost) and continue from the reply's Oldest cursor. A read
// at ReadStale may lag; read at ReadLinearizable (or keep to one master)
// so that a page never goes backwards.
func (c *Client) TrackerLedger(ctx context.Context, after LedgerCursor, limit int, level ReadLevel) (TrackerLedgerReply, error) {
	var out TrackerLedgerReply
	err := c.Call(ctx, MethodTrackerLedger, &TrackerLedgerRequest{ReadHeader: ReadHeader{Level: level}, After: after, Limit: limit}, &out)
	return out, err
}
