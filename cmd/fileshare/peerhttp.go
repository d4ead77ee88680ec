package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"fileshare/internal/httplimit"
	"fileshare/peer"
)

// servePeerHTTP serves p's status port (/metrics, /healthz) on addr until
// the returned stop is called; stop waits up to a second for requests in
// flight, then closes their connections. The port is bounded like a
// master's (httplimit.DefaultLimits): idle connections are closed and
// open connections are capped in all and per client.
func servePeerHTTP(addr string, p *peer.Peer, logger *slog.Logger) (stop func(), err error) {
	raw, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http %s: cannot listen: %w; choose another address or stop the process using it", addr, err)
	}
	return serveLimitedHTTP(raw, p.StatusHandler(), httplimit.DefaultLimits(), logger), nil
}

// serveLimitedHTTP serves h on raw within limits; see servePeerHTTP.
func serveLimitedHTTP(raw net.Listener, h http.Handler, limits httplimit.Limits, logger *slog.Logger) (stop func()) {
	ln := httplimit.NewListener(raw, limits)
	srv := httplimit.NewServer(h, limits)
	done := make(chan struct{})
	// Owned by stop, which waits for it.
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("peer http server stopped", "err", err)
		}
	}()
	logger.Info("status port", "http", raw.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			_ = srv.Close()
		}
		<-done
	}
}
