package jepsenlike

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// OpType names what a client asked the cluster to do.
type OpType string

// The operation types the workload issues.
const (
	// OpJoin announces a fresh client peer (PeerJoin). It changes no holder
	// set, so the linearizability checker ignores it.
	OpJoin OpType = "join"
	// OpRegister adds the client's peer as a holder of one file.
	OpRegister OpType = "register"
	// OpUnregister removes the client's peer as a holder of one file.
	OpUnregister OpType = "unregister"
	// OpLookup reads one file's holder set at the linearizable level.
	OpLookup OpType = "lookup"
	// OpSearch searches for one file by name at the linearizable level and
	// reads its holder count.
	OpSearch OpType = "search"

	// The tracker workload's operations (tracker_workload.go). Key is the
	// torrent's number, Peer the BitTorrent peer_id (20 printable bytes).

	// OpStarted is an HTTP announce with event=started: the peer enters
	// the swarm. Acknowledged only after the change committed.
	OpStarted OpType = "started"
	// OpReannounce is an announce without an event from a peer already in
	// the swarm: a lease renewal where the answering master lists the
	// peer, an insert where it does not (its index may be stale), so the
	// checker treats it as a possible insert, never as an acknowledgement.
	OpReannounce OpType = "reannounce"
	// OpCompleted is an announce with event=completed: the peer becomes a
	// seeder (and is inserted if absent).
	OpCompleted OpType = "completed"
	// OpStopped is an announce with event=stopped: the peer leaves the
	// swarm.
	OpStopped OpType = "stopped"
	// OpPeers is a final read of one swarm's peer list from one master
	// (Master), made after the cluster healed and went quiet.
	OpPeers OpType = "peers"
)

func (t OpType) valid() bool {
	switch t {
	case OpJoin, OpRegister, OpUnregister, OpLookup, OpSearch, OpStarted, OpReannounce, OpCompleted, OpStopped, OpPeers:
		return true
	}
	return false
}

// IsWrite reports whether the op changes the index (or a swarm).
func (t OpType) IsWrite() bool {
	switch t {
	case OpJoin, OpRegister, OpUnregister, OpStarted, OpCompleted, OpStopped:
		return true
	}
	return false
}

// IsRead reports whether the op only reads the index (or a swarm). A
// re-announce counts as a read: it changes nothing when the peer is listed.
func (t OpType) IsRead() bool {
	return t == OpLookup || t == OpSearch || t == OpReannounce || t == OpPeers
}

// IsTracker reports whether the op belongs to the tracker workload; the
// index checkers (linearizable, set-full) ignore such ops.
func (t OpType) IsTracker() bool {
	switch t {
	case OpStarted, OpReannounce, OpCompleted, OpStopped, OpPeers:
		return true
	}
	return false
}

// Outcome is how an operation ended, in Jepsen's three-valued terms.
type Outcome string

const (
	// OK means the cluster acknowledged the operation: a write took effect
	// exactly once, a read returned the value in Holders or Count.
	OK Outcome = "ok"
	// Fail means the operation certainly did not take effect (the cluster
	// rejected it with a definite error such as fsm.ErrInvalid).
	Fail Outcome = "fail"
	// Info means the outcome is unknown: the client gave up (its deadline
	// passed) or got an error that does not say whether a write applied.
	// An info write may take effect at any time after it was invoked.
	Info Outcome = "info"
)

func (o Outcome) valid() bool { return o == OK || o == Fail || o == Info }

// Op is one operation in a history: one line of history.jsonl.
//
// Times are nanoseconds since the run began, on the harness's monotonic
// clock, so they order operations across all clients. An op with Outcome
// Info has the time the client gave up as Complete; the checkers treat it
// as possibly taking effect at any time after Invoke.
type Op struct {
	// Index is the op's position in the history file (completion order).
	Index int `json:"index"`
	// Process is the logical client, as in Jepsen: a worker whose op ends
	// Info continues as a new process with a new peer identity. Worker
	// processes are numbered from 1; the final reads run as process 0.
	Process int `json:"process"`
	// Worker is the goroutine that issued the op (0..concurrency-1), or -1
	// for the final reads.
	Worker int `json:"worker"`
	// Peer is the peer ID the client acts as (writes and joins).
	Peer string `json:"peer,omitempty"`
	// Type is what the op does.
	Type OpType `json:"type"`
	// Key is the file's number in 0..Files-1; -1 for joins.
	Key int `json:"key"`
	// File is the file's ID (64 hex digits), empty for joins.
	File string `json:"file,omitempty"`
	// Outcome is ok, fail or info.
	Outcome Outcome `json:"outcome"`
	// Invoke and Complete are nanoseconds since the run began.
	Invoke   int64 `json:"invoke"`
	Complete int64 `json:"complete"`
	// Holders is the sorted set of peer IDs an ok lookup returned, or the
	// peer_ids an ok tracker announce listed.
	Holders []string `json:"holders,omitempty"`
	// Count is the holder count an ok search returned for the file.
	Count int `json:"count,omitempty"`
	// Final marks the linearizable reads made after the cluster healed
	// (and the tracker's final peer-list reads and their watcher's
	// announces).
	Final bool `json:"final,omitempty"`
	// Master is the master a tracker op was sent to (m1, m2, ...).
	Master string `json:"master,omitempty"`
	// Swarm is the swarm size (complete + incomplete) an ok tracker
	// announce reported, the announcing peer included.
	Swarm int `json:"swarm,omitempty"`
	// Error is the error text of a fail or info op.
	Error string `json:"error,omitempty"`
	// Member, Uploaded and Downloaded are an accounting announce's member
	// and the cumulative counters it reported (accounting_workload.go).
	Member     string `json:"member,omitempty"`
	Uploaded   uint64 `json:"uploaded,omitempty"`
	Downloaded uint64 `json:"downloaded,omitempty"`
}

// Validate reports whether op is internally consistent: a known type and
// outcome, Complete not before Invoke, a key for every file op, and
// sorted, duplicate-free Holders only on ok lookups.
func (op Op) Validate() error {
	if !op.Type.valid() {
		return fmt.Errorf("op %d: unknown type %q", op.Index, op.Type)
	}
	if !op.Outcome.valid() {
		return fmt.Errorf("op %d: unknown outcome %q", op.Index, op.Outcome)
	}
	if op.Invoke < 0 || op.Complete < op.Invoke {
		return fmt.Errorf("op %d: completes at %d before it is invoked at %d", op.Index, op.Complete, op.Invoke)
	}
	if op.Type != OpJoin && op.Key < 0 {
		return fmt.Errorf("op %d: %s without a file key", op.Index, op.Type)
	}
	if op.Type.IsWrite() && op.Peer == "" {
		return fmt.Errorf("op %d: %s without a peer", op.Index, op.Type)
	}
	if len(op.Holders) > 0 && ((op.Type != OpLookup && !op.Type.IsTracker()) || op.Outcome != OK) {
		return fmt.Errorf("op %d: only an ok lookup or announce carries holders", op.Index)
	}
	if op.Type == OpPeers && op.Master == "" {
		return fmt.Errorf("op %d: a peer-list read without the master it read", op.Index)
	}
	for i := 1; i < len(op.Holders); i++ {
		if op.Holders[i-1] >= op.Holders[i] {
			return fmt.Errorf("op %d: holders are not sorted and distinct", op.Index)
		}
	}
	if op.Count < 0 {
		return fmt.Errorf("op %d: negative count", op.Index)
	}
	return nil
}

// maxLine bounds one history line, so a corrupt file cannot make the
// decoder allocate without limit.
const maxLine = 16 << 20

// WriteHistory writes ops as JSON Lines, one op per line.
func WriteHistory(w io.Writer, ops []Op) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for _, op := range ops {
		if err := enc.Encode(op); err != nil {
			return fmt.Errorf("encode op %d: %w", op.Index, err)
		}
	}
	return bw.Flush()
}

// ReadHistory decodes a history written by WriteHistory. Blank lines are
// skipped; every other line must be one valid Op. The error names the line.
func ReadHistory(r io.Reader) ([]Op, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	var ops []Op
	for line := 1; sc.Scan(); line++ {
		b := sc.Bytes()
		if len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		var op Op
		if err := json.Unmarshal(b, &op); err != nil {
			return nil, fmt.Errorf("history line %d: %w", line, err)
		}
		if err := op.Validate(); err != nil {
			return nil, fmt.Errorf("history line %d: %w", line, err)
		}
		if len(op.Holders) == 0 {
			op.Holders = nil // "holders":[] and no holders mean the same
		}
		ops = append(ops, op)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("history has a line longer than %d bytes: %w", maxLine, err)
		}
		return nil, fmt.Errorf("read history: %w", err)
	}
	return ops, nil
}

// endOfHistory is a time after every op in ops: where an info op's
// effect may still land.
func endOfHistory(ops []Op) int64 {
	var end int64
	for _, op := range ops {
		end = max(end, op.Complete)
	}
	if end >= math.MaxInt64-1 {
		return math.MaxInt64
	}
	return end + 1
}

// byInvoke returns ops sorted by invocation time (ties by index).
func byInvoke(ops []Op) []Op {
	out := slices.Clone(ops)
	slices.SortStableFunc(out, func(a, b Op) int {
		if a.Invoke != b.Invoke {
			if a.Invoke < b.Invoke {
				return -1
			}
			return 1
		}
		return a.Index - b.Index
	})
	return out
}
