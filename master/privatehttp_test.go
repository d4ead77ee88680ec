package master_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/master"
	"fileshare/master/mastertest"
	"fileshare/transport"
)

// adminHTTP returns an HTTPS client for a TLS test cluster that presents
// cert (nil: none) and trusts the cluster CA.
func adminHTTP(t *testing.T, c *mastertest.T, cert *tls.Certificate) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(c.TLSDir(), "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13,
		// Masters are named by the CA, not by host: check the chain only.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			opts := x509.VerifyOptions{Roots: pool, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
}

func call(t *testing.T, hc *http.Client, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s %s: status %d, body not a JSON object: %q", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode, v
}

// The tracker admin API on the --http port takes an admin certificate
// over HTTPS, and refuses a peer's certificate, no certificate, and plain
// HTTP; the port still serves its plain HTTP pages.
func TestPrivateAdminAPINeedsAnAdminCertificate(t *testing.T) {
	c := mastertest.New(t, 3, mastertest.Options{TLS: true, Config: func(cfg *master.Config) { cfg.HTTP = "127.0.0.1:0" }})
	f := c.Follower(c.Leader())
	addr := c.Master(f).HTTPAddr()
	admin, err := tls.LoadX509KeyPair(filepath.Join(c.TLSDir(), "admin.pem"), filepath.Join(c.TLSDir(), "admin-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	peerCert, err := transport.SelfSigned(key)
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + addr + "/v1/tracker/mode"
	for _, tc := range []struct {
		name string
		hc   *http.Client
		url  string
	}{
		{"no certificate", adminHTTP(t, c, nil), url},
		{"a peer's certificate", adminHTTP(t, c, &peerCert), url},
		{"plain HTTP", &http.Client{Timeout: 15 * time.Second}, "http://" + addr + "/v1/tracker/mode"},
	} {
		code, v := call(t, tc.hc, "PUT", tc.url, `{"mode":"allowlist"}`)
		if msg, _ := v["error"].(string); code != http.StatusForbidden || !strings.Contains(msg, "certificate") {
			t.Errorf("%s: status %d, %v; want 403 saying which certificate is needed", tc.name, code, v)
		}
	}
	list, err := c.Client().TrackerList(t.Context(), client.ReadLinearizable)
	if err != nil || list.Mode != "open" {
		t.Fatalf("after refused calls the mode is %q (%v), want open", list.Mode, err)
	}
	hc := adminHTTP(t, c, &admin)
	code, v := call(t, hc, "PUT", url, `{"mode":"allowlist"}`)
	if code != http.StatusOK || v["mode"] != "allowlist" {
		t.Fatalf("admin: status %d, %v; want 200 and mode allowlist", code, v)
	}
	if code, v := call(t, hc, "PUT", url, `{"mode":"allowlist","x":1}`); code != http.StatusBadRequest {
		t.Errorf("unknown field: status %d, %v; want 400", code, v)
	}
	// The plain pages still answer, over HTTP and HTTPS.
	for _, u := range []string{"http://" + addr + "/v1/healthz", "https://" + addr + "/v1/healthz"} {
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(b, []byte("ok")) {
			t.Errorf("GET %s: %d %q", u, resp.StatusCode, b)
		}
	}
}
