package peer

// This file owns the relay path on the peer side: serving circuits when
// Config.Relay is set (package relay does the splicing), and using a
// relay as the last rung of the ladder (dialRelayed on the downloader,
// serveRelayed on the holder). Over the circuit the two peers run their
// own TLS 1.3 session — the holder as server, proving its key and
// requiring the downloader's — so the relay carries only ciphertext.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"fileshare/client"
	"fileshare/relay"
	"fileshare/transport"
)

// relayTimeout bounds joining a circuit and the end-to-end handshake.
const relayTimeout = 10 * time.Second

// startRelay serves circuits on the peer's listener if Config.Relay is
// set. The server runs in p.wg and its circuits close when the Mux does.
func (p *Peer) startRelay() {
	if !p.cfg.Relay || p.mux == nil {
		return
	}
	srv := relay.NewServer(relay.Limits{}, p.logger)
	srv.Tap = p.cfg.relayTap
	p.relaySrv = srv
	ln := p.mux.Listener(transport.StreamRelay)
	p.wg.Go(func() {
		srv.Serve(ln)
		srv.Close()
	})
}

// dialRelay dials the relay r and joins circuit tok in role.
func (p *Peer) dialRelay(ctx context.Context, r client.RelayInfo, role byte, tok [relay.TokenLen]byte) (net.Conn, error) {
	var cfg *tls.Config
	switch {
	case r.PeerID != "":
		cfg = p.tls.PeerClientConfig(expectKey(r.PeerID, r.Addr))
	case p.cfg.CA != nil:
		cfg = p.tls.MasterClientConfig()
	}
	var conn net.Conn
	var err error
	if p.mux != nil {
		conn, err = p.mux.DialStreamTLS(r.Addr, transport.StreamRelay, relayTimeout, cfg)
	} else {
		conn, err = transport.DialStreamTLS(r.Addr, transport.StreamRelay, relayTimeout, cfg)
	}
	if err != nil {
		return nil, err
	}
	if err := relay.Join(ctx, conn, relay.Request{Role: role, Token: tok}); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// dialRelayed asks the masters for relays and, through the first that
// works, opens an end-to-end TLS piece stream to holder id.
func (p *Peer) dialRelayed(ctx context.Context, id string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*relayTimeout)
	defer cancel()
	relays, err := p.client.Relays(ctx)
	if err != nil {
		return nil, err
	}
	if len(relays) == 0 {
		return nil, errors.New("no relay is available: no master has a relay budget and no reachable peer offers to relay")
	}
	var errs []error
	for _, r := range relays {
		if r.PeerID == p.id.PeerID || r.PeerID == id {
			continue
		}
		conn, err := p.relayTo(ctx, r, id)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, fmt.Errorf("relay %s: %w", r.Addr, err))
		if errors.Is(err, client.ErrNoChannel) {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func (p *Peer) relayTo(ctx context.Context, r client.RelayInfo, id string) (net.Conn, error) {
	var tok [relay.TokenLen]byte
	_, _ = rand.Read(tok[:])
	jctx, jcancel := context.WithTimeout(ctx, relayTimeout)
	defer jcancel()
	type joined struct {
		conn net.Conn
		err  error
	}
	ch := make(chan joined, 1)
	go func() {
		c, err := p.dialRelay(jctx, r, relay.RoleDialer, tok)
		ch <- joined{c, err}
	}()
	if _, err := p.client.Connect(ctx, p.id, id, client.RendezvousMessage{Kind: client.ConnRelay, Addr: r.Addr, Relay: r.PeerID, Token: tok[:]}); err != nil {
		jcancel()
		if j := <-ch; j.conn != nil {
			j.conn.Close()
		}
		return nil, err
	}
	j := <-ch
	if j.err != nil {
		return nil, j.err
	}
	tc := tls.Client(j.conn, p.tls.PeerClientConfig(expectKey(id, "the relayed holder")))
	_ = tc.SetDeadline(time.Now().Add(relayTimeout))
	if err := tc.Handshake(); err != nil {
		tc.Close()
		return nil, fmt.Errorf("TLS with the holder through the relay: %w", err)
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}

// serveRelayed joins the circuit a downloader opened on a relay, proves
// this peer's key and checks the downloader's over it, and serves pieces.
func (p *Peer) serveRelayed(m client.RendezvousMessage) error {
	if p.mux == nil {
		return errors.New("a download-only peer serves no pieces")
	}
	if len(m.Token) != relay.TokenLen {
		return fmt.Errorf("relay request with a %d-byte token", len(m.Token))
	}
	ctx, cancel := context.WithTimeout(p.ctx, relayTimeout)
	defer cancel()
	conn, err := p.dialRelay(ctx, client.RelayInfo{Addr: m.Addr, PeerID: m.Relay}, relay.RoleListener, [relay.TokenLen]byte(m.Token))
	if err != nil {
		return err
	}
	cfg := p.tls.ServerConfig()
	cfg.ClientAuth = tls.RequireAnyClientCert
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return transport.ErrWrongPeer
		}
		k, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
		if !ok {
			return transport.ErrWrongPeer
		}
		return expectKey(m.From, "the relayed downloader")(k)
	}
	tc := tls.Server(conn, cfg)
	_ = tc.SetDeadline(time.Now().Add(relayTimeout))
	if err := tc.Handshake(); err != nil {
		tc.Close()
		return fmt.Errorf("TLS with the downloader through the relay: %w", err)
	}
	_ = tc.SetDeadline(time.Time{})
	if !p.conns.Add(tc) {
		tc.Close()
		return ErrClosed
	}
	defer p.conns.Remove(tc)
	p.serveConn(tc, nil)
	return nil
}
