package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"fileshare/peer"
)

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// defaultWidth is the terminal width assumed when neither the terminal
// nor $COLUMNS tells it.
const defaultWidth = 80

// termWidth returns the width in columns of the terminal w writes to: the
// kernel's (TIOCGWINSZ) where it knows, else $COLUMNS, else 80.
func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if n := ttyColumns(f); n > 0 {
			return n
		}
	}
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 0 {
		return n
	}
	return defaultWidth
}

// progressPrinter shows a download's progress: a bar redrawn in place on a
// terminal, a plain line at most once a second otherwise. println prints a
// line of narration without tearing the bar. Safe for concurrent use.
//
// The bar never reaches the terminal's last column, so a redraw never
// wraps: a line that wraps leaves its first part behind on every redraw.
type progressPrinter struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	width func() int // the terminal's width now, in columns
	// The fields below are guarded by mu.
	barShown  bool
	last      time.Time
	resumed   bool
	started   bool
	startDone int64 // Progress.Done at the first update: what this run did not fetch
	lastSeen  peer.Progress
}

// newProgressPrinter returns a printer writing to w; tty selects the
// redrawn bar, sized to w's terminal.
func newProgressPrinter(w io.Writer, tty bool) *progressPrinter {
	return &progressPrinter{w: w, tty: tty, width: func() int { return termWidth(w) }, last: time.Now()} // first line after a second
}

func (pp *progressPrinter) println(format string, args ...any) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.clearBar()
	fmt.Fprintf(pp.w, format+"\n", args...)
}

func (pp *progressPrinter) clearBar() {
	if pp.barShown {
		fmt.Fprint(pp.w, "\r\033[K")
		pp.barShown = false
	}
}

// update shows p. It is the download's Progress callback.
func (pp *progressPrinter) update(p peer.Progress) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if !pp.started {
		pp.started, pp.startDone = true, p.Done
	}
	pp.lastSeen = p
	if p.Resumed > 0 && !pp.resumed {
		pp.resumed = true
		pp.clearBar()
		fmt.Fprintf(pp.w, "resumed %d/%s (%s) verified by an earlier run\n", p.Resumed, plural(p.Pieces, "piece"), humanBytes(p.Done))
	}
	if pp.tty {
		avg := -1.0
		if p.Pieces > 0 && p.PiecesDone == p.Pieces {
			avg = pp.avgRate(p) // the rate now is about 0; done adds the holders that served
		}
		fmt.Fprint(pp.w, "\r\033[K"+pp.barLine(p, pp.width()-1, avg, -1))
		pp.barShown = true
		return
	}
	if time.Since(pp.last) < time.Second || p.PiecesDone == p.Pieces {
		return
	}
	pp.last = time.Now()
	fmt.Fprintf(pp.w, "progress: %.0f%% (%d/%s) %s of %s at %s/s from %s, %s left\n",
		percent(p), p.PiecesDone, plural(p.Pieces, "piece"), humanBytes(p.Done), humanBytes(p.Size), humanBytes(int64(p.Rate)), plural(p.Holders, "holder")+pathsText(p.Paths), remaining(p))
}

// done ends the bar's line. With res, the download's result, a complete
// bar is redrawn one last time with the average rate and the holders that
// served pieces, instead of the current rate (0 at the end) and the
// connected holders.
func (pp *progressPrinter) done(res *peer.DownloadResult) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if !pp.barShown {
		return
	}
	if p := pp.lastSeen; res != nil && p.Pieces > 0 && p.PiecesDone == p.Pieces {
		fmt.Fprint(pp.w, "\r\033[K"+pp.barLine(p, pp.width()-1, pp.avgRate(p), len(res.FromHolders)))
	}
	fmt.Fprintln(pp.w)
	pp.barShown = false
}

// avgRate is the rate of this run's fetching, resumed bytes left out.
func (pp *progressPrinter) avgRate(p peer.Progress) float64 {
	if s := p.Elapsed.Seconds(); s > 0 {
		return float64(p.Done-pp.startDone) / s
	}
	return 0
}

// barLine renders p in at most width columns:
//
//	NAME  42.0% [##########..............] 12.0 MiB/64.0 MiB  8.0 MiB/s  2 holders  6s left
//
// The bar takes the room the rest leaves, between 10 and 24 columns. When
// the line is too long, the name is cut first (down to 8 columns), then
// the bar shrinks, then the name goes, then the fields at the end, and
// last the line itself is cut. avg >= 0 marks a finished download: the rate shown is
// that average, and served, unless negative, the number of holders that
// sent pieces.
func (pp *progressPrinter) barLine(p peer.Progress, width int, avg float64, served int) string {
	const barMax, barMin, nameMin = 24, 10, 8
	pct := percent(p)
	head := fmt.Sprintf("%5.1f%%", pct)
	fields := []string{humanBytes(p.Done) + "/" + humanBytes(p.Size)}
	if avg >= 0 {
		fields = append(fields, "avg "+humanBytes(int64(avg))+"/s")
		if served >= 0 {
			fields = append(fields, "from "+plural(served, "holder"))
		}
	} else {
		fields = append(fields, humanBytes(int64(p.Rate))+"/s", plural(p.Holders, "holder"), remaining(p)+" left")
	}
	name := printable(p.Name)
	bar := func(n int) string {
		fill := min(int(pct/100*float64(n)), n)
		return "[" + strings.Repeat("#", fill) + strings.Repeat(".", n-fill) + "]"
	}
	line := func(name string, barN int, fields []string) string {
		s := head + " " + bar(barN) + " " + strings.Join(fields, "  ")
		if name != "" {
			s = name + "  " + s
		}
		return s
	}
	// The room for the name (and its two spaces) and the bar.
	room := width - cols(line("", 0, fields))
	if name != "" {
		switch {
		case room >= barMin+cols(name)+2:
			return line(name, min(room-cols(name)-2, barMax), fields)
		case room >= barMin+nameMin+2:
			barN := min(room-nameMin-2, barMax)
			return line(shorten(name, room-barN-2), barN, fields)
		}
	}
	for ; len(fields) > 1; fields = fields[:len(fields)-1] {
		if room := width - cols(line("", 0, fields)); room >= barMin {
			return line("", min(room, barMax), fields)
		}
	}
	return shorten(line("", barMin, fields), width)
}

// shorten cuts s to at most n columns, marking a cut with "…".
func shorten(s string, n int) string {
	if cols(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	var b strings.Builder
	used := 1 // the "…"
	for _, r := range s {
		if used+runeCols(r) > n {
			break
		}
		used += runeCols(r)
		b.WriteRune(r)
	}
	return b.String() + "…"
}

// cols is how many terminal columns s takes: one per rune, two for the
// wide (East Asian and emoji) ones. s must hold no control characters
// (see printable).
func cols(s string) int {
	n := 0
	for _, r := range s {
		n += runeCols(r)
	}
	return n
}

func runeCols(r rune) int {
	switch {
	case r >= 0x1100 && r <= 0x115F, r >= 0x2E80 && r <= 0xA4CF && r != 0x303F,
		r >= 0xAC00 && r <= 0xD7A3, r >= 0xF900 && r <= 0xFAFF, r >= 0xFE30 && r <= 0xFE4F,
		r >= 0xFF00 && r <= 0xFF60, r >= 0xFFE0 && r <= 0xFFE6,
		r >= 0x1F300 && r <= 0x1FAFF, r >= 0x20000 && r <= 0x3FFFD:
		return 2
	}
	return 1
}

// plural returns "1 piece", "2 pieces", "0 pieces".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func percent(p peer.Progress) float64 {
	if p.Size > 0 {
		return 100 * float64(p.Done) / float64(p.Size)
	}
	return 100
}

func remaining(p peer.Progress) string {
	if r := p.Remaining(); r >= 0 {
		return fmtDuration(r)
	}
	return "--"
}

func fmtDuration(d time.Duration) string {
	d = d.Round(time.Second)
	if d < time.Minute {
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
	if d < time.Hour {
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}
