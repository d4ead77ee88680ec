package jepsenlike_test

import (
	"fmt"
	"time"

	jepsenlike "fileshare/jepsen-like"
)

// A schedule depends only on its plan: print it once, and the same seed
// replays it exactly.
func ExamplePlanSchedule() {
	kinds, err := jepsenlike.ParseKinds("kill,partition,leader")
	if err != nil {
		panic(err)
	}
	plan := jepsenlike.Plan{Seed: 42, Nodes: 3, Time: 30 * time.Second, Interval: 10 * time.Second, Kinds: kinds}
	for _, f := range jepsenlike.PlanSchedule(plan) {
		fmt.Printf("fault %d: %s at %v\n", f.Seq, f.Kind, time.Duration(f.At))
	}
	// Output:
	// fault 1: kill at 5s
	// fault 2: isolate-leader at 15s
}
