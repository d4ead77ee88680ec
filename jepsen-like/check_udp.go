package jepsenlike

import (
	"fmt"
	"strings"
)

// checkTrackerOnce judges the UDP duplicates: every started or stopped
// announce the proxies sent twice must have had one effect. A second
// started must not count the peer twice: each master's final swarm
// counts (complete + incomplete) must equal the peers it lists, plus the
// watcher; a second stopped, or a second started arriving after the
// first was acknowledged, must not change the final lists, which
// tracker-set checks (set). Unknown when no started or stopped was
// duplicated: then nothing was tested.
func checkTrackerOnce(history []Op, windows []Window, set TrackerResult) CheckerResult {
	var started, stopped int
	for _, w := range windows {
		if w.UDP != nil {
			started += w.UDP.DupStarted
			stopped += w.UDP.DupStopped
		}
	}
	var miscounted []string
	for _, op := range history {
		if op.Type == OpPeers && op.Outcome != OK && strings.Contains(op.Error, "of the swarm's") {
			miscounted = append(miscounted, fmt.Sprintf("%s torrent %d: %s", op.Master, op.Key, op.Error))
		}
	}
	switch {
	case len(miscounted) > 0:
		return CheckerResult{Invalid, fmt.Sprintf("%d final peer lists do not match their swarm counts, as if a peer counted twice: %s", len(miscounted), strings.Join(miscounted, "; "))}
	case set.Verdict == Invalid:
		return CheckerResult{Invalid, fmt.Sprintf("%d started and %d stopped announces were duplicated in flight, and tracker-set found lost or resurrected entries", started, stopped)}
	case started+stopped == 0:
		return CheckerResult{Unknown, "no started or stopped announce was duplicated in flight (no udp-dup fault, or no UDP announce during it)"}
	}
	return CheckerResult{set.Verdict, fmt.Sprintf("%d started and %d stopped announces were duplicated in flight; each had one effect: every master's swarm counts match the peers it lists, and tracker-set found nothing lost or resurrected", started, stopped)}
}
