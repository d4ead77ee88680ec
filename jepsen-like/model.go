package jepsenlike

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"
)

// The sequential specification the history is checked against: for each
// file, the set of peer IDs holding it. register adds the caller's peer,
// unregister removes it (both are set operations, so repeating one changes
// nothing), a lookup returns exactly the set, and a search returns its
// size. Files are independent, so the history is partitioned by file and
// each partition is checked on its own, which keeps porcupine fast.

// modelInput is what an operation asks: porcupine's Operation.Input.
type modelInput struct {
	Type OpType
	Key  int
	Peer string
}

// modelOutput is what an operation returned: porcupine's Operation.Output.
// Unknown is set for info writes, whose reply never came.
type modelOutput struct {
	Holders holderSet
	Count   int
	Unknown bool
}

// holderSet is a canonical set of peer IDs: sorted, distinct, joined by
// commas (peer IDs never contain one). A string keeps porcupine's state
// comparisons and hashing cheap and its states immutable.
type holderSet string

func newHolderSet(peers []string) holderSet {
	s := slices.Clone(peers)
	slices.Sort(s)
	s = slices.Compact(s)
	return holderSet(strings.Join(s, ","))
}

func (h holderSet) members() []string {
	if h == "" {
		return nil
	}
	return strings.Split(string(h), ",")
}

func (h holderSet) size() int { return len(h.members()) }

func (h holderSet) add(p string) holderSet {
	m := h.members()
	if i, found := slices.BinarySearch(m, p); !found {
		m = slices.Insert(m, i, p)
	}
	return holderSet(strings.Join(m, ","))
}

func (h holderSet) remove(p string) holderSet {
	m := h.members()
	if i, found := slices.BinarySearch(m, p); found {
		m = slices.Delete(m, i, i+1)
	}
	return holderSet(strings.Join(m, ","))
}

func (h holderSet) String() string { return "{" + strings.ReplaceAll(string(h), ",", ", ") + "}" }

// holdersModel returns the porcupine model of per-file holder sets.
func holdersModel() porcupine.Model {
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byKey := map[int][]porcupine.Operation{}
			var keys []int
			for _, op := range history {
				k := op.Input.(modelInput).Key
				if _, ok := byKey[k]; !ok {
					keys = append(keys, k)
				}
				byKey[k] = append(byKey[k], op)
			}
			slices.Sort(keys)
			out := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				out = append(out, byKey[k])
			}
			return out
		},
		Init: func() any { return holderSet("") },
		Step: func(state, input, output any) (bool, any) {
			s := state.(holderSet)
			in := input.(modelInput)
			out := output.(modelOutput)
			switch in.Type {
			case OpRegister:
				return true, s.add(in.Peer)
			case OpUnregister:
				return true, s.remove(in.Peer)
			case OpLookup:
				return out.Unknown || out.Holders == s, s
			case OpSearch:
				return out.Unknown || out.Count == s.size(), s
			}
			return false, s
		},
		Equal: func(a, b any) bool { return a.(holderSet) == b.(holderSet) },
		Hash: func(state any) uint64 {
			h := fnv.New64a()
			h.Write([]byte(state.(holderSet)))
			return h.Sum64()
		},
		DescribeOperation: func(input, output any) string {
			in := input.(modelInput)
			out := output.(modelOutput)
			switch in.Type {
			case OpRegister, OpUnregister:
				s := fmt.Sprintf("%s(%s)", in.Type, in.Peer)
				if out.Unknown {
					s += " ?"
				}
				return s
			case OpLookup:
				return "lookup → " + out.Holders.String()
			case OpSearch:
				return fmt.Sprintf("search → %d holders", out.Count)
			}
			return string(in.Type)
		},
		DescribeState: func(state any) string { return state.(holderSet).String() },
		DescribeOperationMetadata: func(info any) string {
			if s, ok := info.(string); ok {
				return s
			}
			return ""
		},
	}
}

// toPorcupine converts a history into porcupine operations:
//
//   - joins are dropped (they change no holder set);
//   - fail ops are dropped (they certainly did not happen);
//   - info reads are dropped (a read that returned nothing constrains
//     nothing);
//   - info writes stay, with Return moved past the end of the history and
//     any output accepted, because they may have taken effect at any time
//     after they were invoked, or never (a write linearized after every
//     other op is indistinguishable from one that never happened).
//
// The returned slice is parallel to the ops it keeps (same order).
func toPorcupine(ops []Op) ([]porcupine.Operation, []Op) {
	end := endOfHistory(ops)
	var out []porcupine.Operation
	var kept []Op
	for _, op := range ops {
		if op.Type == OpJoin || op.Outcome == Fail {
			continue
		}
		if op.Type.IsRead() && op.Outcome != OK {
			continue
		}
		in := modelInput{Type: op.Type, Key: op.Key, Peer: op.Peer}
		res := modelOutput{Holders: newHolderSet(op.Holders), Count: op.Count}
		ret := op.Complete
		if op.Outcome == Info {
			res = modelOutput{Unknown: true}
			ret = end
		}
		meta := fmt.Sprintf("op %d, process %d, %s, %s", op.Index, op.Process, op.Peer, op.Outcome)
		if op.Final {
			meta += ", final read"
		}
		if op.Error != "" {
			meta += ": " + op.Error
		}
		out = append(out, porcupine.Operation{
			ClientId: op.Process, // porcupine's rows; process 0 holds the final reads
			Input:    in,
			Call:     op.Invoke,
			Output:   res,
			Return:   ret,
			Metadata: meta,
		})
		kept = append(kept, op)
	}
	return out, kept
}
