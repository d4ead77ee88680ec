package master

import (
	"testing"

	"github.com/hashicorp/raft"

	"fileshare/client"
)

// The states and suffrages a status reports are hashicorp/raft's own
// words, so a caller comparing with client's constants never misreads one.
func TestClientVocabularyIsRafts(t *testing.T) {
	for got, want := range map[client.RaftState]raft.RaftState{client.StateFollower: raft.Follower, client.StateCandidate: raft.Candidate, client.StateLeader: raft.Leader, client.StateShutdown: raft.Shutdown} {
		if string(got) != want.String() {
			t.Errorf("client state %q, want raft's %q", got, want.String())
		}
	}
	for got, want := range map[client.Suffrage]raft.ServerSuffrage{client.Voter: raft.Voter, client.Nonvoter: raft.Nonvoter, client.Staging: raft.Staging} {
		if string(got) != want.String() {
			t.Errorf("client suffrage %q, want raft's %q", got, want.String())
		}
	}
}
