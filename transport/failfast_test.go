package transport

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"fileshare/internal/freeport"
)

// wrongAddrBudget is how long a call to a wrong address may take to fail.
// Each case below would otherwise wait for a timeout of a second or more.
const wrongAddrBudget = 900 * time.Millisecond

// startHTTP serves HTTP on a fresh port, configured as a master's --http
// server is, and returns its address.
func startHTTP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// startPlainServer runs the test RPC server on a plaintext Mux.
func startPlainServer(t *testing.T) string {
	t.Helper()
	_, addr := startServer(t)
	return addr
}

// A refused connection is ErrNoListener (and still ErrConnection, so a
// node that is restarting is retried), and it is known at once.
func TestARefusedDialIsNoListenerAtOnce(t *testing.T) {
	addr := freeport.Loopback(t)
	c := NewClient(ClientConfig{})
	defer c.Close()
	start := time.Now()
	err := c.Call(t.Context(), addr, "Echo", &echoReq{}, nil)
	if took := time.Since(start); took > wrongAddrBudget {
		t.Fatalf("a refused dial took %v, want under %v", took, wrongAddrBudget)
	}
	if !errors.Is(err, ErrNoListener) || !errors.Is(err, ErrConnection) || !Retryable(err) {
		t.Fatalf("got %v; want ErrNoListener and ErrConnection (retryable)", err)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Fatalf("error %q does not name %s", err, addr)
	}
}

// The first request's encoding holds a newline whatever its body (so an
// HTTP server reading a request line answers at once): see firstRequestID.
func TestTheFirstRequestEndsAnHTTPRequestLine(t *testing.T) {
	body := bytes.Repeat([]byte{'x'}, 1000)
	b, err := Marshal(&request{ID: firstRequestID + 1, Method: "Status", Timeout: int64(time.Second), Body: body})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.IndexByte(b, '\n') < 0 {
		t.Fatalf("no newline in the first request's encoding % x", b[:32])
	}
}

// An HTTP server (a master's --http port given as a cluster port) is
// recognised at once, plaintext or TLS, and the error says which port to
// use instead. It is not retryable: asking again cannot help.
func TestAnHTTPPortIsNotFileShareAtOnce(t *testing.T) {
	addr := startHTTP(t)
	p := newTestPKI(t)
	for name, c := range map[string]*Client{
		"plaintext": NewClient(ClientConfig{}),
		"tls": tlsClient(func(addr string, kind byte, timeout time.Duration) (net.Conn, error) {
			return DialStreamTLS(addr, kind, timeout, p.ca(t).MasterClientConfig())
		}),
	} {
		t.Run(name, func(t *testing.T) {
			defer c.Close()
			start := time.Now()
			err := c.Call(t.Context(), addr, "Echo", &echoReq{}, nil)
			if took := time.Since(start); took > wrongAddrBudget {
				t.Fatalf("an HTTP port took %v to fail, want under %v", took, wrongAddrBudget)
			}
			var nf *NotFileShareError
			if !errors.As(err, &nf) || !errors.Is(err, ErrNotFileShare) || nf.Answer != AnswerHTTP {
				t.Fatalf("got %v; want a NotFileShareError answering like HTTP", err)
			}
			if Retryable(err) || errors.Is(err, ErrTLSMismatch) {
				t.Fatalf("%v: retryable %v, TLS mismatch %v; want neither", err, Retryable(err), errors.Is(err, ErrTLSMismatch))
			}
			for _, want := range []string{addr, "answered like HTTP", "cluster port, not its HTTP port"} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

// A client and a port that disagree about TLS learn it from the first
// answer, and the error names the mismatch and what fixes it.
func TestATLSPlaintextMismatchIsNamed(t *testing.T) {
	p := newTestPKI(t)
	_, tlsAddr := startTLSServer(t, p.load(t, "m1"), nil)
	plainAddr := startPlainServer(t)
	for _, tc := range []struct {
		name, addr string
		client     *Client
		want       string
	}{
		{"plaintext client, TLS port", tlsAddr, NewClient(ClientConfig{}), "give the cluster CA"},
		{"TLS client, plaintext port", plainAddr, tlsClient(func(addr string, kind byte, timeout time.Duration) (net.Conn, error) {
			return DialStreamTLS(addr, kind, timeout, p.ca(t).MasterClientConfig())
		}), "runs without TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer tc.client.Close()
			start := time.Now()
			err := tc.client.Call(t.Context(), tc.addr, "Echo", &echoReq{}, nil)
			if took := time.Since(start); took > wrongAddrBudget {
				t.Fatalf("the mismatch took %v to show, want under %v", took, wrongAddrBudget)
			}
			if !errors.Is(err, ErrTLSMismatch) || !errors.Is(err, ErrNotFileShare) || Retryable(err) {
				t.Fatalf("got %v; want ErrTLSMismatch (and ErrNotFileShare), not retryable", err)
			}
			if !strings.Contains(err.Error(), tc.addr) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %s and %s", err, tc.addr, tc.want)
			}
		})
	}
}

// curl pointed at a plaintext cluster port gets an HTTP answer that says
// where the HTTP API is.
func TestHTTPToAClusterPortSaysWhereTheHTTPAPIIs(t *testing.T) {
	addr := startPlainServer(t)
	resp, err := http.Get("http://" + addr + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body.String(), "HTTP port") {
		t.Fatalf("got %d %q; want 400 naming the HTTP port", resp.StatusCode, body.String())
	}
}
