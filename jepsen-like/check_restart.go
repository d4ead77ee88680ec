package jepsenlike

import (
	"fmt"
	"slices"
	"strings"
)

// checkRestartRecall judges what a single tracker process kept across
// each kill: for every kill window and swarm, the peers the tracker had
// acknowledged in the swarm when it was killed (last acknowledged event
// before the kill a started, re-announce or completed, and nothing in
// flight whose outcome is unknown) must still be counted in the swarm
// size of the first acknowledged membership change (started, completed,
// stopped) after the restart.
// A tracker that keeps swarms only in memory restarts with empty
// swarms, and this says by how much. Valid when no kill happened.
func checkRestartRecall(history []Op, windows []Window) CheckerResult {
	var lost []string
	kills, checked, missing := 0, 0, 0
	for _, w := range windows {
		if w.Kind != KindKill {
			continue
		}
		kills++
		start, end := int64(w.StartOffset), int64(w.EndOffset)
		// Per swarm: each peer's last op invoked before the kill.
		last := map[int]map[string]Op{}
		for _, op := range history {
			if op.Final || op.Type == OpPeers || op.Invoke >= start {
				continue
			}
			if last[op.Key] == nil {
				last[op.Key] = map[string]Op{}
			}
			if prev, ok := last[op.Key][op.Peer]; !ok || op.Invoke > prev.Invoke {
				last[op.Key][op.Peer] = op
			}
		}
		keys := make([]int, 0, len(last))
		for k := range last {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			active := map[string]bool{}
			for peer, op := range last[k] {
				if op.Outcome == OK && op.Type != OpStopped && op.Complete < start {
					active[peer] = true
				}
			}
			want := len(active)
			// The first acknowledged membership change in this swarm
			// invoked after the restart: a tracker answers it after it
			// took effect (FileShare: after commit, so after the
			// restarted master replayed its log), unlike a re-announce,
			// which a replicated tracker may answer from a replica
			// still catching up.
			var first *Op
			for i := range history {
				op := &history[i]
				if op.Key == k && !op.Final && (op.Type == OpStarted || op.Type == OpCompleted || op.Type == OpStopped) &&
					op.Outcome == OK && op.Invoke >= end && (first == nil || op.Complete < first.Complete) {
					first = op
				}
			}
			if first == nil || want == 0 {
				continue
			}
			checked++
			got := first.Swarm
			switch {
			case first.Type == OpStopped && active[first.Peer]:
				want-- // it just left
			case first.Type != OpStopped && !active[first.Peer]:
				got-- // it just joined, and counts itself
			}
			if got < want {
				missing += want - got
				lost = append(lost, fmt.Sprintf("after kill %d, torrent %d: %d acknowledged peers, the first membership change after the restart counted %d", w.Seq, k, want, max(got, 0)))
			}
		}
	}
	switch {
	case kills == 0:
		return CheckerResult{Valid, "no kill happened"}
	case len(lost) > 0:
		shown := lost
		if len(shown) > 5 {
			shown = append(slices.Clone(shown[:5]), fmt.Sprintf("and %d more", len(lost)-5))
		}
		return CheckerResult{Invalid, fmt.Sprintf("%d acknowledged swarm entries were gone after %d kills (%d swarms compared): %s", missing, kills, checked, strings.Join(shown, "; "))}
	}
	return CheckerResult{Valid, fmt.Sprintf("after each of %d kills, every swarm still counted every peer it had acknowledged (%d swarms compared)", kills, checked)}
}
