package tracker

import (
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"
)

// dropReason is why a datagram got no reply.
type dropReason uint8

const (
	dropBadConnID dropReason = iota // wrong or expired connection ID
	dropRateLimited
	dropBanned
	dropQueueFull
	dropNotBEP15 // too short, or a connect without the protocol ID
	dropBadSource
	numDropReasons
)

var dropText = [numDropReasons]string{
	dropBadConnID:   "wrong or expired connection id (the client connects again; after a master restart or on a master without the cluster's connection-id secret this is expected for a few minutes)",
	dropRateLimited: "source over its packet rate (UDPConfig.SourceRate, SourceBurst)",
	dropBanned:      "source banned for sending bad connection ids (UDPConfig.BanAfterBadIDs, BanFor)",
	dropQueueFull:   "membership-change queue full (UDPConfig.Queue, Workers): the backend is slow to commit",
	dropNotBEP15:    "not a BEP 15 request",
	dropBadSource:   "source address without a port",
}

// dropLog logs refusals of datagrams, at most one line per reason per
// interval, each line counting what it stands for, so an operator sees
// them in the log and not only in Stats.Dropped, and a flood cannot flood
// the log.
type dropLog struct {
	logger   *slog.Logger
	interval int64 // ns
	reasons  [numDropReasons]struct {
		n    atomic.Uint64
		last atomic.Int64 // ns of the last line
	}
}

func newDropLog(logger *slog.Logger, interval time.Duration) *dropLog {
	return &dropLog{logger: logger, interval: int64(interval)}
}

// drop counts one dropped datagram from `from` at now (ns) and logs a line
// if none was logged for this reason in the last interval.
func (d *dropLog) drop(r dropReason, from netip.AddrPort, now int64) {
	e := &d.reasons[r]
	e.n.Add(1)
	last := e.last.Load()
	if now-last < d.interval || !e.last.CompareAndSwap(last, now) {
		return
	}
	n := e.n.Swap(0)
	since := "start"
	if last != 0 {
		since = time.Duration(now - last).Round(time.Second).String()
	}
	d.logger.Warn("tracker: udp datagrams dropped", "reason", dropText[r], "count", n, "since", since, "last_from", from.String())
}
