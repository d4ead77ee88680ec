package jepsenlike

import (
	"fmt"
	"slices"
	"strings"
)

// TrackerResult is the tracker checkers' report. An element is one swarm
// entry: (torrent key, peer_id).
type TrackerResult struct {
	// Verdict and Explanation are the tracker-set checker's: nothing
	// acknowledged lost, no acknowledged stop undone, no phantom.
	Verdict     Verdict `json:"verdict"`
	Explanation string  `json:"explanation"`
	// Swarms is how many swarms the history mentions.
	Swarms int `json:"swarms"`
	// Elements is how many swarm entries the history mentions.
	Elements int `json:"elements"`
	// Acknowledged counts entries whose last membership event that could
	// matter was an acknowledged started or completed that no stop could
	// have followed: every master must list them at the end.
	Acknowledged int `json:"acknowledged"`
	// Lost are acknowledged entries missing from some master's final list.
	Lost []TrackerMiss `json:"lost"`
	// Removed counts entries whose acknowledged stop no announce could
	// have followed: no master may list them at the end.
	Removed int `json:"removed"`
	// Resurrected are removed entries some master lists at the end.
	Resurrected []TrackerMiss `json:"resurrected"`
	// Phantoms are peer_ids some list showed that nobody announced.
	Phantoms []Element `json:"phantoms"`
	// Unread lists the (master, swarm) final reads that did not succeed.
	Unread []string `json:"unread,omitempty"`
	// Agreement is the tracker-agree checker: every master lists the same
	// peers in every swarm.
	Agreement TrackerAgreement `json:"agreement"`
}

// TrackerMiss is an entry and the masters whose final list contradicts
// what the history requires of it.
type TrackerMiss struct {
	Element
	Masters []string `json:"masters"`
}

// TrackerAgreement compares the masters' final peer lists.
type TrackerAgreement struct {
	Verdict     Verdict `json:"verdict"`
	Explanation string  `json:"explanation"`
	// Differences are the swarms whose lists differ between masters.
	Differences []SwarmDifference `json:"differences"`
}

// SwarmDifference is one swarm the masters list differently: each
// master's peers that not every master lists.
type SwarmDifference struct {
	Key   int                 `json:"key"`
	Extra map[string][]string `json:"extra"`
}

// CheckTracker checks the tracker workload's history (other ops are
// ignored) against masters' final peer lists (the OpPeers ops).
//
// Membership events: started and completed insert the peer (or update
// it); stopped removes it; a re-announce inserts it when the answering
// master does not list it (its index may be stale) and otherwise changes
// nothing, so it is a possible insert but never an acknowledgement. An
// entry is required present when its last ok started or completed had no
// stop that could follow it (one that had not returned when it was
// invoked; an info op may take effect at any time after its invocation);
// it is required absent when its last ok stop had no insert that could
// follow it. The peer lifetime outlasts the run, so no entry may expire.
// Every master must list every required entry (lost = 0) and none that is
// required absent (resurrected = 0); every peer_id a list shows must have
// been announced (phantoms = 0); and every master must list the same
// peers per swarm. The watcher of the final reads is left out.
func CheckTracker(ops []Op, masters []string) TrackerResult {
	ops = byInvoke(ops)
	end := endOfHistory(ops)
	type history struct{ adds, removes []Op }
	elems := map[Element]*history{}
	final := map[int]map[string]map[string]bool{} // key → master → peers
	swarms := map[int]bool{}
	announced := map[string]bool{watcherID: true}
	var lists []Op
	for _, op := range ops {
		if !op.Type.IsTracker() {
			continue
		}
		swarms[op.Key] = true
		if op.Type == OpPeers {
			if op.Outcome == OK {
				if final[op.Key] == nil {
					final[op.Key] = map[string]map[string]bool{}
				}
				set := map[string]bool{}
				for _, p := range op.Holders {
					set[p] = true
				}
				final[op.Key][op.Master] = set
			}
			lists = append(lists, op)
			continue
		}
		if op.Outcome == OK {
			lists = append(lists, op)
		}
		if op.Final || op.Peer == watcherID || op.Outcome == Fail {
			continue
		}
		announced[op.Peer] = true
		e := Element{op.Key, op.Peer}
		h := elems[e]
		if h == nil {
			h = &history{}
			elems[e] = h
		}
		if op.Type == OpStopped {
			h.removes = append(h.removes, op)
		} else {
			h.adds = append(h.adds, op)
		}
	}
	ret := func(op Op) int64 {
		if op.Outcome == Info {
			return end
		}
		return op.Complete
	}
	mayFollow := func(list []Op, op Op) bool {
		return slices.ContainsFunc(list, func(o Op) bool { return ret(o) > op.Invoke })
	}
	lastOK := func(list []Op, counts func(Op) bool) (Op, bool) {
		var best Op
		found := false
		for _, op := range list {
			if op.Outcome == OK && counts(op) && (!found || op.Invoke > best.Invoke) {
				best, found = op, true
			}
		}
		return best, found
	}
	isAck := func(op Op) bool { return op.Type == OpStarted || op.Type == OpCompleted }

	res := TrackerResult{Swarms: len(swarms), Elements: len(elems), Lost: []TrackerMiss{}, Resurrected: []TrackerMiss{}, Phantoms: []Element{}}
	unread := map[int]bool{}
	for k := range swarms {
		for _, m := range masters {
			if _, ok := final[k][m]; !ok {
				unread[k] = true
				res.Unread = append(res.Unread, fmt.Sprintf("%s torrent %d", m, k))
			}
		}
	}
	slices.Sort(res.Unread)
	for _, e := range sortedElements(elems) {
		h := elems[e]
		listing := func(present bool) []string {
			var out []string
			for _, m := range masters {
				if set, ok := final[e.Key][m]; ok && set[e.Peer] == present {
					out = append(out, m)
				}
			}
			return out
		}
		if add, ok := lastOK(h.adds, isAck); ok && !mayFollow(h.removes, add) {
			res.Acknowledged++
			if missing := listing(false); len(missing) > 0 {
				res.Lost = append(res.Lost, TrackerMiss{e, missing})
			}
		}
		if rm, ok := lastOK(h.removes, func(Op) bool { return true }); ok && !mayFollow(h.adds, rm) {
			res.Removed++
			if present := listing(true); len(present) > 0 {
				res.Resurrected = append(res.Resurrected, TrackerMiss{e, present})
			}
		}
	}
	phantoms := map[Element]bool{}
	for _, op := range lists {
		for _, p := range op.Holders {
			if !announced[p] {
				phantoms[Element{op.Key, p}] = true
			}
		}
	}
	res.Phantoms = sortedElements(phantoms)

	bad := len(res.Lost) + len(res.Resurrected) + len(res.Phantoms)
	switch {
	case bad > 0:
		res.Verdict = Invalid
		res.Explanation = fmt.Sprintf("%d acknowledged swarm entries are missing from some master's final peer list (%s), %d acknowledged stops came back (%s), %d peers were listed that nobody announced",
			len(res.Lost), missSample(res.Lost), len(res.Resurrected), missSample(res.Resurrected), len(res.Phantoms))
	case len(res.Unread) > 0:
		res.Verdict = Unknown
		res.Explanation = fmt.Sprintf("%d final peer-list reads did not succeed (%s), so what survived there is unknown; nothing was found lost elsewhere", len(res.Unread), strings.Join(first(res.Unread, 5), ", "))
	case res.Acknowledged+res.Removed == 0:
		res.Verdict = Unknown
		res.Explanation = "no started, completed or stopped was acknowledged with a certain outcome, so there was nothing to check; did any master's tracker answer?"
	default:
		res.Verdict = Valid
		res.Explanation = fmt.Sprintf("all %d acknowledged swarm entries are in every master's final peer list, none of %d acknowledged stops came back, and no list showed a peer nobody announced", res.Acknowledged, res.Removed)
	}
	res.Agreement = checkTrackerAgreement(final, swarms, unread, masters)
	return res
}

// checkTrackerAgreement compares the final lists of the swarms every
// master answered for.
func checkTrackerAgreement(final map[int]map[string]map[string]bool, swarms, unread map[int]bool, masters []string) TrackerAgreement {
	res := TrackerAgreement{Differences: []SwarmDifference{}}
	keys := make([]int, 0, len(swarms))
	for k := range swarms {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	compared := 0
	for _, k := range keys {
		if unread[k] {
			continue
		}
		compared++
		diff := SwarmDifference{Key: k, Extra: map[string][]string{}}
		for _, m := range masters {
			for p := range final[k][m] {
				if !slices.ContainsFunc(masters, func(o string) bool { return !final[k][o][p] }) {
					continue
				}
				diff.Extra[m] = append(diff.Extra[m], p)
			}
			slices.Sort(diff.Extra[m])
		}
		if len(diff.Extra) > 0 {
			res.Differences = append(res.Differences, diff)
		}
	}
	switch {
	case len(res.Differences) > 0:
		var parts []string
		for _, d := range first(res.Differences, 3) {
			var who []string
			for _, m := range masters {
				if n := len(d.Extra[m]); n > 0 {
					who = append(who, fmt.Sprintf("%s lists %d peers not all others do", m, n))
				}
			}
			parts = append(parts, fmt.Sprintf("torrent %d: %s", d.Key, strings.Join(who, ", ")))
		}
		res.Verdict = Invalid
		res.Explanation = fmt.Sprintf("the masters' final peer lists differ in %d swarms after the cluster healed and went quiet: %s", len(res.Differences), strings.Join(parts, "; "))
	case compared < len(keys):
		res.Verdict = Unknown
		res.Explanation = fmt.Sprintf("%d of %d swarms could not be read from every master; the %d read agree", len(keys)-compared, len(keys), compared)
	case compared == 0:
		res.Verdict = Unknown
		res.Explanation = "no swarm to compare: the tracker workload recorded nothing"
	default:
		res.Verdict = Valid
		res.Explanation = fmt.Sprintf("all %d masters list the same peers in all %d swarms", len(masters), compared)
	}
	return res
}

func sortedElements[V any](m map[Element]V) []Element {
	out := make([]Element, 0, len(m))
	for e := range m {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Element) int {
		if a.Key != b.Key {
			return a.Key - b.Key
		}
		return strings.Compare(a.Peer, b.Peer)
	})
	return out
}

func missSample(ms []TrackerMiss) string {
	if len(ms) == 0 {
		return "none"
	}
	var parts []string
	for _, m := range first(ms, 3) {
		parts = append(parts, fmt.Sprintf("torrent %d peer %s on %s", m.Key, m.Peer, strings.Join(m.Masters, ",")))
	}
	if len(ms) > 3 {
		parts = append(parts, fmt.Sprintf("%d more in results.json", len(ms)-3))
	}
	return strings.Join(parts, "; ")
}

func first[T any](s []T, n int) []T { return s[:min(n, len(s))] }
