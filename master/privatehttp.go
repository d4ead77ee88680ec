package master

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"

	"fileshare/client"
	"fileshare/fsm"
	"fileshare/transport"
)

// The private tracker's admin API on the --http port, for a site's code:
// JSON over HTTPS with an admin certificate (mutual TLS, the same check
// the cluster port makes for administration: an admin or member master
// certificate signed by the cluster CA and not on the deny list).
//
//	PUT  /v1/tracker/mode                {"mode":"private"}
//	GET  /v1/tracker/users               every member with its totals
//	POST /v1/tracker/users               {"name":"alice"} → the member and its passkey
//	GET  /v1/tracker/users/{name}        the member's books, per torrent
//	POST /v1/tracker/users/{name}/rotate a new passkey
//	POST /v1/tracker/users/{name}/revoke
//	PUT  /v1/tracker/torrents/{infohash} {"upload_factor_pct":200,"download_factor_pct":0}
//	PUT  /v1/tracker/clients             {"allow":["-qB4"],"deny":["-lt0D1"]}
//	GET  /v1/tracker/ledger?after=CURSOR&limit=N
//
// The ledger feed returns credited deltas strictly after CURSOR in commit
// order with the cursor to pass next ("next"): a site that stores that
// cursor in the same transaction as the deltas imports each exactly once.
// A cursor older than what the ledger retains gets 410 Gone.
//
// The port serves plain HTTP (status, metrics, dashboard) and TLS on the
// same socket, told apart by the first byte (a TLS handshake starts with
// 0x16, an HTTP request with a letter). A master without TLS (insecure,
// loopback only) trusts every caller, as its cluster port does.
//
// Each admin request is carried out through a client of this master's own
// cluster port with this master's certificate, after the caller's admin
// certificate was checked here: so the requests take exactly the path the
// CLI's do (forwarding, request IDs, read levels).

const adminBodyLimit = 64 << 10

// mountPrivateAdmin registers the admin API on mux.
func (m *Master) mountPrivateAdmin(mux *http.ServeMux) {
	h := func(fn func(ctx context.Context, c *client.Client, r *http.Request) (any, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if err := m.requireHTTPAdmin(r); err != nil {
				writeAdminError(w, err)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, adminBodyLimit)
			c, err := client.New(client.Config{Masters: []string{m.Addr()}, TLS: m.cfg.TLS})
			if err != nil {
				writeAdminError(w, err)
				return
			}
			defer c.Close()
			v, err := fn(r.Context(), c, r)
			if err != nil {
				writeAdminError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, v)
		}
	}
	mux.HandleFunc("PUT /v1/tracker/mode", h(func(ctx context.Context, c *client.Client, r *http.Request) (any, error) {
		var body struct {
			Mode string `json:"mode"`
		}
		if err := decodeBody(r, &body); err != nil {
			return nil, err
		}
		if err := c.TrackerSetMode(ctx, body.Mode); err != nil {
			return nil, err
		}
		rep, err := c.TrackerList(ctx, client.ReadLinearizable)
		if err != nil {
			return nil, err
		}
		return map[string]any{"mode": rep.Mode}, nil
	}))
	mux.HandleFunc("GET /v1/tracker/users", h(func(ctx context.Context, c *client.Client, r *http.Request) (any, error) {
		rep, err := c.TrackerUsers(ctx, client.ReadLinearizable)
		if rep.Members == nil {
			rep.Members = []client.TrackerBooks{}
		}
		return rep, err
	}))
	mux.HandleFunc("POST /v1/tracker/users", h(func(ctx context.Context, c *client.Client, r *http.Request) (any, error) {
		var body struct {
			Name string `json:"name"`
		}
		if err := decodeBody(r, &body); err != nil {
			return nil, err
		}
		return c.TrackerUserAdd(ctx, body.Name)
	}))
	mux.HandleFunc("GET /v1/tracker/users/{name}", h(func(ctx context.Context, c *client.Client, r *http.Request) (any, error) {
		b, err := c.TrackerUserBooks(ctx, r.PathValue("name"), client.ReadLinearizable)
		if b.Torrents == nil {
			b.Torrents = []client.TrackerBookRow{}
		}
		return b, err
	}))
	mux.HandleFunc("POST /v1/tracker/users/{name}/rotate", h(func(ctx context.Context, c *client.Client, r *http.Request) (any, error) {
		return c.TrackerUserRotate(ctx, r.PathValue("name"))
	}))
	mux.HandleFunc("POST /v1/tracker/users/{name}/revoke", h(func(ctx context.Context, c *client.Client, r *http.Request) (any, error) {
		return c.TrackerUserRevoke(ctx, r.PathValue("name"))
	}))
	mux.HandleFunc("PUT /v1/tracker/torrents/{infohash}", h(func(ctx context.Context, c *client.Client, r *http.Request) (any, error) {
		body := struct {
			Up   *uint32 `json:"upload_factor_pct"`
			Down *uint32 `json:"download_factor_pct"`
		}{}
		if err := decodeBody(r, &body); err != nil {
			return nil, err
		}
		up, down := uint32(100), uint32(100)
		if body.Up != nil {
			up = *body.Up
		}
		if body.Down != nil {
			down = *body.Down
		}
		return c.TrackerTorrentSet(ctx, r.PathValue("infohash"), up, down)
	}))
	mux.HandleFunc("PUT /v1/tracker/clients", h(func(ctx context.Context, c *client.Client, r *http.Request) (any, error) {
		var body struct {
			Allow []string `json:"allow"`
			Deny  []string `json:"deny"`
		}
		if err := decodeBody(r, &body); err != nil {
			return nil, err
		}
		return c.TrackerClients(ctx, body.Allow, body.Deny)
	}))
	mux.HandleFunc("GET /v1/tracker/ledger", h(func(ctx context.Context, c *client.Client, r *http.Request) (any, error) {
		q := r.URL.Query()
		after, err := client.ParseLedgerCursor(q.Get("after"))
		if err != nil {
			return nil, err
		}
		limit := 0
		if s := q.Get("limit"); s != "" {
			if limit, err = strconv.Atoi(s); err != nil || limit < 0 {
				return nil, fmt.Errorf("%w: limit %.20q is not a count; give 1 to %d", fsm.ErrInvalid, s, client.MaxLedgerPage)
			}
		}
		rep, err := c.TrackerLedger(ctx, after, limit, client.ReadLinearizable)
		if rep.Entries == nil {
			rep.Entries = []client.LedgerEntry{}
		}
		return rep, err
	}))
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: the request body is not the JSON object this call takes: %v", fsm.ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: the request body has more than one JSON value", fsm.ErrInvalid)
	}
	return nil
}

// errNeedsTLS means an admin call arrived over plain HTTP on a master with
// TLS.
var errNeedsTLS = fmt.Errorf("%w: the tracker admin API needs HTTPS with an admin certificate signed by the cluster CA (curl --cacert ca.pem --cert admin.pem --key admin-key.pem https://...)", transport.ErrForbidden)

// requireHTTPAdmin checks that r came over TLS with a certificate that may
// administer the cluster.
func (m *Master) requireHTTPAdmin(r *http.Request) error {
	if m.cfg.TLS == nil || !m.cfg.TLS.HasCertificate() {
		return nil // plaintext master: loopback only, every caller trusted
	}
	sc, _ := r.Context().Value(sniffConnKey{}).(*sniffConn)
	st, ok := sc.tlsState()
	if !ok {
		return errNeedsTLS
	}
	c := m.cfg.TLS.Classify(st.PeerCertificates)
	vetted, err := m.gate.Vet(c)
	if err != nil {
		return fmt.Errorf("%w: %v", transport.ErrForbidden, err)
	}
	return transport.Require(transport.WithCaller(r.Context(), vetted), transport.RoleAdmin)
}

// writeAdminError answers err with the HTTP status its kind means and a
// JSON body {"error": text}.
func writeAdminError(w http.ResponseWriter, err error) {
	code := http.StatusServiceUnavailable
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, transport.ErrForbidden), errors.Is(err, transport.ErrRevoked):
		code = http.StatusForbidden
	case errors.Is(err, fsm.ErrUnknownMember):
		code = http.StatusNotFound
	case errors.Is(err, fsm.ErrMemberExists):
		code = http.StatusConflict
	case errors.Is(err, fsm.ErrLedgerGone):
		code = http.StatusGone
		err = fmt.Errorf("%w: resynchronize totals from GET /v1/tracker/users and continue with after=0", err)
	case errors.As(err, &mbe):
		code = http.StatusRequestEntityTooLarge
	case errors.Is(err, fsm.ErrInvalid):
		code = http.StatusBadRequest
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// Serving TLS and plain HTTP on one port.

type sniffConnKey struct{}

// sniffListener hands out connections that decide on their first read
// whether they are TLS (first byte 0x16, a handshake record) or plain
// HTTP. Nothing blocks in Accept: the first read happens in the HTTP
// server's goroutine for the connection, under its read deadline.
type sniffListener struct {
	net.Listener
	cfg *tls.Config
}

func (l sniffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, cfg: l.cfg}, nil
}

// sniffConn is a connection that is TLS or plain, found out on first use.
type sniffConn struct {
	net.Conn // the raw connection
	cfg      *tls.Config

	once  sync.Once
	err   error
	first []byte    // the sniffed byte of a plain connection, until read
	tls   *tls.Conn // set if the connection is TLS
}

func (c *sniffConn) sniff() {
	var b [1]byte
	if _, err := io.ReadFull(c.Conn, b[:]); err != nil {
		c.err = err
		return
	}
	if b[0] == 0x16 {
		c.tls = tls.Server(&prefixConn{Conn: c.Conn, first: b[:]}, c.cfg)
		return
	}
	c.first = b[:]
}

func (c *sniffConn) Read(p []byte) (int, error) {
	c.once.Do(c.sniff)
	switch {
	case c.err != nil:
		return 0, c.err
	case c.tls != nil:
		return c.tls.Read(p)
	case len(c.first) > 0 && len(p) > 0:
		p[0], c.first = c.first[0], nil
		return 1, nil
	}
	return c.Conn.Read(p)
}

func (c *sniffConn) Write(p []byte) (int, error) {
	c.once.Do(c.sniff)
	if c.tls != nil {
		return c.tls.Write(p)
	}
	return c.Conn.Write(p)
}

// tlsState returns the connection's TLS state once its handshake is done.
func (c *sniffConn) tlsState() (tls.ConnectionState, bool) {
	if c == nil {
		return tls.ConnectionState{}, false
	}
	c.once.Do(c.sniff)
	if c.tls == nil {
		return tls.ConnectionState{}, false
	}
	st := c.tls.ConnectionState()
	return st, st.HandshakeComplete
}

// prefixConn reads first before the rest of the connection.
type prefixConn struct {
	net.Conn
	first []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
