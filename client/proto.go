package client

import (
	"fmt"

	"fileshare/transport"
)

// The SwarmMaster service: method names and messages. Masters serve them;
// peers, the CLI and the fault harness call them. IDs are plain strings on
// the wire (fsm.PeerID and fsm.FileID convert directly).
const (
	MethodPeerJoin       = "Swarm.PeerJoin"
	MethodPeerLeave      = "Swarm.PeerLeave"
	MethodRegister       = "Swarm.Register"
	MethodUnregister     = "Swarm.Unregister"
	MethodHeartbeat      = "Swarm.Heartbeat"
	MethodLookup         = "Swarm.Lookup"
	MethodSearch         = "Swarm.Search"
	MethodPeers          = "Swarm.Peers"
	MethodFind           = "Swarm.Find"
	MethodStatus         = "Cluster.Status"
	MethodMemberJoin     = "Cluster.Join"
	MethodMemberRemove   = "Cluster.Remove"
	MethodTransferLeader = "Cluster.TransferLeader"
	MethodSnapshot       = "Cluster.Snapshot"
)

// ReadLevel is the consistency a read asks for.
type ReadLevel string

const (
	// ReadStale is served by whichever master receives it, from its local
	// index; it may lag the leader by any amount.
	ReadStale ReadLevel = "stale"
	// ReadLeader is served from the leader's index without a quorum round
	// trip; a deposed leader that does not know it yet may answer stale.
	ReadLeader ReadLevel = "leader"
	// ReadLinearizable is served by the leader after it confirms with a
	// quorum that it still leads and its index has caught up with every
	// write committed before the read began. The default.
	ReadLinearizable ReadLevel = "linearizable"
)

// ErrBadReadLevel is returned for an unknown read level.
var ErrBadReadLevel = transport.NewError("bad_read_level", "unknown read level; use stale, leader or linearizable")

// ParseReadLevel parses s; "" means ReadLinearizable.
func ParseReadLevel(s string) (ReadLevel, error) {
	switch ReadLevel(s) {
	case "":
		return ReadLinearizable, nil
	case ReadStale, ReadLeader, ReadLinearizable:
		return ReadLevel(s), nil
	}
	return "", fmt.Errorf("%w: %q", ErrBadReadLevel, s)
}

// WriteHeader is carried by every peer write. PeerID must be derived from
// Key (fsm.PeerIDOf), the peer's Ed25519 public key: not a secret, since a
// master accepts it only from a caller whose TLS certificate proved
// possession of that key (or from a master that relays such a caller's
// write). RequestID (non-zero, unique per peer) makes retries idempotent.
// Forwarded is set by a master that relays the write to the leader, so a
// stale leader hint never bounces a write around the cluster.
type WriteHeader struct {
	PeerID    string
	Key       []byte
	RequestID uint64
	Forwarded bool `codec:",omitempty"`
}

// LeaderHint is embedded in replies that the leader produced: Leader is
// its address, so a client can send its next request there directly
// instead of through a forwarding follower.
type LeaderHint struct {
	Leader string `codec:",omitempty"`
}

// SetLeader records the leader's address in a reply.
func (h *LeaderHint) SetLeader(addr string) { h.Leader = addr }

// LeaderAddr returns the leader address carried by a reply, if any.
func (h *LeaderHint) LeaderAddr() string { return h.Leader }

// WriteReply acknowledges a committed write.
type WriteReply struct {
	Index     uint64 // the log index at which it committed
	Duplicate bool   // a retry of a write that had already committed
	LeaderHint
}

// PeerJoinRequest announces a peer (or re-announces it after a restart).
type PeerJoinRequest struct {
	WriteHeader
	Addr string // where the peer serves pieces, host:port
}

// PeerLeaveRequest removes a peer and everything it registered.
type PeerLeaveRequest struct{ WriteHeader }

// FileEntry describes a file as the index stores it.
type FileEntry struct {
	ID        string // hex SHA-256 Merkle root
	Name      string
	Size      int64
	PieceSize int64
}

// RegisterRequest adds the caller as a holder of Files.
type RegisterRequest struct {
	WriteHeader
	Files []FileEntry
}

// UnregisterRequest removes the caller as a holder of Files.
type UnregisterRequest struct {
	WriteHeader
	Files []string
}

// HeartbeatRequest keeps a peer's lease alive. It never enters the log.
// PeerID and Key are checked as in WriteHeader.
type HeartbeatRequest struct {
	PeerID    string
	Key       []byte
	Forwarded bool `codec:",omitempty"`
}

// HeartbeatReply tells the peer how long its lease lasts.
type HeartbeatReply struct {
	LeaseMillis int64
	LeaderHint
}

// ReadHeader is carried by every read.
type ReadHeader struct {
	Level     ReadLevel
	Forwarded bool `codec:",omitempty"`
}

func (h *ReadHeader) readLevel() ReadLevel { return h.Level }

// LookupRequest asks who holds a file.
type LookupRequest struct {
	ReadHeader
	FileID string
}

// HolderEntry is one peer holding a file.
type HolderEntry struct {
	PeerID string
	Addr   string
	Name   string // what this holder calls the file
}

// FileSummary is a file with its holder count.
type FileSummary struct {
	FileEntry
	Holders int
}

// LookupReply answers a LookupRequest. Found is false if no peer holds it.
type LookupReply struct {
	Found   bool
	File    FileSummary
	Holders []HolderEntry
	Index   uint64 // the applied index the answer reflects
	LeaderHint
}

// SearchRequest asks for files whose name contains every word of Query
// (every file if Query is empty), sorted by name, then ID.
type SearchRequest struct {
	ReadHeader
	Query string
	// Limit is the most files the reply lists: 0 means the index's
	// default (100), and the master caps it at 10,000.
	Limit int
	// After is the Next of a previous reply to the same Query: the reply
	// then lists the files that sort after the last one that reply
	// listed. Empty means from the start. It is opaque; a master rejects
	// one it did not make with an error matching fsm.ErrInvalid.
	After string `codec:",omitempty"`
}

// SearchReply answers a SearchRequest: one page of the matches.
type SearchReply struct {
	Files []FileSummary
	// Total is the number of files that match Query in the whole index,
	// on this page and every other.
	Total int
	// Skipped is the number of matches that sort before this page (those
	// the request's After passed over).
	Skipped int
	// Next is the cursor for the following page (SearchRequest.After);
	// empty when this page holds the last match.
	Next  string `codec:",omitempty"`
	Index uint64
	LeaderHint
}

// FindRequest asks for the files whose ID starts with Prefix: 8 to 64
// lowercase hex digits (fsm.MinIDPrefixLen to fsm.FileIDLen).
//
// It is a method of its own rather than a field of SearchRequest because
// it means something else (an ID, not words of a name), and because a
// master that predates it then fails the call with an unknown-method
// error instead of ignoring the field and answering a name search.
type FindRequest struct {
	ReadHeader
	Prefix string
	// Limit is the most files the reply lists; 0 means 100.
	Limit int
}

// FindReply answers a FindRequest: the files sorted by ID, and how many
// match in all (Total may exceed len(Files)).
type FindReply struct {
	Files []FileSummary
	Total int
	Index uint64
	LeaderHint
}

// PeersRequest lists peers.
type PeersRequest struct{ ReadHeader }

// PeerSummary describes a peer.
type PeerSummary struct {
	ID       string
	Addr     string
	JoinedAt int64 // unix nanoseconds
	Files    int
}

// PeersReply answers a PeersRequest.
type PeersReply struct {
	Peers []PeerSummary
	Index uint64
	LeaderHint
}

// StatusRequest asks one master for its own view.
type StatusRequest struct{}

// Member is one master in the Raft configuration.
type Member struct {
	ID                string   `json:"id"`
	Addr              string   `json:"addr"`
	Suffrage          Suffrage `json:"suffrage"`
	Leader            bool     `json:"leader"`
	LastContactMillis int64    `json:"last_contact_ms"` // as seen by the leader; -1 if unknown
}

// Status is one master's view of itself and the cluster, as served by
// /v1/status and Cluster.Status.
type Status struct {
	ID           string    `json:"id"`
	Addr         string    `json:"addr"`
	HTTPAddr     string    `json:"http_addr"`
	State        RaftState `json:"state"`
	LeaderID     string    `json:"leader_id"`
	LeaderAddr   string    `json:"leader_addr"`
	Term         uint64    `json:"term"`
	LastIndex    uint64    `json:"last_index"`
	CommitIndex  uint64    `json:"commit_index"`
	AppliedIndex uint64    `json:"applied_index"`
	Members      []Member  `json:"members"`
	Peers        int       `json:"peers"`
	Files        int       `json:"files"`
	Holdings     int       `json:"holdings"`
	Digest       string    `json:"digest"`
	Ready        bool      `json:"ready"`
	HeapBytes    uint64    `json:"heap_bytes"` // Go heap in use
	// TrackerHTTP and TrackerUDP are the tracker's listen addresses, ""
	// when off (announce URLs are built from them).
	TrackerHTTP string `json:"tracker_http,omitempty"`
	TrackerUDP  string `json:"tracker_udp,omitempty"`
}

// SnapshotRequest asks the receiving master to snapshot its index now.
type SnapshotRequest struct{}

// SnapshotReply reports the snapshot taken.
type SnapshotReply struct {
	Index          uint64 // last log index the snapshot covers
	DurationMillis int64  // time to capture and persist it
}

// MemberJoinRequest asks the cluster to add a master as a voter.
type MemberJoinRequest struct {
	ID        string
	Addr      string
	Forwarded bool `codec:",omitempty"`
	// Origin is who asked, as the master that relays the request proved
	// it ("master/ID", "admin/NAME", "insecure"); the leader checks it
	// again. Callers leave it empty.
	Origin string `codec:",omitempty"`
}

// MemberRemoveRequest asks the cluster to remove a master.
type MemberRemoveRequest struct {
	ID        string
	Forwarded bool `codec:",omitempty"`
}

// TransferLeaderRequest asks the leader to hand leadership to ID, or to
// any up-to-date voter if ID is empty.
type TransferLeaderRequest struct {
	ID        string
	Forwarded bool `codec:",omitempty"`
}

// TransferLeaderReply names the new leader.
type TransferLeaderReply struct {
	LeaderID   string
	LeaderAddr string
}

// Empty is a reply with nothing to say.
type Empty struct{}
