package master_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/poll"
	"fileshare/master/mastertest"
)

// recorder is a slog.Handler that keeps every record at DEBUG and above,
// rendered as one line of text, so a test can read what the masters logged.
type recorder struct {
	mu    *sync.Mutex
	lines *[]logLine
	attrs []slog.Attr
}

type logLine struct {
	level slog.Level
	text  string // the message and its attributes, "msg k=v k=v"
}

func newRecorder() *recorder { return &recorder{mu: new(sync.Mutex), lines: new([]logLine)} }

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	for _, a := range r.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	r.mu.Lock()
	*r.lines = append(*r.lines, logLine{rec.Level, b.String()})
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *r
	c.attrs = append(append([]slog.Attr(nil), r.attrs...), as...)
	return &c
}
func (r *recorder) WithGroup(string) slog.Handler { return r }

// at returns the recorded lines at level or above.
func (r *recorder) at(level slog.Level) []string { return r.since(0, level) }

// mark returns a position in the record for since.
func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(*r.lines)
}

// since returns the lines recorded after mark at level or above, each
// prefixed with its level.
func (r *recorder) since(mark int, level slog.Level) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, l := range (*r.lines)[mark:] {
		if l.level >= level {
			out = append(out, l.level.String()+" "+l.text)
		}
	}
	return out
}

// contains reports whether some recorded line contains s.
func (r *recorder) contains(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range *r.lines {
		if strings.Contains(l.text, s) {
			return true
		}
	}
	return false
}

// A routine leadership hand-off is not a failure: an operator who runs
// 'fileshare cluster transfer-leader' must find no ERROR in any master's
// log afterwards, even with writes in flight while leadership moves.
func TestLeadershipTransferLogsNoError(t *testing.T) {
	rec := newRecorder()
	c := mastertest.New(t, 3, mastertest.Options{TLS: true, Logger: slog.New(rec)})
	c.Leader()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	id, err := client.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	pc := c.PeerClient(id)
	if _, err := pc.Join(ctx, id, "127.0.0.1:1"); err != nil {
		t.Fatalf("join a peer: %v", err)
	}
	admin := c.Client()
	// Five hand-offs: the old leader's replication meets the new term in
	// about half of them (raft then logged "peer has newer term" as ERROR).
	for range 5 {
		old := c.Leader()
		wctx, stopWrites := context.WithCancel(ctx)
		var writes sync.WaitGroup
		writes.Go(func() {
			for wctx.Err() == nil {
				_, _ = pc.Heartbeat(wctx, id)
			}
		})
		reply, err := admin.TransferLeader(ctx, "")
		stopWrites()
		writes.Wait()
		if err != nil {
			t.Fatalf("transfer leadership from %s: %v", c.ID(old), err)
		}
		if reply.LeaderID == c.ID(old) {
			t.Fatalf("after the transfer %s still leads", reply.LeaderID)
		}
		c.Leader()
		c.Converge()
		// A write through the new leader: every member has heard of it.
		if _, err := pc.Heartbeat(ctx, id); err != nil {
			t.Fatalf("heartbeat after the transfer: %v", err)
		}
	}
	if errs := rec.at(slog.LevelError); len(errs) > 0 {
		t.Errorf("five leadership transfers logged %d ERROR lines, want none:\n%s", len(errs), strings.Join(errs, "\n"))
	}
	for _, bad := range []string{"%+v", "{}"} {
		if rec.contains(bad) {
			t.Errorf("the masters' logs contain %q:\n%s", bad, strings.Join(rec.at(slog.LevelDebug), "\n"))
		}
	}
}

// A master left without a majority retries for as long as it is alone,
// and its log must stay readable meanwhile: no ERROR (losing contact
// with members is the fault the cluster is built for), and each of raft's
// warnings once per interval, not once per retry.
func TestMasterWithoutMajorityLogsEachWarningOncePerInterval(t *testing.T) {
	rec := newRecorder()
	c := mastertest.New(t, 3, mastertest.Options{TLS: true, Logger: slog.New(rec)})
	leader := c.Leader()
	survivor := c.ID(leader)
	start, began := rec.mark(), time.Now()
	for i := range 3 {
		if i != leader {
			c.Kill(i)
		}
	}
	// Three elections it cannot win: raft has retried every warning many
	// times by now.
	poll.Until(t, 30*time.Second, survivor+" to stand for election three times", func() bool {
		n := 0
		for _, l := range rec.since(start, slog.LevelInfo) {
			if strings.Contains(l, "entering candidate state") && strings.Contains(l, "master="+survivor) {
				n++
			}
		}
		return n >= 3
	})
	// Once at first, then once per 10 s interval that passed.
	allowed := 1 + int(time.Since(began)/(10*time.Second))
	seen := map[string]int{}
	for _, l := range rec.since(start, slog.LevelWarn) {
		if !strings.Contains(l, "master="+survivor) || !strings.Contains(l, "component=raft") {
			continue
		}
		if strings.HasPrefix(l, "ERROR") {
			t.Errorf("%s without a majority logged an error: %s", survivor, l)
		}
		msg, _, _ := strings.Cut(l, " master=")
		msg, _, _ = strings.Cut(msg, " (×")
		seen[msg]++
	}
	for msg, n := range seen {
		if n > allowed {
			t.Errorf("%s without a majority logged %q %d times, want at most %d", survivor, msg, n, allowed)
		}
	}
	if len(seen) == 0 {
		t.Errorf("%s without a majority logged no warning from raft, want one for each failure to reach a member", survivor)
	}
}
