package master

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	rtmetrics "runtime/metrics"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"fileshare/client"
	"fileshare/internal/httplimit"
	"fileshare/transport"
)

// Status returns this master's view. With members set, it also asks every
// other member (briefly, in parallel) how recently it heard from the
// leader, so the table shows each member's last contact.
func (m *Master) Status(ctx context.Context, members bool) client.Status {
	leaderID, leaderAddr := m.Leader()
	counts := m.fsm.Counts()
	st := client.Status{
		ID:           m.cfg.ID,
		Addr:         m.advertise,
		HTTPAddr:     m.HTTPAddr(),
		TrackerHTTP:  m.TrackerHTTPAddr(),
		TrackerUDP:   m.TrackerUDPAddr(),
		State:        client.RaftState(m.raft.State().String()),
		LeaderID:     leaderID,
		LeaderAddr:   leaderAddr,
		Term:         m.raft.CurrentTerm(),
		LastIndex:    m.raft.LastIndex(),
		CommitIndex:  m.raft.CommitIndex(),
		AppliedIndex: m.raft.AppliedIndex(),
		Peers:        counts.Peers,
		Files:        counts.Files,
		Holdings:     counts.Holdings,
		Digest:       m.fsm.Digest(),
		HeapBytes:    heapInUse(),
	}
	servers, err := m.configuration()
	self := false
	if err == nil {
		for _, s := range servers {
			if string(s.ID) == m.cfg.ID {
				self = true
			}
			st.Members = append(st.Members, client.Member{
				ID: string(s.ID), Addr: string(s.Address), Suffrage: client.Suffrage(s.Suffrage.String()),
				Leader: string(s.ID) == leaderID, LastContactMillis: -1,
			})
		}
	}
	st.Ready, _ = m.readiness(self, leaderID)
	if members {
		m.fillLastContact(ctx, st.Members)
	}
	return st
}

// lastLeaderContact is how long ago this master heard from the leader: 0 on
// the leader itself, -1 if never.
func (m *Master) lastLeaderContact() int64 {
	if m.raft.State() == raft.Leader {
		return 0
	}
	t := m.raft.LastContact()
	if t.IsZero() {
		return -1
	}
	return time.Since(t).Milliseconds()
}

func (m *Master) fillLastContact(ctx context.Context, members []client.Member) {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for i := range members {
		if members[i].ID == m.cfg.ID {
			members[i].LastContactMillis = m.lastLeaderContact()
			continue
		}
		// Owned by this call, which waits for it; ctx bounds the call.
		wg.Go(func() {
			var st client.Status
			if err := m.client.Call(ctx, members[i].Addr, client.MethodStatus, &client.StatusRequest{}, &st); err == nil {
				for _, mem := range st.Members {
					if mem.ID == st.ID {
						members[i].LastContactMillis = mem.LastContactMillis
					}
				}
			}
		})
	}
	wg.Wait()
}

// readiness says whether this master should receive traffic (what
// /v1/readyz answers): it is a member of the cluster, it knows a leader
// and is in touch with it, and its FSM has applied all but at most
// Config.ReadyMaxLag of the entries the leader has committed.
//
// A follower learns the leader's commit index from every AppendEntries
// (heartbeats included), so its raft.CommitIndex is the leader's as of the
// last contact; requiring that contact to be younger than
// Config.ReadyMaxContact is what makes a cut-off follower, whose commit
// index froze with its last contact, unready. The leader itself is ready
// once it has passed its term's barrier (LeaderReady) — it steps down on
// its own when it loses touch with a quorum. The lag bound keeps readiness
// from flapping under write load, where apply always trails commit by a
// batch or two.
func (m *Master) readiness(member bool, leaderID string) (bool, string) {
	select {
	case <-m.removed:
		return false, "this master was removed from the cluster"
	default:
	}
	switch {
	case !member:
		return false, "not a member of a cluster yet"
	case leaderID == "":
		return false, "no leader is known"
	case leaderID == m.cfg.ID:
		if !m.leaderReady() {
			return false, "newly elected leader is applying earlier terms' entries"
		}
		return true, "ready"
	}
	last := m.raft.LastContact()
	if last.IsZero() {
		return false, "has not heard from the leader yet"
	}
	if age := time.Since(last); age > m.cfg.ReadyMaxContact {
		return false, fmt.Sprintf("last heard from leader %s %v ago (more than %v)", leaderID, age.Round(time.Millisecond), m.cfg.ReadyMaxContact)
	}
	commit, applied := m.raft.CommitIndex(), m.raft.AppliedIndex()
	if commit > applied+m.cfg.ReadyMaxLag {
		return false, fmt.Sprintf("index is catching up: applied %d of %d", applied, commit)
	}
	return true, "ready"
}

// heapInUse returns the Go heap in use (runtime.MemStats.HeapInuse) from
// runtime/metrics, which does not stop the world as ReadMemStats does:
// status is asked for on every scrape and dashboard refresh.
func heapInUse() uint64 {
	s := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
	rtmetrics.Read(s)
	var n uint64
	for _, x := range s {
		if x.Value.Kind() == rtmetrics.KindUint64 {
			n += x.Value.Uint64()
		}
	}
	return n
}

// ErrNothingToSnapshot means no entries were applied since the last snapshot.
var ErrNothingToSnapshot = transport.NewError("nothing_to_snapshot", "nothing new to snapshot since the last one")

// handleSnapshot snapshots this master's index now (operators use it
// before a backup; the scale benchmark times it).
func (m *Master) handleSnapshot(ctx context.Context, _ *client.SnapshotRequest) (*client.SnapshotReply, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	start := time.Now()
	f := m.raft.Snapshot()
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNothingNewToSnapshot) {
			return nil, ErrNothingToSnapshot
		}
		return nil, fmt.Errorf("snapshot: %w", m.raftError(err))
	}
	meta, rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("open snapshot: %w", err)
	}
	rc.Close()
	return &client.SnapshotReply{Index: meta.Index, DurationMillis: time.Since(start).Milliseconds()}, nil
}

func (m *Master) handleStatus(ctx context.Context, _ *client.StatusRequest) (*client.Status, error) {
	st := m.Status(ctx, false)
	for i := range st.Members {
		if st.Members[i].ID == m.cfg.ID {
			st.Members[i].LastContactMillis = m.lastLeaderContact()
		}
	}
	return &st, nil
}

func (m *Master) startHTTP() error {
	if err := m.cfg.HTTPLimits.Check("HTTPLimits"); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	raw, err := net.Listen("tcp", m.cfg.HTTP)
	if err != nil {
		return portError("HTTP", "HTTP", m.cfg.HTTP, err)
	}
	// The port faces strangers: every connection has a deadline, and
	// connections are capped in all and per client (HTTPLimits), so idle
	// or hoarded connections cannot use up this process's descriptors
	// (which the cluster port needs too).
	ln := httplimit.NewListener(raw, m.cfg.HTTPLimits)
	m.httpLn = ln
	m.httpAddr.set(ln.Addr())
	var serveLn net.Listener = ln
	if m.cfg.TLS != nil && m.cfg.TLS.HasCertificate() {
		serveLn = sniffListener{Listener: ln, cfg: m.cfg.TLS.ServerConfig()} // HTTPS beside HTTP (privatehttp.go)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, m.Status(r.Context(), true))
	})
	mux.HandleFunc("GET /v1/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /v1/readyz", func(w http.ResponseWriter, r *http.Request) {
		st := m.Status(r.Context(), false)
		self := false
		for _, mem := range st.Members {
			self = self || mem.ID == m.cfg.ID
		}
		ok, reason := m.readiness(self, st.LeaderID)
		code := http.StatusOK
		if !ok {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"ready": ok, "reason": reason, "leader_id": st.LeaderID,
			"applied_index": st.AppliedIndex, "commit_index": st.CommitIndex, "last_contact_ms": m.lastLeaderContact()})
	})
	// Profiles for operators chasing a slow master (go tool pprof URL),
	// only on request: they reveal memory contents and cost CPU.
	if m.cfg.EnablePprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	}
	mux.Handle("GET /metrics", m.metrics.handler())
	m.dash.mount(mux)
	m.mountPrivateAdmin(mux)
	m.httpSrv = httplimit.NewServer(mux, m.cfg.HTTPLimits)
	m.httpSrv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, sniffConnKey{}, c)
	}
	m.httpSrv.RegisterOnShutdown(m.dash.close)
	// Owned by m (m.wg); startHTTP runs only inside New. It ends when
	// shutdown closes the server.
	m.wg.Go(func() {
		if err := m.httpSrv.Serve(serveLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.logger.Error("http server stopped", "err", err)
		}
	})
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
