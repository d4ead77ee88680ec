package client

import (
	"fmt"
	"slices"
)

// RaftState is a master's Raft state as Status.State reports it: the
// String() of hashicorp/raft's RaftState, so the JSON of /v1/status and
// the wire form are raft's own words.
type RaftState string

// The Raft states a master reports.
const (
	StateFollower  RaftState = "Follower"
	StateCandidate RaftState = "Candidate"
	StateLeader    RaftState = "Leader"
	StateShutdown  RaftState = "Shutdown"
)

// Suffrage is a member's vote in the Raft configuration, as Member.Suffrage
// reports it: the String() of hashicorp/raft's ServerSuffrage.
type Suffrage string

// The suffrages a member can have. A master that joins is a Nonvoter
// until the leader promotes it (master's autopilot); only Voters count
// towards the quorum.
const (
	Voter    Suffrage = "Voter"
	Nonvoter Suffrage = "Nonvoter"
	Staging  Suffrage = "Staging"
)

// HealthProblems judges a cluster by what its masters answered: sts[i]
// and errs[i] are master i's status or error, names[i] names it in the
// problems (an address or an ID). It returns nil when the cluster is
// healthy, else what keeps it from being healthy, in plain words.
//
// A cluster is healthy when every master answered, all name the same
// leader and the leader is one of them, every master is ready (what its
// /v1/readyz answers: in touch with the leader and caught up), and the
// leader's configuration lists every master as a Voter and no member
// that was not asked. A Nonvoter does not count: a master that has just
// joined is ready as soon as it has caught up, but until the leader
// promotes it the cluster tolerates one failure fewer than its size
// promises, so an operator who waits for health before restarting the
// next master (or a fault harness before its next fault) must wait for
// the promotion too.
//
// `fileshare cluster wait --ready` and the fault harness both decide with
// this function.
func HealthProblems(names []string, sts []Status, errs []error) []string {
	var problems []string
	leader := ""
	for i := range sts {
		switch st := sts[i]; {
		case errs[i] != nil:
			problems = append(problems, fmt.Sprintf("%s does not answer: %v", names[i], errs[i]))
		case st.LeaderID == "":
			problems = append(problems, fmt.Sprintf("%s knows no leader", names[i]))
		case leader != "" && st.LeaderID != leader:
			problems = append(problems, fmt.Sprintf("masters disagree on the leader (%s, %s)", leader, st.LeaderID))
		case !st.Ready:
			leader = st.LeaderID
			problems = append(problems, fmt.Sprintf("%s is not ready", names[i]))
		default:
			leader = st.LeaderID
		}
	}
	if len(problems) > 0 {
		return problems
	}
	l := slices.IndexFunc(sts, func(st Status) bool { return st.ID == leader })
	if l < 0 {
		return []string{fmt.Sprintf("leader %s is not one of the masters", leader)}
	}
	for i, st := range sts {
		m := slices.IndexFunc(sts[l].Members, func(m Member) bool { return m.ID == st.ID })
		switch {
		case m < 0:
			problems = append(problems, fmt.Sprintf("%s is not in leader %s's configuration", names[i], leader))
		case sts[l].Members[m].Suffrage != Voter:
			problems = append(problems, fmt.Sprintf("%s is a %s, not yet a voter", names[i], sts[l].Members[m].Suffrage))
		}
	}
	for _, m := range sts[l].Members {
		if !slices.ContainsFunc(sts, func(st Status) bool { return st.ID == m.ID }) {
			problems = append(problems, fmt.Sprintf("member %s (%s) was not asked", m.ID, m.Addr))
		}
	}
	return problems
}
