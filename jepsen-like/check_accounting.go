package jepsenlike

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// AccountingFile is where a run with the accounting workload writes each
// member's expected credit and every master's books.
const AccountingFile = "accounting.json"

// AccountingResult is the accounting checker's verdict and its evidence.
type AccountingResult struct {
	Verdict     Verdict `json:"verdict"`
	Explanation string  `json:"explanation"`
	// Expected is each member's expected credited [upload, download].
	Expected map[string][2]uint64 `json:"expected"`
	// Books are the totals every master reported last.
	Books []MemberBooks `json:"books"`
}

// ExpectedCredits returns what each member must have been credited,
// [uploaded, downloaded], from a history of accounting announces: for
// every peer, per session, the counters of its last acknowledged announce
// minus those of its first. A session ends with an acknowledged stop, or
// when an acknowledged announce reports lower counters than the last one
// (the client restarted). Announces with unknown or failed outcomes add
// nothing: the workload's discipline (accounting_workload.go) makes the
// first and last acknowledged counters of a session what the tracker must
// have seen first and last.
func ExpectedCredits(history []Op) map[string][2]uint64 {
	out := map[string][2]uint64{}
	eachSession(history, func(member string, _ int, _ string, d [2]uint64) {
		e := out[member]
		out[member] = [2]uint64{e[0] + d[0], e[1] + d[1]}
	})
	return out
}

// swarmKey names one member's credit in one swarm (torrent key).
type swarmKey struct {
	member string
	key    int
}

// expectedBySwarm is ExpectedCredits per member and swarm, with the
// peers that announced there.
func expectedBySwarm(history []Op) (map[swarmKey][2]uint64, map[swarmKey][]string) {
	out, peers := map[swarmKey][2]uint64{}, map[swarmKey][]string{}
	eachSession(history, func(member string, key int, peer string, d [2]uint64) {
		k := swarmKey{member, key}
		e := out[k]
		out[k] = [2]uint64{e[0] + d[0], e[1] + d[1]}
		if !slices.Contains(peers[k], peer) {
			peers[k] = append(peers[k], peer)
		}
	})
	return out, peers
}

// eachSession calls fn with the credit of every session of every peer in
// history (see ExpectedCredits); a member with no acknowledged announce
// gets no call.
func eachSession(history []Op, fn func(member string, key int, peer string, credit [2]uint64)) {
	type session struct {
		member      string
		key         int
		open        bool
		first, last [2]uint64
	}
	sessions := map[string]*session{}
	var order []string // peers in order of first appearance, so fn's calls are deterministic
	closeSession := func(peer string, s *session) {
		if s.open {
			fn(s.member, s.key, peer, [2]uint64{s.last[0] - s.first[0], s.last[1] - s.first[1]})
		}
		s.open = false
	}
	for _, op := range history {
		if op.Member == "" || op.Outcome != OK {
			continue
		}
		s := sessions[op.Peer]
		if s == nil {
			s = &session{member: op.Member, key: op.Key}
			sessions[op.Peer] = s
			order = append(order, op.Peer)
		}
		c := [2]uint64{op.Uploaded, op.Downloaded}
		switch {
		case !s.open:
			s.open, s.first, s.last = true, c, c
		case c[0] < s.last[0] || c[1] < s.last[1]:
			closeSession(op.Peer, s)
			s.open, s.first, s.last = true, c, c
		default:
			s.last = c
		}
		if op.Type == OpStopped {
			closeSession(op.Peer, s)
		}
	}
	for _, p := range order {
		closeSession(p, sessions[p])
	}
}

// CheckAccounting judges the books every master reported against the
// credits the history implies: every master must report, for every
// member, exactly the expected upload and download (raw, and credited:
// the workload sets no factors), and nothing clamped as suspicious.
func CheckAccounting(history []Op, books []MemberBooks) AccountingResult {
	res := AccountingResult{Expected: ExpectedCredits(history), Books: books}
	if len(books) == 0 {
		res.Verdict, res.Explanation = Unknown, "no master's books could be read"
		return res
	}
	bySwarm, peers := expectedBySwarm(history)
	var wrong, unread []string
	seen := map[string]bool{}
	for _, b := range books {
		seen[b.Member] = true
		want := res.Expected[b.Member]
		switch {
		case b.Error != "":
			unread = append(unread, fmt.Sprintf("%s on %s: %s", b.Member, b.Master, b.Error))
		case b.RawUploaded != want[0] || b.RawDownloaded != want[1] || b.Uploaded != want[0] || b.Downloaded != want[1]:
			wrong = append(wrong, fmt.Sprintf("%s on %s: credited up %d down %d (raw %d, %d), want %d, %d (%s)%s",
				b.Member, b.Master, b.Uploaded, b.Downloaded, b.RawUploaded, b.RawDownloaded, want[0], want[1], direction(b, want), swarmDiffs(b, bySwarm, peers)))
		case b.Suspicious != 0:
			wrong = append(wrong, fmt.Sprintf("%s on %s: %d credits clamped as suspicious, want none", b.Member, b.Master, b.Suspicious))
		}
	}
	for m, want := range res.Expected {
		if !seen[m] && want != [2]uint64{} {
			wrong = append(wrong, fmt.Sprintf("%s: expected credit %d, %d but no master reported its books", m, want[0], want[1]))
		}
	}
	slices.Sort(wrong)
	switch {
	case len(wrong) > 0:
		res.Verdict = Invalid
		res.Explanation = fmt.Sprintf("%d books wrong: %s", len(wrong), strings.Join(wrong, "; "))
	case len(unread) > 0:
		res.Verdict = Unknown
		res.Explanation = fmt.Sprintf("%d books could not be read: %s", len(unread), strings.Join(unread, "; "))
	default:
		var total [2]uint64
		for _, e := range res.Expected {
			total[0] += e[0]
			total[1] += e[1]
		}
		res.Verdict = Valid
		res.Explanation = fmt.Sprintf("every master credits each of %d members exactly its peers' counter growth (%d bytes up, %d down in all), nothing clamped", len(res.Expected), total[0], total[1])
	}
	return res
}

// swarmDiffs names the swarms where b differs from what the history
// implies, with the difference and the member's peers there, so a wrong
// total can be traced to the announces of a few peers; empty if b has no
// per-swarm rows.
func swarmDiffs(b MemberBooks, want map[swarmKey][2]uint64, peers map[swarmKey][]string) string {
	if b.Swarms == nil {
		return ""
	}
	keys := map[int]bool{}
	for k := range b.Swarms {
		keys[k] = true
	}
	for k := range want {
		if k.member == b.Member {
			keys[k.key] = true
		}
	}
	var out []string
	for _, key := range slices.Sorted(maps.Keys(keys)) {
		k := swarmKey{b.Member, key}
		got, exp := b.Swarms[key], want[k]
		if got != exp {
			out = append(out, fmt.Sprintf("swarm %d %+d up %+d down (peers %s)", key, int64(got[0]-exp[0]), int64(got[1]-exp[1]), strings.Join(peers[k], " ")))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return ": " + strings.Join(out, ", ")
}

func direction(b MemberBooks, want [2]uint64) string {
	if b.RawUploaded > want[0] || b.RawDownloaded > want[1] {
		return "more than reported: credited twice"
	}
	return "less than reported: lost"
}
