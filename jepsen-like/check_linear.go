package jepsenlike

import (
	"fmt"
	"slices"
	"time"

	"github.com/anishathalye/porcupine"
)

// Verdict is a checker's conclusion, in Jepsen's terms.
type Verdict string

const (
	// Valid means the checker found no violation.
	Valid Verdict = "valid"
	// Invalid means the checker found a violation of a guarantee.
	Invalid Verdict = "invalid"
	// Unknown means the checker could not decide (it timed out, or the
	// data it needs is missing). It is never a pass.
	Unknown Verdict = "unknown"
)

// worst combines verdicts: any invalid makes the whole invalid; otherwise
// any unknown makes it unknown.
func worst(vs ...Verdict) Verdict {
	out := Valid
	for _, v := range vs {
		switch {
		case v == Invalid:
			return Invalid
		case v != Valid:
			out = Unknown
		}
	}
	return out
}

// LinearizabilityResult is the linearizability checker's report.
type LinearizabilityResult struct {
	Verdict     Verdict `json:"verdict"`
	Explanation string  `json:"explanation"`
	// Ops is how many operations were checked (joins, failed ops and
	// unanswered reads are left out: they constrain nothing).
	Ops int `json:"ops"`
	// InfoWrites is how many of them are writes with unknown outcome.
	InfoWrites int `json:"info_writes"`
	// Files is how many independent files (partitions) were checked.
	Files int `json:"files"`
	// IllegalFiles lists the keys of files whose history has no
	// linearization.
	IllegalFiles []int `json:"illegal_files,omitempty"`
	// UndecidedFiles lists the keys the checker did not finish in time.
	UndecidedFiles []int `json:"undecided_files,omitempty"`
	// Visualization is the file name of porcupine's HTML view, if written.
	Visualization string `json:"visualization,omitempty"`
	ElapsedMillis int64  `json:"elapsed_ms"`
}

// CheckLinearizable checks that every file's holder set behaved like a
// single copy updated atomically (see the model in model.go), with
// porcupine. timeout bounds the search (0 means no bound); a search that
// runs out of time gives Unknown, never Valid. If vizPath is not empty it
// writes porcupine's interactive HTML view there, with annotations (for
// example the fault windows) added.
func CheckLinearizable(ops []Op, timeout time.Duration, vizPath string, annotations []porcupine.Annotation) LinearizabilityResult {
	start := time.Now()
	pops, kept := toPorcupine(ops)
	res := LinearizabilityResult{Ops: len(pops)}
	keyCount := map[int]int{}
	for i, op := range kept {
		keyCount[op.Key]++
		if pops[i].Output.(modelOutput).Unknown {
			res.InfoWrites++
		}
	}
	keys := make([]int, 0, len(keyCount))
	for k := range keyCount {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the model's Partition orders partitions the same way
	res.Files = len(keys)

	model := holdersModel()
	result, info := porcupine.CheckOperationsVerbose(model, pops, timeout)
	// Per partition: a linearization as long as the partition means that
	// file is linearizable; a shorter best attempt means it is not, or (on
	// timeout) that the search did not finish.
	partials := info.PartialLinearizations()
	for i, k := range keys {
		best := 0
		if i < len(partials) {
			for _, p := range partials[i] {
				best = max(best, len(p))
			}
		}
		if best < keyCount[k] {
			if result == porcupine.Illegal {
				res.IllegalFiles = append(res.IllegalFiles, k)
			} else {
				res.UndecidedFiles = append(res.UndecidedFiles, k)
			}
		}
	}
	switch result {
	case porcupine.Ok:
		res.Verdict = Valid
		res.Explanation = fmt.Sprintf("every one of %d files behaved like a single copy: each lookup and search saw exactly the holders that the acknowledged registrations and unregistrations before it left (%d ops checked, %d of them writes with unknown outcome)", res.Files, res.Ops, res.InfoWrites)
	case porcupine.Illegal:
		res.Verdict = Invalid
		res.Explanation = fmt.Sprintf("%d of %d files have no valid order of operations: some read saw a holder set that no ordering of the writes consistent with real time can produce (a stale read, a lost or phantom write); files %v", len(res.IllegalFiles), res.Files, res.IllegalFiles)
	default:
		res.Verdict = Unknown
		res.Explanation = fmt.Sprintf("the linearizability search did not finish within %v (%d files undecided); rerun with a longer check timeout, fewer ops or more files", timeout, len(res.UndecidedFiles))
	}
	if vizPath != "" {
		info.AddAnnotations(annotations)
		if err := porcupine.VisualizePath(model, info, vizPath); err != nil {
			res.Explanation += fmt.Sprintf("; writing the visualization failed: %v", err)
		} else {
			res.Visualization = vizPath
		}
	}
	res.ElapsedMillis = time.Since(start).Milliseconds()
	return res
}
