package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"fileshare/peer"
)

func progressAt(name string, done, size int64, pieces, piecesDone, holders int) peer.Progress {
	return peer.Progress{Name: name, Size: size, Done: done, Pieces: pieces, PiecesDone: piecesDone, Rate: 3 << 20, Holders: holders, Elapsed: 2 * time.Second}
}

// redraws splits a terminal printer's output into the lines it drew: each
// redraw starts with "\r\033[K".
func redraws(out string) []string {
	var lines []string
	for _, part := range strings.Split(out, "\r\033[K") {
		for _, l := range strings.Split(part, "\n") {
			if l != "" {
				lines = append(lines, l)
			}
		}
	}
	return lines
}

// A redrawn progress bar never reaches the terminal's last column, at any
// width and with any name: a line that wraps leaves a copy of itself on
// the screen at every redraw. The name gives way first, the figures last.
func TestProgressBarNeverWrapsTheTerminal(t *testing.T) {
	long := strings.Repeat("very-long-folder-name/", 8) + "holiday-video.mp4"
	for _, width := range []int{20, 40, 60, 80, 100, 200} {
		for _, name := range []string{"a.bin", long, strings.Repeat("日本語", 30), "bad\x1b[2Jname"} {
			t.Run(fmt.Sprintf("%d/%.10s", width, name), func(t *testing.T) {
				var b bytes.Buffer
				pp := newProgressPrinter(&b, true)
				pp.width = func() int { return width }
				pp.update(progressAt(name, 0, 64<<20, 256, 0, 2))
				pp.update(progressAt(name, 30<<20, 64<<20, 256, 120, 12))
				pp.update(progressAt(name, 64<<20, 64<<20, 256, 256, 0))
				pp.done(&peer.DownloadResult{FromHolders: map[string]int{"a": 1, "b": 255}})
				lines := redraws(b.String())
				if len(lines) != 4 {
					t.Fatalf("got %d lines, want 4 redraws:\n%q", len(lines), b.String())
				}
				for _, l := range lines {
					if n := cols(l); n >= width {
						t.Errorf("line of %d columns on a %d-column terminal: %q", n, width, l)
					}
					if strings.Contains(l, "\x1b[2J") {
						t.Errorf("a terminal escape from the name reached the screen: %q", l)
					}
				}
			})
		}
	}
}

// At 80 columns a short name, a bar and every figure fit; a long name is
// cut (marked "…") and the figures stay; a wide terminal gets a wide bar.
func TestProgressBarShortensTheNameFirst(t *testing.T) {
	pp := newProgressPrinter(nil, true)
	p := progressAt("big.bin", 16<<20, 64<<20, 256, 64, 2)
	figures := []string{" 25.0% [", "16.0 MiB/64.0 MiB", "3.0 MiB/s", "2 holders", "16s left"}
	line := pp.barLine(p, 79, -1, -1)
	for _, want := range append(figures, "big.bin  ") {
		if !strings.Contains(line, want) {
			t.Errorf("80 columns: line lacks %q: %q", want, line)
		}
	}
	if line := pp.barLine(p, 199, -1, -1); !strings.Contains(line, "["+strings.Repeat("#", 6)+strings.Repeat(".", 18)+"]") {
		t.Errorf("200 columns: want the 24-column bar: %q", line)
	}
	p.Name = strings.Repeat("x", 100)
	line = pp.barLine(p, 79, -1, -1)
	for _, want := range append(figures, "xxxxxxx…  ") {
		if !strings.Contains(line, want) {
			t.Errorf("80 columns, long name: line lacks %q: %q", want, line)
		}
	}
	if n := cols(line); n > 79 {
		t.Errorf("line of %d columns, want at most 79: %q", n, line)
	}
}

// The printer speaks English: one piece, one holder; and a finished
// download shows its average rate and the holders that served it, not
// the current rate (zero by then) and the holders still connected.
func TestProgressGrammarAndTheFinishedLine(t *testing.T) {
	for n, want := range map[int]string{0: "0 pieces", 1: "1 piece", 2: "2 pieces"} {
		if got := plural(n, "piece"); got != want {
			t.Errorf("plural(%d) = %q, want %q", n, got, want)
		}
	}

	var b bytes.Buffer
	pp := newProgressPrinter(&b, true)
	pp.width = func() int { return 100 }
	pp.update(progressAt("one.bin", 0, 1<<20, 1, 0, 1))
	fin := progressAt("one.bin", 1<<20, 1<<20, 1, 1, 0)
	fin.Rate, fin.Elapsed = 0, time.Second
	pp.update(fin)
	pp.done(&peer.DownloadResult{FromHolders: map[string]int{"a": 1}})
	lines := redraws(b.String())
	last := lines[len(lines)-1]
	for _, want := range []string{"100.0%", "avg 1.0 MiB/s", "from 1 holder"} {
		if !strings.Contains(last, want) {
			t.Errorf("finished line lacks %q: %q", want, last)
		}
	}
	for _, bad := range []string{"0 B/s", "holder(s)", "holders", "left"} {
		if strings.Contains(last, bad) {
			t.Errorf("finished line has %q: %q", bad, last)
		}
	}

	b.Reset()
	pp = newProgressPrinter(&b, false)
	pp.last = time.Time{}
	pp.update(progressAt("one.bin", 0, 1<<20, 1, 0, 1))
	if got := b.String(); !strings.Contains(got, "(0/1 piece)") || !strings.Contains(got, "from 1 holder,") {
		t.Errorf("plain progress line: %q", got)
	}
	if got := summary(peer.DownloadResult{Path: "/tmp/x", Size: 5, Pieces: 1, Fetched: 1, Duration: time.Second}, false); !strings.Contains(got, "fetched 1 piece,") {
		t.Errorf("summary: %q", got)
	}
}
