package jepsenlike

import (
	"fmt"
	"html"
	"io"
	"slices"
	"strings"
	"time"
)

// The fault diagrams of report.html: for each fault, a space-time diagram
// in the manner of Lamport's of what every client did in the seconds
// around it. Time runs left to right; each client (worker) has a line;
// each operation is a bar from its invocation to its end, green if
// acknowledged, red if it failed, orange if its outcome is unknown, with
// the master that answered a tracker announce written beside it. The
// fault's window is shaded, and the first acknowledged write after the
// fault started and after it healed are marked. Plain SVG, no scripts,
// no external assets.

const (
	// diagramMargin is how much time the diagram shows before the fault
	// starts and after it heals.
	diagramMargin = 2 * time.Second
	// diagramMaxOps bounds the operations one diagram draws: past it, ok
	// operations are thinned evenly (fail and info are always drawn).
	diagramMaxOps = 200
	diagramWidth  = 1000
	diagramLabelW = 70
	diagramRowH   = 16
)

// isWrite reports whether op changes state (what "the first acknowledged
// write" means on a diagram).
func isWrite(t OpType) bool {
	switch t {
	case OpRegister, OpUnregister, OpJoin, OpStarted, OpCompleted, OpStopped:
		return true
	}
	return false
}

// writeFaultDiagram draws the diagram of fault win from the run's
// history (times in ns since the run began).
func writeFaultDiagram(w io.Writer, history []Op, win Window) {
	from := int64(win.StartOffset) - int64(diagramMargin)
	to := int64(win.EndOffset) + int64(diagramMargin)
	var ops []Op
	for _, op := range history {
		if op.Final || op.Worker < 0 || op.Complete < from || op.Invoke > to {
			continue
		}
		ops = append(ops, op)
	}
	if len(ops) > diagramMaxOps {
		okCount := 0
		for _, op := range ops {
			if op.Outcome == OK {
				okCount++
			}
		}
		keepEvery := max(okCount/max(diagramMaxOps-(len(ops)-okCount), 1), 1)
		n := 0
		ops = slices.DeleteFunc(ops, func(op Op) bool {
			if op.Outcome != OK {
				return false
			}
			n++
			return n%keepEvery != 0
		})
	}
	// One line per client: the index and the tracker workloads number
	// their workers alike, so a tracker client's line is its worker
	// number plus trackerRow.
	const trackerRow = 1 << 20
	lane := func(op Op) int {
		if op.Type.IsTracker() {
			return trackerRow + op.Worker
		}
		return op.Worker
	}
	var workers []int
	for _, op := range ops {
		if !slices.Contains(workers, lane(op)) {
			workers = append(workers, lane(op))
		}
	}
	slices.Sort(workers)
	row := map[int]int{}
	for i, wk := range workers {
		row[wk] = i
	}
	plotW := float64(diagramWidth - diagramLabelW - 10)
	x := func(t int64) float64 {
		t = min(max(t, from), to)
		return float64(diagramLabelW) + plotW*float64(t-from)/float64(to-from)
	}
	height := 30 + diagramRowH*max(len(workers), 1) + 20
	e := html.EscapeString
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="10" role="img" aria-label="fault %d: %s">`+"\n",
		diagramWidth, height, win.Seq, e(string(win.Kind)))
	// The fault window, and the time axis in seconds from the run's start.
	fmt.Fprintf(w, `<rect x="%.1f" y="18" width="%.1f" height="%d" fill="%s" opacity="0.6"><title>fault %d: %s %s</title></rect>`+"\n",
		x(int64(win.StartOffset)), x(int64(win.EndOffset))-x(int64(win.StartOffset)), height-38, kindColor(win.Kind), win.Seq, e(string(win.Kind)), e(strings.Join(win.Targets, ",")))
	step := int64(time.Second)
	if to-from > int64(20*time.Second) {
		step = int64(5 * time.Second)
	}
	for t := (from/step + 1) * step; t < to; t += step {
		fmt.Fprintf(w, `<line x1="%.1f" y1="14" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="10" text-anchor="middle" fill="#666">%gs</text>`+"\n",
			x(t), x(t), height-20, x(t), float64(t)/1e9)
	}
	for i, wk := range workers {
		y := 30 + i*diagramRowH
		name := fmt.Sprintf("client %d", wk)
		if wk >= trackerRow {
			name = fmt.Sprintf("bt client %d", wk-trackerRow)
		}
		fmt.Fprintf(w, `<text x="4" y="%d" fill="#444">%s</text><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#bbb"/>`+"\n",
			y+3, name, diagramLabelW, y, diagramWidth-10, y)
	}
	colors := map[Outcome]string{OK: "#2e7d32", Fail: "#c62828", Info: "#ef6c00"}
	firstAfter := func(t int64) (Op, bool) {
		best, found := Op{}, false
		for _, op := range ops {
			if op.Outcome == OK && isWrite(op.Type) && op.Complete >= t && (!found || op.Complete < best.Complete) {
				best, found = op, true
			}
		}
		return best, found
	}
	for _, op := range ops {
		y := 30 + row[lane(op)]*diagramRowH
		x1, x2 := x(op.Invoke), x(op.Complete)
		title := fmt.Sprintf("%s %s key %d: %s after %v", op.Type, op.Outcome, op.Key, op.Master, time.Duration(op.Complete-op.Invoke).Round(time.Millisecond))
		if op.Error != "" {
			title += ": " + op.Error
		}
		fmt.Fprintf(w, `<g><title>%s</title><line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="4"/><circle cx="%.1f" cy="%d" r="2" fill="#333"/>`,
			e(title), x1, y, max(x2, x1+1), y, colors[op.Outcome], x1, y)
		if op.Master != "" && x2-x1 > 18 {
			fmt.Fprintf(w, `<text x="%.1f" y="%d" fill="#333" font-size="8">%s</text>`, x1+2, y-3, e(op.Master))
		}
		fmt.Fprint(w, "</g>\n")
	}
	for _, mark := range []struct {
		at    int64
		label string
	}{{int64(win.StartOffset), "first ok write after the start"}, {int64(win.EndOffset), "first ok write after the heal"}} {
		if op, ok := firstAfter(mark.at); ok {
			y := 30 + row[lane(op)]*diagramRowH
			fmt.Fprintf(w, `<g><title>%s: %s by client %d at %.3fs</title><circle cx="%.1f" cy="%d" r="5" fill="none" stroke="#000" stroke-width="1.5"/></g>`+"\n",
				e(mark.label), op.Type, op.Worker, float64(op.Complete)/1e9, x(op.Complete), y)
		}
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" fill="#444">fault %d (%s) shaded; bars: invoke→end, green ok, red fail, orange unknown; circles: first acknowledged write after the start and after the heal</text>`+"\n",
		diagramLabelW, height-6, win.Seq, e(string(win.Kind)))
	fmt.Fprint(w, "</svg>\n")
}
