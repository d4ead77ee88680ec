package peer

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"fileshare/internal/poll"
)

func peerMetrics(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("peer /metrics does not parse: %v\n%s", err, b)
	}
	return fams
}

func gaugeOf(fams map[string]*dto.MetricFamily, name string) float64 {
	f := fams[name]
	if f == nil || len(f.Metric) == 0 {
		return -1
	}
	return f.Metric[0].GetGauge().GetValue()
}

func healthz(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("/healthz is not JSON: %v", err)
	}
	return resp.StatusCode, body
}

// The peer's status port reports what it shares and whether it is in the
// index, and /healthz turns 503 once the peer has stopped.
func TestPeerStatusPortReportsSharing(t *testing.T) {
	c := newTestCluster(t, nil)
	files := map[string][]byte{"a.bin": randomBytes(1, 3000), "b.bin": randomBytes(2, 5000)}
	p := startPeer(t, c, "alice", shareFolder(t, files), nil)
	srv := httptest.NewServer(p.StatusHandler())
	defer srv.Close()

	var fams map[string]*dto.MetricFamily
	poll.Until(t, 15*time.Second, "the peer to report both files shared", func() bool {
		fams = peerMetrics(t, srv.URL)
		return gaugeOf(fams, "fileshare_peer_shared_files") == 2
	})
	if got := gaugeOf(fams, "fileshare_peer_shared_bytes"); got != 8000 {
		t.Errorf("fileshare_peer_shared_bytes = %v, want 8000", got)
	}
	if got := gaugeOf(fams, "fileshare_peer_joined"); got != 1 {
		t.Errorf("fileshare_peer_joined = %v, want 1", got)
	}
	if got := gaugeOf(fams, "fileshare_peer_masters_reachable"); got != 1 {
		t.Errorf("fileshare_peer_masters_reachable = %v, want 1", got)
	}
	if got := gaugeOf(fams, "fileshare_peer_uploads_max"); got <= 0 {
		t.Errorf("fileshare_peer_uploads_max = %v, want the configured limit", got)
	}
	for _, name := range []string{"fileshare_peer_uploads_active", "fileshare_build_info", "go_goroutines"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("peer /metrics has no %s", name)
		}
	}
	if code, body := healthz(t, srv.URL); code != http.StatusOK || body["status"] != "ok" || body["joined"] != true {
		t.Errorf("/healthz of a running peer: %d %v", code, body)
	}
	p.Close()
	if code, body := healthz(t, srv.URL); code != http.StatusServiceUnavailable || body["status"] != "stopped" {
		t.Errorf("/healthz of a closed peer: %d %v, want 503 stopped", code, body)
	}
}

func counterOf(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			ok := false
			for _, l := range m.Label {
				ok = ok || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			}
			if !ok {
				continue next
			}
		}
		return m.GetCounter().GetValue()
	}
	return -1
}

// The status port counts what a peer serves and what it downloads: after
// one download of a file, the holder has served its bytes and the
// downloader has fetched them.
func TestPeerStatusPortCountsServedAndDownloadedBytes(t *testing.T) {
	c := newTestCluster(t, nil)
	data := randomBytes(41, 3*DefaultPieceSize+11)
	alice := startPeer(t, c, "alice", shareFolder(t, map[string][]byte{"f.bin": data}), nil)
	id := idOf(t, data)
	waitHolders(t, c.client(), id, 1)
	bob := startPeer(t, c, "bob", "", nil)
	aliceSrv := httptest.NewServer(alice.StatusHandler())
	defer aliceSrv.Close()
	bobSrv := httptest.NewServer(bob.StatusHandler())
	defer bobSrv.Close()

	if _, err := bob.Download(t.Context(), id, t.TempDir()+"/f.bin", DownloadOptions{}); err != nil {
		t.Fatal(err)
	}
	a, b := peerMetrics(t, aliceSrv.URL), peerMetrics(t, bobSrv.URL)
	if got := counterOf(a, "fileshare_peer_served_bytes_total"); got < float64(len(data)) {
		t.Errorf("holder served_bytes_total = %v, want at least the file's %d bytes", got, len(data))
	}
	if got := counterOf(a, "fileshare_peer_served_pieces_total"); got < 4 {
		t.Errorf("holder served_pieces_total = %v, want at least the file's 4 pieces", got)
	}
	if got := counterOf(b, "fileshare_peer_downloaded_bytes_total"); got != float64(len(data)) {
		t.Errorf("downloader downloaded_bytes_total = %v, want %d", got, len(data))
	}
	if got := counterOf(b, "fileshare_peer_downloads_total", "result", "ok"); got != 1 {
		t.Errorf("downloads_total{result=ok} = %v, want 1", got)
	}
	if got := counterOf(b, "fileshare_peer_downloads_total", "result", "failed"); got != 0 {
		t.Errorf("downloads_total{result=failed} = %v, want 0", got)
	}
}
