package master

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/tracker"
)

// trackerServers are the BitTorrent front-ends of one master; both may be
// absent. startTrackers starts them; stopTrackers, the first step of
// shutdown, stops them, so no announce arrives while Raft stops. It also
// holds the queues of membership changes (trackerbatch.go), which
// runRenewals runs, and the copy of the connection-ID secrets.
type trackerServers struct {
	http              *tracker.HTTPServer
	httpLn            net.Listener
	udp               *tracker.UDPServer
	udpPC             net.PacketConn
	httpAddr, udpAddr boundAddr
	cancel            context.CancelFunc
	wg                sync.WaitGroup

	queues    sync.Once
	announcer *announceQueue // the leader's: changes to propose
	relay     *announceQueue // a follower's: changes to pass to the leader
	connIDs   connIDCache
}

// announceQueues returns the announcer and the relay, creating them on
// first use (handlers may run before runRenewals starts them).
func (m *Master) announceQueues() (announcer, relay *announceQueue) {
	t := &m.trackers
	t.queues.Do(func() {
		t.announcer = newAnnounceQueue(fsm.MaxAnnouncesPerBatch, announcerInflight, m.proposeAnnounces)
		t.relay = newAnnounceQueue(client.MaxRelayedAnnounces, relayInflight, m.relayAnnounces)
	})
	return t.announcer, t.relay
}

func (m *Master) trackerConfig() tracker.Config {
	t := m.cfg.Tracker
	return tracker.Config{
		Intervals:  tracker.Intervals{Interval: t.Interval, MinInterval: t.MinInterval, Jitter: t.Interval / 10},
		MaxNumWant: t.MaxNumWant,
		Logger:     m.logger.With("component", "tracker"),
	}
}

func (m *Master) startTrackers() error {
	t := &m.trackers
	b := m.frontBackend() // unsafecredit.go
	ctx, cancel := context.WithCancel(m.ctx)
	t.cancel = cancel
	if a := m.cfg.Tracker.HTTP; a != "" {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return portError("tracker HTTP", "Tracker.HTTP", a, err)
		}
		t.httpLn = ln
		t.httpAddr.set(ln.Addr())
		t.http = tracker.NewHTTPServer(b, tracker.HTTPConfig{Config: m.trackerConfig(), MaxConnsPerIP: m.cfg.Tracker.MaxConnsPerIP})
		t.wg.Go(func() {
			if err := t.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				m.logger.Error("tracker HTTP server stopped", "err", err)
			}
		})
	}
	if a := m.cfg.Tracker.UDP; a != "" {
		pc, err := tracker.ListenUDP(ctx, "udp", a, 0) // one SO_REUSEPORT socket per core
		if err != nil {
			return portError("tracker UDP", "Tracker.UDP", a, err)
		}
		t.udpPC = pc
		t.udpAddr.set(pc.LocalAddr())
		if t.udp, err = tracker.NewUDPServer(b, tracker.UDPConfig{Config: m.trackerConfig()}); err != nil {
			return err
		}
		t.wg.Go(func() {
			if err := t.udp.Serve(ctx, pc); err != nil {
				m.logger.Error("tracker UDP server stopped", "err", err)
			}
		})
	}
	if t.http != nil || t.udp != nil {
		m.logger.Info("tracker serving", "http", m.TrackerHTTPAddr(), "udp", m.TrackerUDPAddr())
	}
	return nil
}

// stopTrackers stops both front-ends: requests in flight get until ctx
// ends or shutdownStepGrace passes.
func (m *Master) stopTrackers(ctx context.Context) {
	t := &m.trackers
	if t.http != nil {
		hctx, cancel := context.WithTimeout(ctx, shutdownStepGrace)
		_ = t.http.Shutdown(hctx)
		cancel()
	} else if t.httpLn != nil {
		t.httpLn.Close()
	}
	if t.cancel != nil {
		t.cancel()
	}
	done := make(chan struct{})
	// Owned by stopTrackers, which waits for it below or gives up.
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(shutdownStepGrace):
		m.logger.Warn("tracker front-ends are slow to stop")
	}
	if t.udpPC != nil {
		t.udpPC.Close()
	}
}

// TrackerHTTPAddr returns the HTTP tracker's listen address, or "" if it
// is off.
func (m *Master) TrackerHTTPAddr() string { return m.trackers.httpAddr.String() }

// TrackerUDPAddr returns the UDP tracker's listen address, or "" if it is
// off.
func (m *Master) TrackerUDPAddr() string { return m.trackers.udpAddr.String() }

// TrackerStats returns the front-ends' live counters (nil for one that is
// off).
func (m *Master) TrackerStats() (httpStats, udpStats *tracker.Stats) {
	if m.trackers.http != nil {
		httpStats = m.trackers.http.Stats()
	}
	if m.trackers.udp != nil {
		udpStats = m.trackers.udp.Stats()
	}
	return httpStats, udpStats
}

// ConnIDSecrets returns the cluster's UDP connection-ID secrets, newest
// first, as this master's tracker uses them (nil until the leader set one).
func (m *Master) ConnIDSecrets() [][]byte { return trackerBackend{m}.ConnIDSecrets() }

// TrackerBackend returns this master as the tracker.Backend its HTTP and
// UDP trackers call, for tests (trackertest.TestBackend) and for
// front-ends a caller runs itself.
func (m *Master) TrackerBackend() tracker.Backend { return trackerBackend{m} }
