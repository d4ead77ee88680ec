package master

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// testRaftNode stands in for *raft.Raft, which raft logs as the value of
// "follower", "leader" and "node": a Stringer whose fields are unexported.
type testRaftNode struct{ addr string }

func (n *testRaftNode) String() string { return "Node at " + n.addr + " [Follower]" }

// logOnce logs one hclog line through a bridge over a handler of the given
// format ("text" or "json") and returns what the handler wrote.
func logOnce(t *testing.T, format string, level hclog.Level, msg string, args ...any) string {
	t.Helper()
	var buf bytes.Buffer
	var h slog.Handler
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	switch format {
	case "text":
		h = slog.NewTextHandler(&buf, opts)
	case "json":
		h = slog.NewJSONHandler(&buf, opts)
	}
	newHCLogBridge(slog.New(h), "raft").Log(level, msg, args...)
	return buf.String()
}

// Raft's own calls, copied from hashicorp/raft, must come out as text a
// person can read in both text and JSON logs: no "%+v" printed literally,
// no "{}" for a value JSON cannot see into.
func TestBridgeRendersRaftValuesReadably(t *testing.T) {
	servers := []raft.Server{
		{Suffrage: raft.Voter, ID: "m1", Address: "127.0.0.1:7001"},
		{Suffrage: raft.Nonvoter, ID: "m4", Address: "127.0.0.1:7004"},
	}
	for _, tc := range []struct {
		name     string
		msg      string
		args     []any
		want     string // in both formats
		wantText string // in the text format, when quoting differs
	}{
		{"empty configuration", "initial configuration", []any{"index", 0, "servers", hclog.Fmt("%+v", []raft.Server{})}, "none", "servers=none"},
		{"configuration", "updating configuration", []any{"servers", hclog.Fmt("%+v", servers)}, "m1 (127.0.0.1:7001), m4 (127.0.0.1:7004, nonvoter)", ""},
		{"the raft node", "entering follower state", []any{"follower", &testRaftNode{"127.0.0.1:7001"}, "leader-address", raft.ServerAddress(""), "leader-id", raft.ServerID("")}, "Node at 127.0.0.1:7001 [Follower]", ""},
		{"a peer", "pipelining replication", []any{"peer", servers[0]}, "m1 (127.0.0.1:7001)", ""},
		{"a percentage", "snapshot restore progress", []any{"percent-complete", hclog.Fmt("%0.2f%%", 42.0)}, "42.00%", ""},
		{"a struct", "got unexpected command", []any{"command", struct{ Term uint64 }{7}}, "{Term:7}", ""},
		{"a named ID", "added peer, starting replication", []any{"peer", raft.ServerID("m2")}, "m2", "peer=m2"},
		{"a missing value", "odd", []any{"key"}, "(missing)", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, format := range []string{"text", "json"} {
				got := logOnce(t, format, hclog.Info, tc.msg, tc.args...)
				for _, bad := range []string{"%+v", "%!", "{}", "!BADKEY"} {
					if strings.Contains(got, bad) {
						t.Errorf("%s: got %q, which contains %q", format, got, bad)
					}
				}
				if !strings.Contains(got, tc.want) {
					t.Errorf("%s: got %q, want it to contain %q", format, got, tc.want)
				}
				if format == "text" && tc.wantText != "" && !strings.Contains(got, tc.wantText) {
					t.Errorf("text: got %q, want it to contain %q", got, tc.wantText)
				}
			}
		})
	}
}

// Errors raft logs whenever a member is down or leadership moves are not
// this master's failures: they are logged as warnings (or, for a routine
// hand-off, information), while raft's other errors stay errors.
func TestBridgeDowngradesExpectedFaults(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want string
	}{
		{"failed to appendEntries to", "level=WARN"},
		{"failed to heartbeat to", "level=WARN"},
		{"failed to make requestVote RPC", "level=WARN"},
		{"failed to pipeline appendEntries", "level=WARN"},
		{"peer has newer term, stopping replication", "level=INFO"},
		{"failed to persist vote", "level=ERROR"},
	} {
		got := logOnce(t, "text", hclog.Error, tc.msg, "error", fmt.Errorf("dial tcp: connection refused"))
		if !strings.Contains(got, tc.want) {
			t.Errorf("raft's error %q: got %q, want %s", tc.msg, got, tc.want)
		}
	}
	// A warning stays a warning: downgrading never raises a level.
	if got := logOnce(t, "text", hclog.Debug, "failed to heartbeat to"); !strings.Contains(got, "level=DEBUG") {
		t.Errorf("raft's debug line: got %q, want level=DEBUG", got)
	}
}

// A message repeated every 100 ms by a master without a majority is
// logged once, then once per interval with the count of lines held back;
// other messages and other components are not held back by it.
func TestBridgeLimitsRepeatsInVirtualTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		h := slog.NewTextHandler(&buf, &slog.HandlerOptions{
			ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			},
		})
		b := newHCLogBridgeEvery(slog.New(h), "raft", 10*time.Second)
		transport := b.Named("net")
		for range 250 { // 25 s
			b.Warn("failed to contact", "server-id", "m2")
			b.Error("failed to appendEntries to", "peer", "m2")
			time.Sleep(100 * time.Millisecond)
		}
		b.Info("entering candidate state")
		b.Info("entering candidate state")
		transport.Warn("failed to contact")

		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		want := []string{
			`level=WARN msg="failed to contact" component=raft server-id=m2`,
			`level=WARN msg="failed to appendentries to" component=raft peer=m2`,
			`level=WARN msg="failed to contact (×99 in 10s)" component=raft server-id=m2`,
			`level=WARN msg="failed to appendentries to (×99 in 10s)" component=raft peer=m2`,
			`level=WARN msg="failed to contact (×99 in 10s)" component=raft server-id=m2`,
			`level=WARN msg="failed to appendentries to (×99 in 10s)" component=raft peer=m2`,
			`level=INFO msg="entering candidate state" component=raft`,
			`level=INFO msg="entering candidate state" component=raft`,
			`level=WARN msg="failed to contact" component=raft.net`,
		}
		if len(lines) != len(want) {
			t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), buf.String())
		}
		for i := range want {
			if lines[i] != want[i] {
				t.Errorf("line %d: got  %s\nwant %s", i, lines[i], want[i])
			}
		}
	})
}

// The limiter's table does not grow without bound: runs whose interval
// has passed are dropped once it is full, and a dropped message starts a
// new run (logged at once) when it comes back.
func TestRepeatLimiterForgetsOldRuns(t *testing.T) {
	l := newRepeatLimiter(time.Second)
	t0 := time.Unix(0, 0)
	for i := range repeatTableMax {
		if ok, _, _ := l.admit("raft", fmt.Sprint("msg ", i), t0); !ok {
			t.Fatalf("the first msg %d was held back", i)
		}
	}
	if ok, _, _ := l.admit("raft", "msg 0", t0.Add(time.Millisecond)); ok {
		t.Fatal("a repeat within the interval was admitted")
	}
	if ok, _, _ := l.admit("raft", "new", t0.Add(2*time.Second)); !ok {
		t.Fatal("a new message was held back")
	}
	if n := len(l.seen); n != 1 {
		t.Errorf("after the interval passed, the table holds %d runs, want 1", n)
	}
}
