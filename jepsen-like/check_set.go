package jepsenlike

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// SetFullResult is the set-full checker's report. An element is one
// holding: (file key, peer ID).
type SetFullResult struct {
	Verdict     Verdict `json:"verdict"`
	Explanation string  `json:"explanation"`
	// Elements is how many holdings the history mentions.
	Elements int `json:"elements"`
	// Acknowledged counts holdings whose registration was acknowledged and
	// that no unregistration could have followed: they must be present at
	// the end.
	Acknowledged int `json:"acknowledged"`
	// Lost are acknowledged holdings missing from the final reads.
	Lost []Element `json:"lost"`
	// NeverSeen are the lost holdings that no read ever showed (a subset
	// of Lost).
	NeverSeen []Element `json:"never_seen"`
	// Removed counts holdings whose unregistration was acknowledged and
	// that no registration could have followed: they must be absent.
	Removed int `json:"removed"`
	// Resurrected are removed holdings present in the final reads.
	Resurrected []Element `json:"resurrected"`
	// Phantoms are holdings in a read that nobody ever tried to register.
	Phantoms []Element `json:"phantoms"`
	// StaleReads counts reads that began after an acknowledged write yet
	// did not reflect it (a sign of stale reads; judged by the
	// linearizability checker).
	StaleReads int `json:"stale_reads"`
	// UnreadFiles lists files whose final read did not succeed.
	UnreadFiles []int `json:"unread_files,omitempty"`
	// VisibleAfter summarises, over acknowledged holdings, the time from
	// the registration's acknowledgement until every later read showed it
	// (0 when the first read after the acknowledgement already did).
	VisibleAfter LatencySummary `json:"visible_after"`
}

// Element is one holding: a peer holding a file.
type Element struct {
	Key  int    `json:"key"`
	Peer string `json:"peer"`
}

// LatencySummary is a distribution of durations in milliseconds.
type LatencySummary struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func summarize(ds []time.Duration) LatencySummary {
	if len(ds) == 0 {
		return LatencySummary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return float64(s[max(i, 0)]) / float64(time.Millisecond)
	}
	return LatencySummary{N: len(s), P50: q(0.5), P99: q(0.99), Max: float64(s[len(s)-1]) / float64(time.Millisecond)}
}

// CheckSetFull checks what survived: every holding whose registration was
// acknowledged, and which no unregistration could have undone, must be in
// the final reads (lost = 0); every holding whose unregistration was
// acknowledged, and which no registration could have redone, must be
// absent (resurrected = 0). "Could have" follows real time: an
// unregistration could follow a registration unless it returned before the
// registration was invoked; an info op could take effect at any time after
// its invocation. The final reads are the ops with Final set; a file
// without an ok final read makes its holdings undecidable.
func CheckSetFull(ops []Op) SetFullResult {
	ops = byInvoke(ops)
	end := endOfHistory(ops)
	final := map[int]map[string]bool{}
	for _, op := range ops {
		if op.Final && op.Type == OpLookup && op.Outcome == OK {
			set := map[string]bool{}
			for _, p := range op.Holders {
				set[p] = true
			}
			final[op.Key] = set
		}
	}
	type history struct {
		adds, removes []Op // ok or info
		reads         []Op // ok lookups, not final
		seen          bool
	}
	elems := map[Element]*history{}
	get := func(e Element) *history {
		h := elems[e]
		if h == nil {
			h = &history{}
			elems[e] = h
		}
		return h
	}
	keys := map[int]bool{}
	var lookups []Op
	for _, op := range ops {
		if op.Type == OpJoin {
			continue
		}
		keys[op.Key] = true
		switch {
		case op.Outcome == Fail:
		case op.Type == OpRegister:
			h := get(Element{op.Key, op.Peer})
			h.adds = append(h.adds, op)
		case op.Type == OpUnregister:
			h := get(Element{op.Key, op.Peer})
			h.removes = append(h.removes, op)
		case op.Type == OpLookup && op.Outcome == OK:
			lookups = append(lookups, op)
			for _, p := range op.Holders {
				h := get(Element{op.Key, p})
				if !op.Final {
					h.seen = true
				}
			}
		}
	}
	lookupsByKey := map[int][]Op{}
	for _, op := range lookups {
		if !op.Final {
			lookupsByKey[op.Key] = append(lookupsByKey[op.Key], op)
		}
	}
	ret := func(op Op) int64 {
		if op.Outcome == Info {
			return end
		}
		return op.Complete
	}
	lastOK := func(list []Op) (Op, bool) {
		var best Op
		found := false
		for _, op := range list {
			if op.Outcome == OK && (!found || op.Invoke > best.Invoke) {
				best, found = op, true
			}
		}
		return best, found
	}
	// mayFollow reports whether some op in list could take effect after
	// op: it had not returned when op was invoked.
	mayFollow := func(list []Op, op Op) bool {
		for _, o := range list {
			if ret(o) > op.Invoke {
				return true
			}
		}
		return false
	}
	contains := func(read Op, p string) bool {
		_, found := slices.BinarySearch(read.Holders, p)
		return found
	}

	res := SetFullResult{Elements: len(elems), Lost: []Element{}, NeverSeen: []Element{}, Resurrected: []Element{}, Phantoms: []Element{}}
	var visible []time.Duration
	sorted := sortedElements(elems)
	undecided := map[int]bool{}
	for _, e := range sorted {
		h := elems[e]
		fin, haveFinal := final[e.Key]
		if !haveFinal {
			undecided[e.Key] = true
		}
		present := fin[e.Peer]
		if len(h.adds) == 0 {
			if h.seen || present {
				res.Phantoms = append(res.Phantoms, e)
			}
			continue
		}
		if add, ok := lastOK(h.adds); ok && !mayFollow(h.removes, add) {
			res.Acknowledged++
			// Reads that began after the acknowledgement must show it.
			var stableFrom int64 = -1
			for _, r := range lookupsByKey[e.Key] {
				if r.Invoke <= add.Complete {
					continue
				}
				if contains(r, e.Peer) {
					if stableFrom < 0 {
						stableFrom = r.Invoke
					}
				} else {
					res.StaleReads++
					stableFrom = -1
				}
			}
			if stableFrom >= 0 {
				visible = append(visible, time.Duration(max(0, stableFrom-add.Complete)))
			}
			if haveFinal && !present {
				res.Lost = append(res.Lost, e)
				if !h.seen {
					res.NeverSeen = append(res.NeverSeen, e)
				}
			}
		}
		if rm, ok := lastOK(h.removes); ok && !mayFollow(h.adds, rm) {
			res.Removed++
			for _, r := range lookupsByKey[e.Key] {
				if r.Invoke > rm.Complete && contains(r, e.Peer) {
					res.StaleReads++
				}
			}
			if haveFinal && present {
				res.Resurrected = append(res.Resurrected, e)
			}
		}
	}
	for k := range keys {
		if _, ok := final[k]; !ok {
			undecided[k] = true
		}
	}
	for k := range undecided {
		res.UnreadFiles = append(res.UnreadFiles, k)
	}
	slices.Sort(res.UnreadFiles)
	res.VisibleAfter = summarize(visible)

	bad := len(res.Lost) + len(res.Resurrected) + len(res.Phantoms)
	switch {
	case bad > 0:
		res.Verdict = Invalid
		res.Explanation = fmt.Sprintf("%d acknowledged registrations were lost (%d of them never seen by any read), %d acknowledged unregistrations came back, %d holdings appeared that nobody registered", len(res.Lost), len(res.NeverSeen), len(res.Resurrected), len(res.Phantoms))
	case len(res.UnreadFiles) > 0:
		res.Verdict = Unknown
		res.Explanation = fmt.Sprintf("the final read of %d files did not succeed, so what survived there is unknown (files %v); nothing was found lost elsewhere", len(res.UnreadFiles), res.UnreadFiles)
	case res.Acknowledged+res.Removed == 0:
		res.Verdict = Unknown
		res.Explanation = "no registration or unregistration was acknowledged with a certain outcome, so there was nothing to check; was the cluster available at all?"
	default:
		res.Verdict = Valid
		res.Explanation = fmt.Sprintf("all %d acknowledged registrations are present at the end and none of %d acknowledged unregistrations came back", res.Acknowledged, res.Removed)
	}
	return res
}
