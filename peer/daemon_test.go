package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"fileshare/client"
	"fileshare/internal/freeport"
	"fileshare/internal/poll"
	"fileshare/master"
	"fileshare/transport"
)

// logRecord is one log line a recordingHandler kept: its level, message
// and every attribute (the logger's own and the record's) as text.
type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

// logRecorder keeps every record logged through its handlers.
type logRecorder struct {
	mu   sync.Mutex
	recs []logRecord
}

// matching returns the records with this level and message.
func (r *logRecorder) matching(level slog.Level, msg string) []logRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logRecord
	for _, rec := range r.recs {
		if rec.level == level && rec.msg == msg {
			out = append(out, rec)
		}
	}
	return out
}

// recordingHandler is a slog.Handler that hands every record, at every
// level, to its recorder.
type recordingHandler struct {
	r     *logRecorder
	attrs []slog.Attr
}

func (h recordingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h recordingHandler) Handle(_ context.Context, rec slog.Record) error {
	lr := logRecord{level: rec.Level, msg: rec.Message, attrs: map[string]string{}}
	for _, a := range h.attrs {
		lr.attrs[a.Key] = a.Value.String()
	}
	rec.Attrs(func(a slog.Attr) bool {
		lr.attrs[a.Key] = a.Value.String()
		return true
	})
	h.r.mu.Lock()
	h.r.recs = append(h.r.recs, lr)
	h.r.mu.Unlock()
	return nil
}

func (h recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recordingHandler{r: h.r, attrs: append(h.attrs[:len(h.attrs):len(h.attrs)], as...)}
}

func (h recordingHandler) WithGroup(string) slog.Handler { return h }

// recordLogs returns a logger whose records the returned recorder keeps.
func recordLogs() (*slog.Logger, *logRecorder) {
	r := &logRecorder{}
	return slog.New(recordingHandler{r: r}), r
}

const msgUnreachable = "cannot reach any master; retrying"

// A peer whose masters are all down says so at WARN within a few seconds,
// naming the masters it tried and the last error, and keeps retrying: an
// unreachable cluster is not a reason to stop.
func TestPeerWarnsWhenNoMasterIsReachable(t *testing.T) {
	masters := []string{freeport.Loopback(t), freeport.Loopback(t), freeport.Loopback(t)}
	logger, logs := recordLogs()
	p, err := New(Config{
		Masters:       masters,
		DataDir:       filepath.Join(t.TempDir(), "data"),
		ShareDir:      shareFolder(t, map[string][]byte{"a.txt": []byte("a")}),
		Listen:        "127.0.0.1:0",
		MasterTimeout: time.Second,
		Logger:        logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	start := time.Now()
	var warn logRecord
	poll.Until(t, 15*time.Second, "a WARN that no master is reachable", func() bool {
		ws := logs.matching(slog.LevelWarn, msgUnreachable)
		if len(ws) > 0 {
			warn = ws[0]
		}
		return len(ws) > 0
	})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the first warning came after %v, want within a few seconds", d)
	}
	if got, want := warn.attrs["masters"], strings.Join(masters, ","); got != want {
		t.Errorf("warning names masters %q, want %q", got, want)
	}
	if !strings.Contains(warn.attrs["err"], masters[0][strings.LastIndex(masters[0], ":"):]) && !strings.Contains(warn.attrs["err"], "connection") {
		t.Errorf("warning's err %q does not say what failed", warn.attrs["err"])
	}
	select {
	case <-p.Done():
		t.Fatalf("an unreachable cluster stopped the peer: %v", p.Err())
	default:
	}
	if err := p.Err(); err != nil {
		t.Fatalf("Err() = %v while the peer retries, want nil", err)
	}
}

// An outage is logged at a slow pace, not on every failed call: once it
// has lasted the grace period, then every unreachableRepeat; the recovery
// is logged once at INFO, and a short blip (a leader election) not at all.
func TestUnreachableMastersAreReportedAtASlowPace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logger, logs := recordLogs()
		p := &Peer{cfg: Config{Masters: []string{"m1:1", "m2:2"}}, logger: logger}
		fail := errors.New("dial m1:1: connection refused")

		// A blip shorter than the grace period: nothing logged.
		p.masterFailed(time.Now(), fail)
		time.Sleep(unreachableGrace / 2)
		p.masterAnswered()
		if n := len(logs.matching(slog.LevelWarn, msgUnreachable)); n != 0 {
			t.Fatalf("a %v blip logged %d warnings, want 0", unreachableGrace/2, n)
		}

		// A 65 s outage, one failed call per second: warnings at the
		// grace period, then every 30 s.
		for range 65 {
			start := time.Now()
			time.Sleep(time.Second)
			p.masterFailed(start, fmt.Errorf("join the index: %w", fail))
		}
		ws := logs.matching(slog.LevelWarn, msgUnreachable)
		if len(ws) != 3 {
			t.Fatalf("65 s outage logged %d warnings, want 3 (at 2 s, 32 s, 62 s)", len(ws))
		}
		if ws[0].attrs["masters"] != "m1:1,m2:2" || !strings.Contains(ws[0].attrs["err"], "connection refused") {
			t.Fatalf("warning attrs = %v, want the masters and the last error", ws[0].attrs)
		}
		p.masterAnswered()
		p.masterAnswered()
		if rs := logs.matching(slog.LevelInfo, "reached the masters again"); len(rs) != 1 {
			t.Fatalf("recovery logged %d times, want once", len(rs))
		}
	})
}

// A peer whose registrations the index refuses for good (here: over the
// masters' --max-files-per-peer) stops, with an error that wraps both
// ErrRefused and the masters' reason and says what to do, instead of
// retrying every few seconds forever.
func TestPermanentRefusalStopsThePeer(t *testing.T) {
	c := newTestCluster(t, func(cfg *master.Config) { cfg.MaxFilesPerPeer = 1 })
	logger, logs := recordLogs()
	p := startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"a.txt": []byte("a"), "b.txt": []byte("b")}), func(cfg *Config) { cfg.Logger = logger })
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the peer still runs 20 s after the index refused its files")
	}
	err := p.Err()
	if !errors.Is(err, ErrRefused) || !errors.Is(err, master.ErrQuota) {
		t.Fatalf("Err() = %v, want ErrRefused wrapping master.ErrQuota", err)
	}
	for _, want := range []string{"limit of 1 files per peer", "share fewer files"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Err() = %q, want it to say %q", err, want)
		}
	}
	if errors.Is(err, ErrClosed) {
		t.Errorf("Err() = %v matches ErrClosed; the peer was not closed", err)
	}
	if rerr := p.Rescan(t.Context()); !errors.Is(rerr, ErrRefused) {
		t.Errorf("Rescan after the refusal = %v, want the refusal", rerr)
	}
	if len(logs.matching(slog.LevelError, "stopping: the index refuses this peer; it no longer registers files or heartbeats")) != 1 {
		t.Error("the refusal was not logged once at ERROR")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(p.Err(), ErrRefused) {
		t.Errorf("after Close, Err() = %v, want the refusal still", p.Err())
	}
}

// Close closes Done, and Err then says ErrClosed; a running peer's Err is
// nil.
func TestDoneAndErrAfterClose(t *testing.T) {
	c := newTestCluster(t, nil)
	p := startPeer(t, c, "alice", t.TempDir(), nil)
	if err := p.Err(); err != nil {
		t.Fatalf("Err() of a running peer = %v", err)
	}
	p.Close()
	select {
	case <-p.Done():
	default:
		t.Fatal("Done is open after Close")
	}
	if !errors.Is(p.Err(), ErrClosed) {
		t.Fatalf("Err() after Close = %v, want ErrClosed", p.Err())
	}
}

// Once its files are registered the peer logs it once, with their count:
// the line a person, or a README step, waits for.
func TestPeerLogsOnceWhenEveryFileIsRegistered(t *testing.T) {
	c := newTestCluster(t, nil)
	logger, logs := recordLogs()
	p := startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"a.txt": []byte("a"), "d/b.txt": []byte("b")}), func(cfg *Config) { cfg.Logger = logger })
	const msg = "sharing: every file is registered"
	poll.Until(t, 20*time.Second, "the peer to log "+msg, func() bool { return len(logs.matching(slog.LevelInfo, msg)) > 0 })
	if err := p.Rescan(t.Context()); err != nil {
		t.Fatal(err)
	}
	rs := logs.matching(slog.LevelInfo, msg)
	if len(rs) != 1 || rs[0].attrs["files"] != "2" || rs[0].attrs["peer"] != p.ID() {
		t.Fatalf("%q logged as %+v, want once with files=2 and the peer's ID", msg, rs)
	}
	if n := len(p.Shared()); n != 2 {
		t.Fatalf("after the line, the peer serves %d files, want 2", n)
	}
}

// Only answers retrying cannot change stop a peer: lost connections, no
// leader, timeouts and the errors the sync goroutine handles itself
// (unknown peer, conflict) keep it retrying.
func TestRefusedClassifiesMasterErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&transport.RemoteError{WireCode: "quota", Message: "over the limit"}, true},
		{&transport.RemoteError{WireCode: "unauthorized", Message: "unauthorized"}, true},
		{&transport.RemoteError{WireCode: "forbidden", Message: "forbidden"}, true},
		{&transport.RemoteError{WireCode: "not_your_peer_id", Message: "not yours"}, true},
		{&transport.RemoteError{WireCode: "invalid", Message: "bad name"}, true},
		{fmt.Errorf("join: %w", transport.ErrNoLeader), false},
		{fmt.Errorf("dial: %w: refused", transport.ErrConnection), false},
		{fmt.Errorf("JoinPeer: no master answered before the deadline; last error: %w", transport.ErrTimeout), false},
		{context.DeadlineExceeded, false},
		{fmt.Errorf("join the index: %w", &client.NothingListensError{Method: "Swarm.PeerJoin", Addrs: []string{"127.0.0.1:1"}}), false},
		{&transport.NotFileShareError{Addr: "127.0.0.1:80", Answer: transport.AnswerHTTP}, false},
		{&transport.RemoteError{WireCode: "unknown_peer", Message: "unknown peer"}, false},
		{&transport.RemoteError{WireCode: "conflict", Message: "conflict"}, false},
		{&transport.RemoteError{WireCode: "internal", Message: "disk full"}, false},
		{errors.New("scan share folder: permission denied"), false},
	} {
		if got := refused(tc.err); got != tc.want {
			t.Errorf("refused(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
