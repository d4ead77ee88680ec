package jepsenlike

import (
	"fmt"
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
	type session struct {
		member      string
		open        bool
		first, last [2]uint64
	}
	out := map[string][2]uint64{}
	sessions := map[string]*session{}
	closeSession := func(s *session) {
		if s.open {
			e := out[s.member]
			e[0] += s.last[0] - s.first[0]
			e[1] += s.last[1] - s.first[1]
			out[s.member] = e
		}
		s.open = false
	}
	for _, op := range history {
		if op.Member == "" || op.Outcome != OK {
			continue
		}
		s := sessions[op.Peer]
		if s == nil {
			s = &session{member: op.Member}
			sessions[op.Peer] = s
			out[op.Member] = out[op.Member]
		}
		c := [2]uint64{op.Uploaded, op.Downloaded}
		switch {
		case !s.open:
			s.open, s.first, s.last = true, c, c
		case c[0] < s.last[0] || c[1] < s.last[1]:
			closeSession(s)
			s.open, s.first, s.last = true, c, c
		default:
			s.last = c
		}
		if op.Type == OpStopped {
			closeSession(s)
		}
	}
	for _, s := range sessions {
		closeSession(s)
	}
	return out
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
	var wrong, unread []string
	seen := map[string]bool{}
	for _, b := range books {
		seen[b.Member] = true
		want := res.Expected[b.Member]
		switch {
		case b.Error != "":
			unread = append(unread, fmt.Sprintf("%s on %s: %s", b.Member, b.Master, b.Error))
		case b.RawUploaded != want[0] || b.RawDownloaded != want[1] || b.Uploaded != want[0] || b.Downloaded != want[1]:
			wrong = append(wrong, fmt.Sprintf("%s on %s: credited up %d down %d (raw %d, %d), want %d, %d (%s)",
				b.Member, b.Master, b.Uploaded, b.Downloaded, b.RawUploaded, b.RawDownloaded, want[0], want[1], direction(b, want)))
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

func direction(b MemberBooks, want [2]uint64) string {
	if b.RawUploaded > want[0] || b.RawDownloaded > want[1] {
		return "more than reported: credited twice"
	}
	return "less than reported: lost"
}
