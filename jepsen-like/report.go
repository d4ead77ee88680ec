package jepsenlike

import (
	"bufio"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// kindColor is the shade of a fault kind's windows in the plots.
func kindColor(k Kind) string {
	switch k {
	case KindKill, KindKillLeader:
		return "#f8c9c4"
	case KindPause:
		return "#fde7b0"
	case KindPartition, KindOneWay, KindRing, KindBridge, KindIsolateLeader:
		return "#cfe0f7"
	case KindDelay, KindLoss:
		return "#dcefd2"
	case KindRollingRestart, KindMembership:
		return "#e6d9f2"
	case KindDiskFull, KindCorrupt:
		return "#f2dcc4"
	case KindClock:
		return "#d4eeee"
	case KindPowerLoss, KindPowerLossAll:
		return "#f5c6e0"
	case KindUDPLoss, KindUDPDup, KindUDPReorder, KindUDPDelay:
		return "#e8f0c0"
	}
	return "#e0e0e0"
}

// maxPlotPoints bounds the latency plot: past this many ops, ok ops are
// sampled evenly (failed and unknown ones are always drawn), so a long run
// still gives a plot a browser opens quickly.
const maxPlotPoints = 20000

// writeLatencySVG draws every op as a point at (invocation time, latency)
// on a log scale, coloured by type and outcome, over the fault windows
// shaded by kind. Unknown outcomes sit at their timeout.
func writeLatencySVG(w io.Writer, ops []Op, windows []Window, opTimeout time.Duration) error {
	const (
		width, height            = 1100.0, 460.0
		left, right, top, bottom = 70.0, 20.0, 40.0, 50.0
	)
	pw, ph := width-left-right, height-top-bottom
	var tmax int64 = 1
	for _, op := range ops {
		tmax = max(tmax, op.Complete)
	}
	for _, win := range windows {
		tmax = max(tmax, int64(win.EndOffset))
	}
	ymin, ymax := 0.1, math.Max(float64(opTimeout.Milliseconds())*1.5, 10) // ms
	x := func(t int64) float64 { return left + pw*float64(t)/float64(tmax) }
	y := func(ms float64) float64 {
		ms = math.Min(math.Max(ms, ymin), ymax)
		return top + ph*(1-(math.Log10(ms)-math.Log10(ymin))/(math.Log10(ymax)-math.Log10(ymin)))
	}
	bw := bufio.NewWriter(w)
	p := func(format string, args ...any) { fmt.Fprintf(bw, format, args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%.0f" y="16" font-size="14">Operation latency over time (log scale); shaded: fault windows</text>`+"\n", left)
	for _, win := range windows {
		x0, x1 := x(int64(win.StartOffset)), x(int64(win.EndOffset))
		p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" opacity="0.7"><title>%s</title></rect>`+"\n",
			x0, top, math.Max(x1-x0, 1), ph, kindColor(win.Kind), html.EscapeString(fmt.Sprintf("fault %d: %s %s", win.Seq, win.Kind, strings.Join(win.Targets, ","))))
		if label := string(win.Kind); x1-x0 >= 5.5*float64(len(label)) { // else the tooltip says it
			p(`<text x="%.1f" y="%.1f" font-size="9" fill="#555">%s</text>`+"\n", x0+2, top+10, html.EscapeString(label))
		}
	}
	// Axes and grid.
	for ms := ymin; ms <= ymax*1.0001; ms *= 10 {
		p(`<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, left+pw, y(ms), y(ms))
		p(`<text x="%.1f" y="%.1f" text-anchor="end">%g ms</text>`+"\n", left-4, y(ms)+4, ms)
	}
	step := niceStep(time.Duration(tmax))
	for t := time.Duration(0); int64(t) <= tmax; t += step {
		p(`<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x(int64(t)), x(int64(t)), top, top+ph)
		p(`<text x="%.1f" y="%.1f" text-anchor="middle">%gs</text>`+"\n", x(int64(t)), top+ph+14, t.Seconds())
	}
	p(`<text x="%.1f" y="%.1f" text-anchor="middle">time since the run began</text>`+"\n", left+pw/2, height-12)
	p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#888"/>`+"\n", left, top, pw, ph)

	type style struct{ name, color string }
	styleOf := func(op Op) style {
		switch {
		case op.Outcome == Info:
			return style{"unknown (info)", "#d62728"}
		case op.Outcome == Fail:
			return style{"failed", "#ff7f0e"}
		case op.Type.IsWrite():
			return style{"ok write", "#1f77b4"}
		}
		return style{"ok read", "#2ca02c"}
	}
	okOps := 0
	for _, op := range ops {
		if op.Outcome == OK {
			okOps++
		}
	}
	every := max(1, (okOps+maxPlotPoints-1)/maxPlotPoints)
	seen := 0
	for _, op := range ops {
		if op.Outcome == OK {
			seen++
			if seen%every != 0 {
				continue
			}
		}
		s := styleOf(op)
		ms := float64(op.Complete-op.Invoke) / float64(time.Millisecond)
		p(`<circle cx="%.1f" cy="%.1f" r="1.6" fill="%s" fill-opacity="0.6"/>`+"\n", x(op.Invoke), y(ms), s.color)
	}
	legend := []style{{"ok write", "#1f77b4"}, {"ok read", "#2ca02c"}, {"failed", "#ff7f0e"}, {"unknown (info)", "#d62728"}}
	for i, s := range legend {
		lx := left + pw - 440 + float64(i)*110
		p(`<circle cx="%.1f" cy="28" r="4" fill="%s"/><text x="%.1f" y="32">%s</text>`+"\n", lx, s.color, lx+8, s.name)
	}
	if every > 1 {
		p(`<text x="%.1f" y="%.1f" fill="#555">ok ops sampled 1 in %d</text>`+"\n", left+4, top+ph-4, every)
	}
	p("</svg>\n")
	return bw.Flush()
}

func niceStep(total time.Duration) time.Duration {
	for _, s := range []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute} {
		if total/s <= 12 {
			return s
		}
	}
	return 30 * time.Minute
}

// writeReport writes report.html: the verdict in plain words, what ran,
// what each checker found, the faults, and links to everything else.
func writeReport(w io.Writer, r *Results, history []Op, windows []Window, ids []string) error {
	bw := bufio.NewWriter(w)
	e := html.EscapeString
	p := func(format string, args ...any) { fmt.Fprintf(bw, format, args...) }
	// bullets writes a heading and a list of items, or nothing without items.
	bullets := func(heading string, items []string) {
		if len(items) == 0 {
			return
		}
		p("<h3>%s</h3><ul>", heading)
		for _, it := range items {
			p("<li>%s</li>", e(it))
		}
		p("</ul>\n")
	}
	color := map[Verdict]string{Valid: "#2e7d32", Invalid: "#c62828", Unknown: "#ef6c00"}
	p(`<!doctype html><html><head><meta charset="utf-8"><title>FileShare fault-injection run: %s</title>
<style>body{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top;font-size:13px}
th{background:#f4f4f4}.v{color:white;padding:1px 8px;border-radius:3px;font-weight:bold}code{background:#f4f4f4;padding:0 3px}</style></head><body>
`, e(string(r.Verdict)))
	p(`<h1>Fault-injection run: <span class="v" style="background:%s">%s</span></h1>`+"\n", color[r.Verdict], e(strings.ToUpper(string(r.Verdict))))
	p("<p>%s</p>\n", e(r.Summary))
	if r.UnsafeFault != "" {
		p(`<p><b>The masters ran with the deliberate bug <code>FILESHARE_UNSAFE_FAULT=%s</code>.</b> This run exists to prove that the checkers catch a broken system: an invalid verdict is the expected result.</p>`+"\n", e(r.UnsafeFault))
	}
	p(`<h2>What the verdict means</h2>
<p>Each operation a client ran ends <b>ok</b> (the cluster acknowledged it), <b>fail</b> (the cluster refused it, so it certainly did not happen) or <b>info</b> (the client gave up waiting, so it may or may not have happened). The checkers then ask whether the cluster kept its promises, whatever faults were injected:</p>
<ul>
<li><b>linearizable</b>: for every file, some single order of all operations, consistent with real time, explains every lookup and search result exactly (porcupine searched for it). A stale read from a deposed leader, or a lost write, has no such order.</li>
<li><b>set-full</b>: every registration that was acknowledged, and not possibly undone later, is present in the final reads (nothing acknowledged was lost), and no acknowledged unregistration came back.</li>
<li><b>tracker-set</b> (tracker workload): every started or completed a master acknowledged, and that no stop could have undone, is in every master's final peer list; no acknowledged stop came back; no list shows a peer nobody announced. The peer lifetime outlasts the run, so nothing may expire.</li>
<li><b>tracker-agree</b> (tracker workload): after the faults healed, every master lists the same peers in every swarm.</li>
<li><b>tracker-once</b> (UDP faults): every started or stopped announce the UDP proxies duplicated had one effect: every master's swarm counts match the peers it lists, and tracker-set finds nothing lost or resurrected.</li>
<li><b>restart-recall</b> (a tracker under test, --tracker-cmd): after each kill and restart, the first membership change in each swarm still counts every peer the tracker had acknowledged there when it was killed.</li>
<li><b>digests</b>: after the faults healed, every master holds the same index.</li>
<li><b>heal-digests</b>: after every single heal, with the workload held back until no write was in flight, every master that served (running, in the configuration, caught up) held the same index.</li>
<li><b>logs</b>: no master panicked, hit a fatal error or a data race, or exited on its own. A master that refused to start because the harness damaged its data dir (exit status 4), or stopped because the harness filled its disk and said so in its log, is listed as such, not as a crash.</li>
<li><b>availability</b>: how much succeeded during and outside faults. Informational: a cluster may refuse work while it cannot reach a majority.</li>
</ul>
<p><b>valid</b> means no checker found a violation; <b>invalid</b> means one did; <b>unknown</b> means a checker could not decide (never a pass). A valid run shows the absence of the bugs this schedule can expose, not of all bugs: rerun with other seeds and faults.</p>
`)
	p("<h2>Checkers</h2>\n<table><tr><th>checker</th><th>verdict</th><th>explanation</th></tr>\n")
	for _, name := range checkerNames(r) {
		c := r.Checkers[name]
		p(`<tr><td>%s</td><td><span class="v" style="background:%s">%s</span></td><td>%s</td></tr>`+"\n", name, color[c.Verdict], e(string(c.Verdict)), e(c.Explanation))
	}
	p("</table>\n")
	bullets("Problems the harness met", r.Problems)
	if r.Tracker != nil {
		writeTrackerSection(p, e, r.Tracker)
	}
	if r.ranIndex() {
		writeSetFullSection(p, e, r.SetFull)
	}
	p("<h2>Operations</h2><table><tr><th>type</th><th>total</th><th>ok</th><th>fail</th><th>info</th></tr>\n")
	for _, t := range []OpType{OpJoin, OpRegister, OpUnregister, OpLookup, OpSearch, OpStarted, OpReannounce, OpCompleted, OpStopped, OpPeers} {
		c, ok := r.OpsByType[t]
		if !ok {
			continue
		}
		p("<tr><td>%s</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td></tr>\n", t, c.Total, c.OK, c.Fail, c.Info)
	}
	p("<tr><th>all</th><th>%d</th><th>%d</th><th>%d</th><th>%d</th></tr></table>\n", r.Ops.Total, r.Ops.OK, r.Ops.Fail, r.Ops.Info)
	a := r.Availability
	p(`<h2>Availability</h2><table><tr><th></th><th>outside faults</th><th>inside faults</th></tr>
<tr><td>all ops ok</td><td>%s</td><td>%s</td></tr><tr><td>writes ok</td><td>%s</td><td>%s</td></tr><tr><td>reads ok</td><td>%s</td><td>%s</td></tr></table>
`, frac(a.OutsideFaults), frac(a.InFaults), frac(a.WritesOutside), frac(a.WritesIn), frac(a.ReadsOutside), frac(a.ReadsIn))
	p(`<h2>Faults</h2><p>Masters: %s. Network faults: %s.</p>`+"\n", e(strings.Join(ids, ", ")), e(r.Net))
	p("<table><tr><th>#</th><th>kind</th><th>start</th><th>healed</th><th>targets</th><th>cut links</th><th>first ok write after start / after heal</th><th>notes</th></tr>\n")
	rec := map[int]Recovery{}
	for _, rv := range a.Recovery {
		rec[rv.Seq] = rv
	}
	for _, win := range windows {
		kind := string(win.Kind)
		switch {
		case win.Kind == KindClock:
			kind += fmt.Sprintf(" (%s to %v)", win.Variant, time.Duration(win.Offset))
		case win.Variant != "":
			kind += " (" + win.Variant + ")"
		case win.Kind == KindDelay:
			kind += fmt.Sprintf(" (%v ± %v)", time.Duration(win.Delay), time.Duration(win.Jitter))
		case win.Kind == KindLoss:
			kind += fmt.Sprintf(" (%.0f%%)", 100*win.Loss)
		}
		p(`<tr><td>%d</td><td style="background:%s">%s</td><td>%.1fs</td><td>%.1fs</td><td>%s</td><td>%s</td><td>%s / %s</td><td>%s</td></tr>`+"\n",
			win.Seq, kindColor(win.Kind), e(kind), time.Duration(win.StartOffset).Seconds(), time.Duration(win.EndOffset).Seconds(),
			e(strings.Join(win.Targets, ", ")), e(strings.Join(win.Cuts, " ")), msOrNone(rec[win.Seq].AfterStartMillis), msOrNone(rec[win.Seq].AfterHealMillis), e(strings.Join(win.Notes, "; ")))
	}
	p("</table>\n")
	bullets("Skipped", r.Skipped)
	if len(r.Logs.Findings) > 0 || len(r.Logs.Crashes) > 0 || len(r.Logs.SlowStops) > 0 || len(r.Logs.SelfStops) > 0 {
		p("<h2>Log findings</h2><ul>")
		for _, f := range r.Logs.Findings {
			p(`<li><a href="logs/%s">%s</a> line %d: <code>%s</code></li>`, e(f.File), e(f.File), f.Line, e(f.Text))
		}
		for _, c := range r.Logs.Crashes {
			p("<li>%s exited on its own at %v: %s</li>", e(c.Node), time.Duration(c.At).Round(time.Millisecond), e(c.Error))
		}
		for _, c := range r.Logs.SlowStops {
			p("<li>%s at %v (informational): %s</li>", e(c.Node), time.Duration(c.At).Round(time.Millisecond), e(c.Error))
		}
		for _, c := range r.Logs.SelfStops {
			p("<li>%s at %v (expected, not a crash): %s</li>", e(c.Node), time.Duration(c.At).Round(time.Millisecond), e(c.Error))
		}
		p("</ul>\n")
	}
	if len(windows) > 0 && len(history) > 0 {
		p("<h2>Around each fault</h2>\n<p>What every client did from %v before each fault started until %v after it healed: hover a bar for the operation, its outcome and the master that answered.</p>\n", diagramMargin, diagramMargin)
		for _, win := range windows {
			p("<h3>Fault %d: %s %s</h3>\n", win.Seq, e(string(win.Kind)), e(strings.Join(win.Targets, ", ")))
			writeFaultDiagram(bw, history, win)
		}
	}
	p(`<h2>Latency</h2><p><img src="%s" alt="latency over time" style="max-width:100%%"></p>`+"\n", LatencyFile)
	p("<h2>Files</h2><ul>\n")
	p(`<li><a href="%s">%s</a>: porcupine's interactive view of the history and its linearization, fault windows on the "nemesis" row%s</li>`+"\n", LinearizeFile, LinearizeFile, illegalNote(r.Linearizable))
	p(`<li><a href="%s">%s</a>: every operation, one JSON object per line (times in ns since the start)</li>`+"\n", HistoryFile, HistoryFile)
	p(`<li><a href="%s">%s</a>: the faults planned from seed %d and when they really happened</li>`+"\n", ScheduleFile, ScheduleFile, r.Seed)
	p(`<li><a href="%s">%s</a>: every number on this page</li>`+"\n", ResultsFile, ResultsFile)
	for _, id := range ids {
		p(`<li><a href="logs/%s.log">logs/%s.log</a></li>`+"\n", id, id)
	}
	p("</ul>\n")
	if r.TrackerCmd != "" {
		p(`<h2>Replay</h2><p>The same seed replays the same fault schedule: <code>fileshare jepsen --seed %d --workload tracker --tracker-cmd '%s' --time %v --interval %v --nemesis %s --rate %g --concurrency %d --torrents %d</code></p>`+"\n",
			r.Seed, e(r.TrackerCmd), time.Duration(r.Time), time.Duration(r.Interval), e(kindList(r.Kinds)), r.Rate, r.Concurrency, r.Torrents)
	} else {
		p(`<h2>Replay</h2><p>The same seed replays the same fault schedule: <code>fileshare jepsen --seed %d --nodes %d --time %v --interval %v --nemesis %s --rate %g --concurrency %d --files %d</code></p>`+"\n",
			r.Seed, r.Nodes, time.Duration(r.Time), time.Duration(r.Interval), e(kindList(r.Kinds)), r.Rate, r.Concurrency, r.Files)
	}
	p("</body></html>\n")
	return bw.Flush()
}

func kindList(ks []Kind) string {
	if len(ks) == 0 {
		return "none"
	}
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, ",")
}

func illegalNote(l LinearizabilityResult) string {
	if len(l.IllegalFiles) == 0 {
		return ""
	}
	return fmt.Sprintf("; files %v have no linearization: pick their partitions to see where it breaks", l.IllegalFiles)
}

func frac(f Fraction) string {
	if f.Ops == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f%% (%d of %d)", 100*f.Fraction, f.OK, f.Ops)
}

func msOrNone(ms int64) string {
	if ms < 0 {
		return "none"
	}
	return fmt.Sprintf("%d ms", ms)
}

// ReadResults loads results.json from a run's output directory.
func ReadResults(dir string) (*Results, error) {
	b, err := os.ReadFile(filepath.Join(dir, ResultsFile))
	if err != nil {
		return nil, err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ResultsFile), err)
	}
	return &r, nil
}

// writeSetFullSection writes the index workload's set-full table.
func writeSetFullSection(p func(string, ...any), e func(string) string, s SetFullResult) {
	p(`<h2>Set-full</h2><table><tr><th>acknowledged holdings</th><th>lost</th><th>of which never seen</th><th>acknowledged removals</th><th>resurrected</th><th>phantoms</th><th>stale reads</th><th>visible after ack (p50 / p99 / max)</th></tr>
<tr><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%.1f / %.1f / %.1f ms</td></tr></table>
`, s.Acknowledged, len(s.Lost), len(s.NeverSeen), s.Removed, len(s.Resurrected), len(s.Phantoms), s.StaleReads, s.VisibleAfter.P50, s.VisibleAfter.P99, s.VisibleAfter.Max)
	for _, list := range []struct {
		name  string
		elems []Element
	}{{"Lost", s.Lost}, {"Resurrected", s.Resurrected}, {"Phantoms", s.Phantoms}} {
		if len(list.elems) > 0 {
			var parts []string
			for i, el := range list.elems {
				if i == 50 {
					parts = append(parts, fmt.Sprintf("… %d more in results.json", len(list.elems)-50))
					break
				}
				parts = append(parts, fmt.Sprintf("file %d held by %s", el.Key, el.Peer))
			}
			p("<p><b>%s:</b> %s</p>\n", list.name, e(strings.Join(parts, "; ")))
		}
	}
}

// writeTrackerSection writes the tracker workload's checkers.
func writeTrackerSection(p func(string, ...any), e func(string) string, t *TrackerResult) {
	p(`<h2>Tracker</h2><table><tr><th>swarms</th><th>entries</th><th>acknowledged entries</th><th>lost</th><th>acknowledged stops</th><th>resurrected</th><th>phantoms</th><th>swarms listed differently</th></tr>
<tr><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td></tr></table>
`, t.Swarms, t.Elements, t.Acknowledged, len(t.Lost), t.Removed, len(t.Resurrected), len(t.Phantoms), len(t.Agreement.Differences))
	for _, list := range []struct {
		name   string
		misses []TrackerMiss
	}{{"Lost (missing on)", t.Lost}, {"Resurrected (listed by)", t.Resurrected}} {
		if len(list.misses) > 0 {
			var parts []string
			for _, m := range first(list.misses, 50) {
				parts = append(parts, fmt.Sprintf("torrent %d peer %s: %s", m.Key, m.Peer, strings.Join(m.Masters, ",")))
			}
			if len(list.misses) > 50 {
				parts = append(parts, fmt.Sprintf("… %d more in results.json", len(list.misses)-50))
			}
			p("<p><b>%s:</b> %s</p>\n", list.name, e(strings.Join(parts, "; ")))
		}
	}
	if len(t.Phantoms) > 0 {
		var parts []string
		for _, el := range first(t.Phantoms, 50) {
			parts = append(parts, fmt.Sprintf("torrent %d peer %s", el.Key, el.Peer))
		}
		p("<p><b>Phantoms:</b> %s</p>\n", e(strings.Join(parts, "; ")))
	}
}

// ranIndex reports whether the run had the index workload (results from
// before workloads were recorded always did).
func (r *Results) ranIndex() bool {
	return len(r.Workloads) == 0 || slices.Contains(r.Workloads, WorkloadIndex)
}
