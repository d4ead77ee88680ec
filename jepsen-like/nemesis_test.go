package jepsenlike

import (
	"testing"

	"fileshare/client"
)

// A master that rejoined is ready for the next fault only once the
// leader counts it as a voter: its own status, from a snapshot taken
// before its removal, may call it a voter while the leader still holds it
// as a non-voter, and a fault started then took the quorum away (the
// 45 s disk-full,corrupt run, seed 3: m2 replaced, m1 damaged 1.5 s
// later, m3 alone among the voters, no leader for good).
func TestAMasterIsAReadyVoterOnlyByTheLeadersWord(t *testing.T) {
	members := func(m2 client.Suffrage) []client.Member {
		return []client.Member{{ID: "m1", Suffrage: "Voter"}, {ID: "m2", Suffrage: m2}, {ID: "m3", Suffrage: "Voter"}}
	}
	rejoined := client.Status{ID: "m2", LeaderID: "m3", Ready: true, Members: members("Voter")} // its snapshot's view
	tests := []struct {
		name         string
		self, leader client.Status
		want         bool
	}{
		{"the leader still holds it as a non-voter", rejoined, client.Status{ID: "m3", LeaderID: "m3", Members: members("Nonvoter")}, false},
		{"the leader promoted it", rejoined, client.Status{ID: "m3", LeaderID: "m3", Members: members("Voter")}, true},
		{"it is not ready", client.Status{ID: "m2", LeaderID: "m3", Members: members("Voter")}, client.Status{ID: "m3", LeaderID: "m3", Members: members("Voter")}, false},
		{"the master it names no longer leads", rejoined, client.Status{ID: "m3", LeaderID: "m1", Members: members("Voter")}, false},
		{"it knows no leader", client.Status{ID: "m2", Ready: true, Members: members("Voter")}, client.Status{}, false},
		{"it leads", client.Status{ID: "m2", LeaderID: "m2", Ready: true, Members: members("Voter")}, client.Status{ID: "m2", LeaderID: "m2", Ready: true, Members: members("Voter")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := readyVoterIn(tt.self, tt.leader); got != tt.want {
				t.Fatalf("readyVoterIn = %v, want %v", got, tt.want)
			}
		})
	}
}
