package master

import (
	"context"

	"fileshare/tracker"
)

// doubleCreditBackend is the tracker backend under FaultDoubleCredit: a
// deliberately broken build for the fault harness's accounting checker.
// Before each re-announce that reports counters it passes on a copy
// reporting zeros, which the books take for a client restart (a new
// baseline), so the real report credits the whole counters again.
type doubleCreditBackend struct{ trackerBackend }

func (b doubleCreditBackend) Announce(ctx context.Context, req *tracker.AnnounceRequest) (*tracker.AnnounceReply, error) {
	if req.Event == tracker.EventNone && (req.Uploaded > 0 || req.Downloaded > 0) {
		zero := *req
		zero.Uploaded, zero.Downloaded = 0, 0
		_, _ = b.trackerBackend.Announce(ctx, &zero)
	}
	return b.trackerBackend.Announce(ctx, req)
}

// frontBackend is the backend the tracker front-ends call: this master's,
// broken on purpose under FaultDoubleCredit.
func (m *Master) frontBackend() tracker.Backend {
	if m.cfg.Fault == FaultDoubleCredit {
		return doubleCreditBackend{trackerBackend{m}}
	}
	return trackerBackend{m}
}
