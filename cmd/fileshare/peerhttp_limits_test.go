package main

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"fileshare/internal/httplimit"
)

// A peer's --http port closes idle connections and caps open ones per
// client: 300 connections left open cannot pile up on it.
func TestPeerHTTPClosesIdleAndCapsConnections(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	limits := httplimit.Limits{MaxConns: 8, MaxConnsPerSource: 4, ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}
	stop := serveLimitedHTTP(raw, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), limits, slog.New(slog.DiscardHandler))
	t.Cleanup(stop)
	addr := raw.Addr().String()
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	closed := func(c net.Conn, wait time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	var held []net.Conn
	for range 4 {
		c := dial()
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("request within the share: %v", err)
		}
		resp.Body.Close()
		held = append(held, c)
	}
	if c := dial(); !closed(c, 5*time.Second) {
		t.Fatal("a fifth connection from one client was kept; want its share of 4 to hold")
	}
	for i, c := range held {
		if !closed(c, 10*time.Second) {
			t.Fatalf("idle connection %d still open after 10 s; want it closed after 300 ms", i)
		}
	}
}
