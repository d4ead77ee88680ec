package jepsenlike

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"strings"
	"testing"
	"time"
)

func TestLatencySVGIsWellFormedAndShadesFaults(t *testing.T) {
	ops := sampleHistory()
	windows := []Window{{Fault: Fault{Seq: 1, Kind: KindPartition}, StartOffset: 20, EndOffset: 60, Targets: []string{"m2"}}}
	var buf bytes.Buffer
	if err := writeLatencySVG(&buf, ops, windows, time.Second); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(buf.Bytes()))
	circles := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("latency.svg is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "circle" {
			circles++
		}
	}
	if want := len(ops) + 4; circles != want { // one per op plus the legend
		t.Fatalf("%d circles, want %d", circles, want)
	}
	if !strings.Contains(buf.String(), kindColor(KindPartition)) {
		t.Fatal("the fault window is not shaded")
	}
}

func TestReportExplainsTheVerdict(t *testing.T) {
	r := &Results{Verdict: Invalid, Summary: "INVALID: the cluster broke a promise.", Seed: 9, Nodes: 3, UnsafeFault: "stale-reads",
		Checkers: map[string]CheckerResult{"linearizable": {Invalid, "1 of 3 files have no valid order"}},
		SetFull:  SetFullResult{Lost: []Element{{Key: 2, Peer: "p7"}}}}
	var buf bytes.Buffer
	if err := writeReport(&buf, r, nil, nil, []string{"m1", "m2", "m3"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"INVALID", "broke a promise", "stale-reads", "1 of 3 files", "file 2 held by p7",
		`href="linearizability.html"`, `href="history.jsonl"`, `href="logs/m2.log"`, "--seed 9"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("report.html lacks %q", want)
		}
	}
}

// The pacer keeps the long-run rate: 50 ops at 500/s take about 0.1 s
// after the initial burst.
func TestPacerKeepsTheRate(t *testing.T) {
	p := newPacer(500, 5)
	stop := make(chan struct{})
	start := time.Now()
	for range 55 {
		if !p.wait(context.Background(), stop) {
			t.Fatal("wait refused")
		}
	}
	if d := time.Since(start); d < 90*time.Millisecond || d > 2*time.Second {
		t.Fatalf("55 ops with a burst of 5 at 500/s took %v, want about 100 ms", d)
	}
	close(stop)
	if p.wait(context.Background(), stop) {
		t.Fatal("wait after stop went ahead")
	}
}

// Each fault gets a space-time diagram: well-formed SVG with the fault
// shaded, one bar per client operation near it (final reads left out),
// the answering master written beside tracker announces, and the first
// acknowledged write after the start and after the heal circled; and
// report.html carries one per fault.
func TestFaultDiagramsShowEachClientAroundTheFault(t *testing.T) {
	s := int64(time.Second)
	ops := []Op{
		{Worker: 0, Type: OpRegister, Key: 1, Outcome: OK, Invoke: 1 * s, Complete: 1*s + s/10},
		{Worker: 1, Type: OpStarted, Key: 2, Outcome: Info, Invoke: 3 * s, Complete: 4 * s, Master: "m2", Error: "deadline exceeded"},
		{Worker: 0, Type: OpRegister, Key: 1, Outcome: Fail, Invoke: 3 * s, Complete: 3*s + s/2},
		{Worker: 2, Type: OpStarted, Key: 2, Outcome: OK, Invoke: 4 * s, Complete: 4*s + s/2, Master: "m3"},
		{Worker: 0, Type: OpLookup, Key: 1, Outcome: OK, Invoke: 5 * s, Complete: 5*s + s/10},
		{Worker: 1, Type: OpStopped, Key: 2, Outcome: OK, Invoke: 6 * s, Complete: 6*s + s/10, Master: "m1"},
		{Worker: 3, Type: OpRegister, Key: 1, Outcome: OK, Invoke: 30 * s, Complete: 31 * s}, // far from the fault
		{Worker: -1, Type: OpLookup, Key: 1, Outcome: OK, Invoke: 5 * s, Complete: 5 * s, Final: true},
	}
	win := Window{Fault: Fault{Seq: 4, Kind: KindPowerLossAll}, StartOffset: Duration(3 * s), EndOffset: Duration(5 * s), Targets: []string{"m1", "m2", "m3"}}
	var buf bytes.Buffer
	writeFaultDiagram(&buf, ops, win)
	dec := xml.NewDecoder(bytes.NewReader(buf.Bytes()))
	bars, marks := 0, 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the diagram is not well-formed XML: %v\n%s", err, buf.String())
		}
		if se, ok := tok.(xml.StartElement); ok {
			for _, a := range se.Attr {
				if se.Name.Local == "line" && a.Name.Local == "stroke-width" && a.Value == "4" {
					bars++
				}
				if se.Name.Local == "circle" && a.Name.Local == "r" && a.Value == "5" {
					marks++
				}
			}
		}
	}
	if bars != 6 || marks != 2 {
		t.Fatalf("%d bars and %d marks, want the 6 client ops near the fault and 2 marks:\n%s", bars, marks, buf.String())
	}
	for _, want := range []string{kindColor(KindPowerLossAll), ">m3<", ">bt client 1<", ">client 0<", "first ok write after the heal: stopped by client 1", "deadline exceeded"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("the diagram lacks %q", want)
		}
	}
	var page bytes.Buffer
	if err := writeReport(&page, &Results{Verdict: Valid}, ops, []Window{win, win}, []string{"m1"}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(page.String(), "<svg "); n != 2 {
		t.Fatalf("report.html has %d diagrams for 2 faults", n)
	}
}
