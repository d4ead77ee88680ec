package peer

import "github.com/prometheus/client_golang/prometheus"

var (
	descNATReachable = prometheus.NewDesc("fileshare_peer_reachable", "1 if a master could dial this peer back at its listen port, 0 if not (behind a NAT or firewall), -1 until one has tried.", nil, nil)
	descNATPaths     = prometheus.NewDesc("fileshare_peer_piece_connections_total", "Piece connections this peer opened to holders, by the path they took (direct, reversal, punch, relay).", []string{"path"}, nil)
)

// natCollector reports reachability and connection paths at scrape time.
type natCollector struct{ p *Peer }

func (c *natCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descNATReachable
	ch <- descNATPaths
}

func (c *natCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.p
	v := -1.0
	if r, known := p.Reachable(); known {
		v = 0
		if r {
			v = 1
		}
	}
	ch <- prometheus.MustNewConstMetric(descNATReachable, prometheus.GaugeValue, v)
	for i, path := range []string{PathDirect, PathReversal, PathPunch, PathRelay} {
		ch <- prometheus.MustNewConstMetric(descNATPaths, prometheus.CounterValue, float64(p.nat.pathCount[i].Load()), path)
	}
}
