package master

import "fmt"

// Fault names a deliberate bug a master can be started with, so the fault
// harness can prove that its checkers catch a broken system. Never set one
// in production: each breaks a guarantee on purpose. The binary enables
// one only through the FILESHARE_UNSAFE_FAULT environment variable.
type Fault string

const (
	// NoFault is normal, correct operation.
	NoFault Fault = ""
	// FaultStaleReads answers linearizable and leader reads from whatever
	// master receives them, without asking the leader or a quorum: a
	// partitioned or lagging master then serves stale reads.
	FaultStaleReads Fault = "stale-reads"
	// FaultAckBeforeCommit acknowledges a write as soon as the leader has
	// queued it, before it is committed on a majority: a leader crash or
	// partition then loses acknowledged writes.
	FaultAckBeforeCommit Fault = "ack-before-commit"
	// FaultDoubleCredit makes the tracker report every re-announce's
	// counters twice, first as zeros: the books take that for a client
	// restart and credit the whole counters again (unsafecredit.go).
	FaultDoubleCredit Fault = "double-credit"
)

// ParseFault checks a fault name.
func ParseFault(s string) (Fault, error) {
	switch f := Fault(s); f {
	case NoFault, FaultStaleReads, FaultAckBeforeCommit, FaultDoubleCredit:
		return f, nil
	}
	return "", fmt.Errorf("%w: unknown fault %q; known: %s, %s, %s", ErrConfig, s, FaultStaleReads, FaultAckBeforeCommit, FaultDoubleCredit)
}
