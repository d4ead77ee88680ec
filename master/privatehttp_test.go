package master_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fileshare/client"
	"fileshare/internal/poll"
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

// A site drives the private tracker through the admin API: members, books,
// and the ledger feed, whose cursor hands out each credited delta once.
func TestPrivateAdminAPIMembersBooksAndLedger(t *testing.T) {
	c := mastertest.New(t, 3, mastertest.Options{TLS: true, Config: func(cfg *master.Config) {
		cfg.HTTP = "127.0.0.1:0"
		cfg.Tracker.HTTP = "127.0.0.1:0"
	}})
	admin, err := tls.LoadX509KeyPair(filepath.Join(c.TLSDir(), "admin.pem"), filepath.Join(c.TLSDir(), "admin-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	hc := adminHTTP(t, c, &admin)
	f := c.Follower(c.Leader())
	base := "https://" + c.Master(f).HTTPAddr() + "/v1/tracker"
	ih := randomHash()
	if _, err := c.Client().TrackerPolicy(t.Context(), client.TrackerPolicyRequest{Allow: []string{fmt.Sprintf("%x", ih[:])}}); err != nil {
		t.Fatal(err)
	}
	if code, v := call(t, hc, "PUT", base+"/mode", `{"mode":"private"}`); code != 200 || v["mode"] != "private" {
		t.Fatalf("set private mode: %d %v", code, v)
	}
	code, v := call(t, hc, "POST", base+"/users", `{"name":"alice"}`)
	pk, _ := v["passkey"].(string)
	if code != 200 || len(pk) != 32 {
		t.Fatalf("add alice: %d %v, want a 32-digit passkey", code, v)
	}
	if code, v := call(t, hc, "POST", base+"/users", `{"name":"alice"}`); code != http.StatusConflict {
		t.Errorf("add alice twice: %d %v, want 409", code, v)
	}
	if code, v := call(t, hc, "GET", base+"/users/bob", ""); code != http.StatusNotFound {
		t.Errorf("show an unknown member: %d %v, want 404", code, v)
	}
	if code, v := call(t, hc, "GET", base+"/ledger?after=x.y", ""); code != http.StatusBadRequest {
		t.Errorf("a malformed cursor: %d %v, want 400", code, v)
	}

	// alice's client announces 0 then 1000 up, 500 down.
	ann := func(up, down int, event string) {
		q := fmt.Sprintf("info_hash=%s&peer_id=%s&port=7000&uploaded=%d&downloaded=%d&left=1&compact=1%s", escape(ih[:]), escape([]byte("-qB4630-abcdefghijkl")), up, down, event)
		body := get(t, "", "http://"+c.Master(f).TrackerHTTPAddr()+"/"+pk+"/announce?"+q)
		if strings.Contains(string(body), "failure") {
			t.Fatalf("announce: %s", body)
		}
	}
	ann(0, 0, "&event=started")
	ann(1000, 500, "")
	var entries []any
	var next string
	poll.Until(t, 10*time.Second, "the ledger to hold alice's credit", func() bool {
		code, v := call(t, hc, "GET", base+"/ledger?after=0", "")
		entries, _ = v["entries"].([]any)
		if nc, ok := v["next"].(map[string]any); ok {
			next = fmt.Sprintf("%v.%v", nc["index"], nc["pos"])
		}
		return code == 200 && len(entries) > 0
	})
	e, _ := entries[0].(map[string]any)
	if len(entries) != 1 || e["member"] != "alice" || e["uploaded"] != 1000.0 || e["downloaded"] != 500.0 {
		t.Fatalf("ledger = %v, want one delta of alice: 1000 up, 500 down", entries)
	}
	if code, v := call(t, hc, "GET", base+"/ledger?after="+next, ""); code != 200 || len(v["entries"].([]any)) != 0 {
		t.Errorf("ledger after its next cursor %s: %d %v, want no entry (each delta once)", next, code, v)
	}
	code, v = call(t, hc, "GET", base+"/users/alice", "")
	if code != 200 || v["uploaded"] != 1000.0 || v["downloaded"] != 500.0 || len(v["torrents"].([]any)) != 1 {
		t.Errorf("alice's books: %d %v, want 1000 up, 500 down on one torrent", code, v)
	}
}
