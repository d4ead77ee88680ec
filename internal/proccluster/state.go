package proccluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"fileshare/client"
)

// State is a master's Raft state as its status reports it: the String()
// of hashicorp/raft's RaftState.
type State string

// The Raft states a master reports.
const (
	Follower  State = "Follower"
	Candidate State = "Candidate"
	Leader    State = "Leader"
	Shutdown  State = "Shutdown"
)

// StateOf returns the Raft state in st.
func StateOf(st client.Status) State { return State(st.State) }

// httpStatus fetches http://addr/v1/status with hc.
func httpStatus(ctx context.Context, hc *http.Client, id, addr string) (client.Status, error) {
	var st client.Status
	if addr == "" {
		return st, fmt.Errorf("%s has no HTTP address (Spec.HTTP) to ask for its status", id)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s /v1/status: HTTP %d", id, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("%s /v1/status: %w", id, err)
	}
	return st, nil
}
