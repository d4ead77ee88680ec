package peer

// This file owns the peer's optional HTTP status port ('fileshare peer
// --http'): /metrics for Prometheus and /healthz. It only reads state
// that other files own: Peer.served (the sync goroutine's), Peer.joined,
// Peer.reach and Peer.conns (the piece server's).

import (
	"encoding/json"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"fileshare/internal/buildinfo"
)

// StatusHandler returns the handler of the peer's HTTP status port:
//
//   - GET /metrics: Prometheus text format, on a registry of this peer's
//     own (fileshare_peer_… series, build info, Go and process collectors),
//     computed at scrape time.
//   - GET /healthz: 200 and {"status":"ok",…} while the peer runs, 503
//     once it has stopped (Close, Leave, or a permanent refusal by the
//     index; "error" then says why).
//
// Each call builds a new registry; call it once per server. The handler
// is safe for concurrent use and serves only reads.
func (p *Peer) StatusHandler() http.Handler {
	reg := prometheus.NewRegistry()
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fileshare_build_info", Help: "Always 1; the labels name the build of this peer."}, []string{"version", "go_version"})
	info.WithLabelValues(buildinfo.Version(), runtime.Version()).Set(1)
	reg.MustRegister(&peerCollector{p: p}, &natCollector{p: p}, info, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, MaxRequestsInFlight: 4, Timeout: 10 * time.Second}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		body := map[string]any{"status": "ok", "peer": p.ID(), "joined": p.joined.Load()}
		code := http.StatusOK
		select {
		case <-p.done:
			code = http.StatusServiceUnavailable
			body["status"] = "stopped"
			if err := p.Err(); err != nil {
				body["error"] = err.Error()
			}
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	})
	return mux
}

var (
	descPeerJoined = prometheus.NewDesc("fileshare_peer_joined", "1 once the index has accepted this peer (and until it expires it), else 0.", nil, nil)
	descPeerFiles  = prometheus.NewDesc("fileshare_peer_shared_files", "Files this peer serves: scanned and acknowledged by the index.", nil, nil)
	descPeerBytes  = prometheus.NewDesc("fileshare_peer_shared_bytes", "Total size of the files this peer serves.", nil, nil)
	descUploads    = prometheus.NewDesc("fileshare_peer_uploads_active", "Piece connections this peer is serving now.", nil, nil)
	descUploadsMax = prometheus.NewDesc("fileshare_peer_uploads_max", "Most piece connections served at once (Config.MaxUploads).", nil, nil)
	descReachable  = prometheus.NewDesc("fileshare_peer_masters_reachable", "1 while the masters answer this peer's calls, 0 during an outage.", nil, nil)
	descOutage     = prometheus.NewDesc("fileshare_peer_masters_unreachable_seconds", "How long the masters have not answered (0 while they do).", nil, nil)

	descPiecesServed = prometheus.NewDesc("fileshare_peer_served_pieces_total", "Pieces this peer sent to other peers.", nil, nil)
	descBytesServed  = prometheus.NewDesc("fileshare_peer_served_bytes_total", "Piece bytes this peer sent to other peers.", nil, nil)
	descRefused      = prometheus.NewDesc("fileshare_peer_served_refusals_total", "Piece requests answered with an error (file not here, or changed on disk), by reason.", []string{"reason"}, nil)
	descDownloads    = prometheus.NewDesc("fileshare_peer_downloads_total", "Downloads this peer finished, by result (ok or failed).", []string{"result"}, nil)
	descDownloaded   = prometheus.NewDesc("fileshare_peer_downloaded_bytes_total", "Piece bytes this peer fetched and verified, in downloads that finished.", nil, nil)
	descReclaimed    = prometheus.NewDesc("fileshare_peer_upload_slots_reclaimed_total", "Upload slots taken from a connection that made no progress, or from a source holding more than its share, for a newcomer.", nil, nil)
)

// peerCounters are what a peer counts as it serves and downloads; every
// field is updated atomically.
type peerCounters struct {
	piecesServed, bytesServed   atomic.Uint64
	refusedGone, refusedChanged atomic.Uint64
	downloadsOK, downloadsFail  atomic.Uint64
	bytesDownloaded             atomic.Uint64
	uploadsReclaimed            atomic.Uint64
}

// peerCollector reads the peer's state at scrape time.
type peerCollector struct{ p *Peer }

func (c *peerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPeerJoined, descPeerFiles, descPeerBytes, descUploads, descUploadsMax, descReachable, descOutage,
		descPiecesServed, descBytesServed, descRefused, descDownloads, descDownloaded, descReclaimed} {
		ch <- d
	}
}

func (c *peerCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.p
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	joined := 0.0
	if p.joined.Load() {
		joined = 1
	}
	gauge(descPeerJoined, joined)
	var files, bytes float64
	if m := p.served.Load(); m != nil {
		for _, f := range *m {
			files++
			bytes += float64(f.Size)
		}
	}
	gauge(descPeerFiles, files)
	gauge(descPeerBytes, bytes)
	gauge(descUploads, float64(p.conns.Len()))
	gauge(descUploadsMax, float64(p.cfg.MaxUploads))
	p.reach.mu.Lock()
	down := p.reach.down
	p.reach.mu.Unlock()
	if down.IsZero() {
		gauge(descReachable, 1)
		gauge(descOutage, 0)
	} else {
		gauge(descReachable, 0)
		gauge(descOutage, time.Since(down).Seconds())
	}
	counter := func(d *prometheus.Desc, v *atomic.Uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v.Load()), labels...)
	}
	n := &p.counters
	counter(descPiecesServed, &n.piecesServed)
	counter(descBytesServed, &n.bytesServed)
	counter(descRefused, &n.refusedGone, "gone")
	counter(descRefused, &n.refusedChanged, "changed")
	counter(descDownloads, &n.downloadsOK, "ok")
	counter(descDownloads, &n.downloadsFail, "failed")
	counter(descDownloaded, &n.bytesDownloaded)
	counter(descReclaimed, &n.uploadsReclaimed)
}
