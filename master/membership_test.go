package master_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"fileshare/internal/freeport"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/master/mastertest"
)

func TestMembershipJoinTransferRemove(t *testing.T) {
	c := newCluster(t, 3, fastAutopilot)
	leader := c.Leader()
	cl := c.Client()
	dave := identity("dave")
	if _, err := cl.Join(t.Context(), dave, "127.0.0.1:9006"); err != nil {
		t.Fatal(err)
	}
	acked := registerMany(t, cl, dave, "pre-join", 20)

	// A fourth master joins through any member and catches up.
	cfg := master.Config{ID: "m4", DataDir: t.TempDir(), Listen: freeport.On(t, "127.0.0.14"), Join: []string{c.Addr(1)}, Logger: mastertest.TestLogger(t)}
	m4, err := master.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	defer m4.CloseNow()
	poll.Until(t, 10*time.Second, "m4 catches up", func() bool { return m4.Status(t.Context(), false).Files == len(acked) })

	// A second master claiming the ID m4 at another address is refused.
	dup := master.Config{ID: "m4", DataDir: t.TempDir(), Listen: freeport.On(t, "127.0.0.15"), Join: []string{c.Addr(0)}, JoinTimeout: 5 * time.Second}
	if _, err := master.New(t.Context(), dup); !errors.Is(err, master.ErrJoinFailed) || !strings.Contains(err.Error(), "already a member") {
		t.Fatalf("joining with a clashing ID: got %v, want ErrJoinFailed naming the clash", err)
	}

	// m4 joined as a non-voter; once stable, autopilot makes it a voter.
	poll.Until(t, 20*time.Second, "m4 promoted to voter", func() bool { return members(t, c, leader)["m4"] == "Voter" })

	// Hand leadership to m4.
	out, err := cl.TransferLeader(t.Context(), "m4")
	if err != nil || out.LeaderID != "m4" {
		t.Fatalf("transfer to m4: got %+v, %v", out, err)
	}
	poll.Until(t, 10*time.Second, "m4 leads", m4.LeaderReady)

	// Remove m1; the rest carry on.
	if err := cl.RemoveMember(t.Context(), "m1"); err != nil {
		t.Fatalf("remove m1: %v", err)
	}
	if err := cl.RemoveMember(t.Context(), "nobody"); !errors.Is(err, master.ErrUnknownMember) {
		t.Fatalf("remove unknown member: got %v, want ErrUnknownMember", err)
	}
	st := m4.Status(t.Context(), false)
	for _, mem := range st.Members {
		if mem.ID == "m1" {
			t.Fatalf("m1 still in the configuration: %+v", st.Members)
		}
	}
	acked = append(acked, registerMany(t, cl, dave, "after-remove", 10)...)
	requirePresent(t, cl, acked)
}
