package master

import (
	"sync"
	"time"
)

// Time on a master, and why a clock that jumps cannot drop a live peer or
// keep a dead one.
//
// Two clocks. Liveness is measured on the monotonic clock, which no
// setting of the system clock moves: the peer lease table (leases.go)
// records when each peer was last heard from as a time.Now() value and
// compares with time.Since, and the tracker's "a full lifetime since this
// leadership began" is monotonic too. So a wall clock that jumps forward
// cannot make a peer that renewed look silent, and one that jumps back
// cannot make a silent peer look fresh.
//
// Times inside commands (JoinPeer, Announce, ExpirePeers, ExpireSwarmPeers)
// come from cmdClock, which reads the wall clock (Config.Now) only when it
// is anchored — when the master starts and when it becomes leader — and
// from then on advances by the monotonic clock. Every reading is also
// after the latest Time the FSM has applied and after the clock's own last
// reading, so command times never go backwards:
//
//   - The FSM skips an expiry for a peer whose JoinPeer is later than the
//     expiry's Time. A leader whose clock is an hour behind proposes
//     expiries after every applied join (it starts at LastCommandTime+1),
//     so it cannot skip dead peers forever; and a join proposed after an
//     expiry was decided always carries a later Time than the expiry, so
//     it is never dropped by it.
//   - Swarm records' soft seen times on the leader are all on this clock:
//     the new leader first marks every record seen at its anchor
//     (fsm.TouchAllSwarmPeers), renewals and applied announces use it, and
//     expiry compares with a bound on it. A jump of the wall clock during
//     the term changes none of them; a leader that starts with a clock an
//     hour ahead starts every record's lifetime at its own anchor, so
//     nothing expires early, and a dead record still goes within one
//     lifetime (plus a sweep) of the leadership's start.
//
// The cost: a jump takes effect in command times only at the next
// anchor, and after a leader with a clock ahead of real time, command
// times stay ahead (they never go back). They are labels for ordering and
// display; no decision compares them with a local wall clock.
type cmdClock struct {
	wall  func() time.Time // Config.Now
	floor func() int64     // fsm.LastCommandTime

	mu         sync.Mutex
	anchorWall int64     // Unix ns at the anchor
	anchorMono time.Time // time.Now() at the anchor (monotonic)
	last       int64     // the latest reading handed out
}

func newCmdClock(wall func() time.Time, floor func() int64) *cmdClock {
	c := &cmdClock{wall: wall, floor: floor}
	c.anchor()
	return c
}

// anchor restarts the clock from the wall clock, but never before the
// FSM's latest command time or the clock's own last reading. The leader
// session calls it after its barrier, when the FSM holds every earlier
// term's entries.
func (c *cmdClock) anchor() {
	w := c.wall().UnixNano()
	mono := time.Now()
	fl := c.floor()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.anchorWall = max(w, fl+1, c.last+1)
	c.anchorMono = mono
}

// read returns the clock's time without reserving it: for soft seen
// times and expiry bounds, which may repeat.
func (c *cmdClock) read() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.anchorWall+int64(time.Since(c.anchorMono)), c.last)
}

// next returns a time for a command: later than every earlier reading of
// next and than the FSM's latest applied command time.
func (c *cmdClock) next() int64 {
	fl := c.floor()
	c.mu.Lock()
	defer c.mu.Unlock()
	t := max(c.anchorWall+int64(time.Since(c.anchorMono)), c.last+1, fl+1)
	c.last = t
	return t
}
