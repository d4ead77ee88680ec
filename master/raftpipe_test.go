package master

import (
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// A follower that rejects one pipelined append (its disk was full) must not
// wedge the leader's sender: raft stops reading the pipeline's responses at
// the rejection and may still send an append or two before it leaves the
// pipeline, and each of those sends must return. With raft's own pipeline
// (two appends in flight, unbuffered) the second one after the rejection
// blocks for good, and the follower is never sent another entry.
func TestPipelineSendsReturnAfterARejectedAppend(t *testing.T) {
	follower, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 10*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer follower.Close()
	leader, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 10*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer leader.Close()

	// The follower rejects the first append (as raft does when StoreLogs
	// fails) and every later one (their previous entry is missing).
	go func() {
		for {
			select {
			case rpc := <-follower.Consumer():
				rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: false}, nil)
			case <-t.Context().Done():
				return
			}
		}
	}()

	p, err := pipelineTransport{leader}.AppendEntriesPipeline("f", follower.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	send := func(i int) {
		t.Helper()
		sent := make(chan error, 1)
		go func() {
			_, err := p.AppendEntries(&raft.AppendEntriesRequest{Term: 1, PrevLogEntry: uint64(i)}, new(raft.AppendEntriesResponse))
			sent <- err
		}()
		select {
		case err := <-sent:
			if err != nil {
				t.Fatalf("append %d: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("append %d after the rejection did not return within 10s: the pipeline's sender is wedged", i)
		}
	}
	send(0)
	select {
	case f := <-p.Consumer():
		if f.Response().Success {
			t.Fatal("the follower's rejection arrived as a success")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no response to the first append within 10s")
	}
	// Raft's decoder has returned: nothing reads Consumer from here on.
	for i := 1; i <= 4; i++ {
		send(i)
	}
}
