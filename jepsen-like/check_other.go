package jepsenlike

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// DigestResult compares the masters' final index digests.
type DigestResult struct {
	Verdict     Verdict           `json:"verdict"`
	Explanation string            `json:"explanation"`
	Digests     map[string]string `json:"digests"`
	Applied     map[string]uint64 `json:"applied_index"`
}

// checkDigests judges the last statuses seen: every master must answer
// and all digests must be equal.
func checkDigests(ids []string, digests map[string]string, applied map[string]uint64, errs map[string]string) DigestResult {
	res := DigestResult{Digests: digests, Applied: applied}
	distinct := map[string][]string{}
	for _, id := range ids {
		if d, ok := digests[id]; ok {
			distinct[d] = append(distinct[d], id)
		}
	}
	switch {
	case len(distinct) > 1:
		var parts []string
		for d, who := range distinct {
			parts = append(parts, fmt.Sprintf("%s: %s", strings.Join(who, ","), short(d)))
		}
		slices.Sort(parts)
		res.Verdict = Invalid
		res.Explanation = "the masters' indexes differ after the cluster healed and went quiet: " + strings.Join(parts, "; ")
	case len(digests) < len(ids):
		var missing []string
		for _, id := range ids {
			if _, ok := digests[id]; !ok {
				missing = append(missing, fmt.Sprintf("%s (%s)", id, errs[id]))
			}
		}
		res.Verdict = Unknown
		res.Explanation = "some masters did not report a digest: " + strings.Join(missing, ", ")
	default:
		res.Verdict = Valid
		res.Explanation = fmt.Sprintf("all %d masters hold the same index (digest %s)", len(ids), short(digests[ids[0]]))
	}
	return res
}

func short(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// Fraction counts ok operations out of all that completed.
type Fraction struct {
	Ops      int     `json:"ops"`
	OK       int     `json:"ok"`
	Fraction float64 `json:"fraction"`
}

func (f *Fraction) add(ok bool) {
	f.Ops++
	if ok {
		f.OK++
	}
	f.Fraction = float64(f.OK) / float64(f.Ops)
}

// Recovery is how long the cluster took to accept writes again around
// one fault: from its start, and from its heal, to the completion of the
// first ok write invoked after that moment (-1: none before the end).
type Recovery struct {
	Seq              int    `json:"seq"`
	Kind             Kind   `json:"kind"`
	AfterStartMillis int64  `json:"after_start_ms"`
	AfterHealMillis  int64  `json:"after_heal_ms"`
	Targets          string `json:"targets,omitempty"`
}

// AvailabilityResult reports how much of the workload succeeded inside
// and outside fault windows. It is informational: unavailability during
// faults is allowed (the cluster chooses consistency); only a run where
// nothing at all succeeded is Unknown, because then nothing was tested.
type AvailabilityResult struct {
	Verdict       Verdict    `json:"verdict"`
	Explanation   string     `json:"explanation"`
	InFaults      Fraction   `json:"in_faults"`
	OutsideFaults Fraction   `json:"outside_faults"`
	WritesIn      Fraction   `json:"writes_in_faults"`
	WritesOutside Fraction   `json:"writes_outside_faults"`
	ReadsIn       Fraction   `json:"reads_in_faults"`
	ReadsOutside  Fraction   `json:"reads_outside_faults"`
	Recovery      []Recovery `json:"recovery"`
	// MaxRecoveryMillis is the longest after-heal recovery.
	MaxRecoveryMillis int64 `json:"max_recovery_ms"`
}

// checkAvailability splits ops (the final reads excluded) by whether they
// were invoked inside a fault window.
func checkAvailability(ops []Op, windows []Window) AvailabilityResult {
	var res AvailabilityResult
	inFault := func(t int64) bool {
		for _, w := range windows {
			if t >= int64(w.StartOffset) && t <= int64(w.EndOffset) {
				return true
			}
		}
		return false
	}
	var writes []Op
	for _, op := range byInvoke(ops) {
		if op.Final {
			continue
		}
		ok := op.Outcome == OK
		if inFault(op.Invoke) {
			res.InFaults.add(ok)
			if op.Type.IsWrite() {
				res.WritesIn.add(ok)
			} else {
				res.ReadsIn.add(ok)
			}
		} else {
			res.OutsideFaults.add(ok)
			if op.Type.IsWrite() {
				res.WritesOutside.add(ok)
			} else {
				res.ReadsOutside.add(ok)
			}
		}
		if op.Type.IsWrite() && ok {
			writes = append(writes, op)
		}
	}
	firstOKAfter := func(t int64) int64 {
		best := int64(-1)
		for _, op := range writes {
			if op.Invoke >= t && (best < 0 || op.Complete < best) {
				best = op.Complete
			}
		}
		if best < 0 {
			return -1
		}
		return time.Duration(best - t).Milliseconds()
	}
	for _, w := range windows {
		r := Recovery{Seq: w.Seq, Kind: w.Kind, Targets: strings.Join(w.Targets, ","),
			AfterStartMillis: firstOKAfter(int64(w.StartOffset)), AfterHealMillis: firstOKAfter(int64(w.EndOffset))}
		res.MaxRecoveryMillis = max(res.MaxRecoveryMillis, r.AfterHealMillis)
		res.Recovery = append(res.Recovery, r)
	}
	total := res.InFaults.OK + res.OutsideFaults.OK
	if total == 0 {
		res.Verdict = Unknown
		res.Explanation = "no operation succeeded at all, so the run tested nothing; check the masters' logs"
		return res
	}
	res.Verdict = Valid
	res.Explanation = fmt.Sprintf("%.1f%% of operations succeeded outside fault windows and %.1f%% inside them; after a fault healed, the first write succeeded within %d ms at worst",
		100*res.OutsideFaults.Fraction, 100*res.InFaults.Fraction, res.MaxRecoveryMillis)
	return res
}

// LogsResult reports what the masters' logs and exits reveal.
type LogsResult struct {
	Verdict     Verdict      `json:"verdict"`
	Explanation string       `json:"explanation"`
	Findings    []LogFinding `json:"findings"`
	// Crashes are masters that exited without being told to.
	Crashes []Crash `json:"crashes"`
	// SlowStops are masters that were still running a grace period after
	// SIGTERM and had to be killed. Informational: a slow graceful
	// shutdown loses nothing, but operators will notice it.
	SlowStops []Crash `json:"slow_stops,omitempty"`
	// SelfStops are masters that stopped on their own for a reason the
	// fault explains and their log states: "refused to start: damaged
	// data dir" (exit status 4 after a corrupt fault) or "stopped: disk
	// full". They are not crashes.
	SelfStops []Crash `json:"self_stops,omitempty"`
}

// LogFinding is one suspicious log line.
type LogFinding struct {
	File string `json:"file"`
	Line int    `json:"line"`
	Text string `json:"text"`
}

// logPatterns are the lines that mean a master broke: a Go panic, a
// fatal runtime error, a race the race detector saw.
func logPatterns() []string { return []string{"panic:", "fatal error:", "DATA RACE"} }

// checkLogs scans every master log for logPatterns and judges the exits:
// crashes make it invalid; slow stops and self-stops are reported only.
func checkLogs(paths []string, crashes, slowStops, selfStops []Crash) LogsResult {
	res := LogsResult{Findings: []LogFinding{}, Crashes: crashes, SlowStops: slowStops, SelfStops: selfStops}
	if res.Crashes == nil {
		res.Crashes = []Crash{}
	}
	var unreadable []string
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			unreadable = append(unreadable, fmt.Sprintf("%s: %v", p, err))
			continue
		}
		patterns := logPatterns()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for line := 1; sc.Scan(); line++ {
			text := sc.Text()
			for _, pat := range patterns {
				if strings.Contains(text, pat) {
					if len(text) > 300 {
						text = text[:300] + "…"
					}
					res.Findings = append(res.Findings, LogFinding{File: filepath.Base(p), Line: line, Text: text})
					break
				}
			}
		}
		f.Close()
	}
	switch {
	case len(res.Findings) > 0 || len(res.Crashes) > 0:
		res.Verdict = Invalid
		res.Explanation = fmt.Sprintf("%d log lines show a panic, fatal error or data race, and %d masters exited without being told to", len(res.Findings), len(res.Crashes))
	case len(unreadable) > 0:
		res.Verdict = Unknown
		res.Explanation = "could not read every log: " + strings.Join(unreadable, "; ")
	default:
		res.Verdict = Valid
		res.Explanation = fmt.Sprintf("no panic, fatal error or data race in %d master logs, and no master exited on its own", len(paths))
	}
	if len(res.SlowStops) > 0 {
		res.Explanation += fmt.Sprintf("; %d times a master ignored SIGTERM for its whole grace period and was killed", len(res.SlowStops))
	}
	if len(res.SelfStops) > 0 {
		var damaged, full int
		for _, s := range res.SelfStops {
			if strings.HasPrefix(s.Error, reasonDamaged) {
				damaged++
			} else {
				full++
			}
		}
		if damaged > 0 {
			res.Explanation += fmt.Sprintf("; %d times a master %s after the harness damaged it (not a crash)", damaged, reasonDamaged)
		}
		if full > 0 {
			res.Explanation += fmt.Sprintf("; %d times a master %s, as its log says (not a crash)", full, reasonDiskFull)
		}
	}
	return res
}

// checkHealDigests judges the digest comparisons made after each heal
// (Window.HealDigests): invalid if the serving masters still disagreed
// 15 s after a heal with no write in flight.
func checkHealDigests(windows []Window) CheckerResult {
	checked := 0
	var bad []string
	for _, w := range windows {
		if w.HealDigests == nil {
			continue
		}
		checked++
		if w.HealDigests.Verdict == Invalid {
			bad = append(bad, fmt.Sprintf("after fault %d (%s): %s", w.Seq, w.Kind, w.HealDigests.Explanation))
		}
	}
	switch {
	case len(bad) > 0:
		return CheckerResult{Invalid, fmt.Sprintf("%d of %d heals left serving masters with different indexes: %s", len(bad), checked, strings.Join(bad, "; "))}
	case checked == 0:
		return CheckerResult{Valid, "no heal was followed by a comparison (no fault healed before the end)"}
	}
	return CheckerResult{Valid, fmt.Sprintf("after each of %d heals, every master that served held the same index once the writes in flight had settled", checked)}
}
