package master

import (
	"context"
	"errors"
	"strings"
	"testing"

	"fileshare/client"
	"fileshare/internal/freeport"
	"fileshare/transport"
)

// A request that runs out of time says, in words, what the user asked
// for, never the RPC method ("Swarm.Register"), and still matches its
// causes with errors.Is.
func TestDeadlineErrorNamesTheRequestInWords(t *testing.T) {
	for _, method := range []string{
		client.MethodPeerJoin, client.MethodPeerLeave, client.MethodRegister, client.MethodUnregister,
		client.MethodHeartbeat, client.MethodLookup, client.MethodSearch, client.MethodPeers, client.MethodFind,
		client.MethodStatus, client.MethodMemberJoin, client.MethodMemberRemove,
		client.MethodTransferLeader, client.MethodSnapshot,
	} {
		t.Run(method, func(t *testing.T) {
			if client.Describe(method) == client.Describe("no such method") {
				t.Errorf("client.Describe has no words for %s", method)
			}
			// What transport.Client.Call returns when nothing listens at
			// the leader's address, wrapped as route wraps it.
			addr := freeport.Loopback(t)
			rpc := transport.NewClient(transport.ClientConfig{})
			defer rpc.Close()
			callErr := rpc.Call(t.Context(), addr, method, &client.Empty{}, nil)
			if !errors.Is(callErr, transport.ErrConnection) {
				t.Fatalf("a call to %s where nothing listens: %v, want ErrConnection", addr, callErr)
			}
			last := forwardError(callErr)
			err := deadlineError(method, last, context.DeadlineExceeded)
			msg := err.Error()
			if strings.Contains(msg, method) || strings.Contains(msg, "Swarm.") || strings.Contains(msg, "Cluster.") {
				t.Errorf("got %q, which names the RPC method", msg)
			}
			want := client.Describe(method) + " gave up when its deadline passed: forwarding to the leader at " + addr + ": "
			if !strings.HasPrefix(msg, want) {
				t.Errorf("got %q, want it to start %q", msg, want)
			}
			if !errors.Is(err, transport.ErrConnection) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("errors.Is(%q) lost its causes", msg)
			}
		})
	}
	if got, want := deadlineError("Swarm.Future", nil, context.DeadlineExceeded).Error(), "the request gave up when its deadline passed: "; !strings.HasPrefix(got, want) {
		t.Errorf("a method without words: got %q, want it to start %q", got, want)
	}
	if err := deadlineError(client.MethodRegister, nil, context.DeadlineExceeded); !errors.Is(err, transport.ErrNoLeader) {
		t.Errorf("with no cause known, got %v, want it to match ErrNoLeader", err)
	}
}
