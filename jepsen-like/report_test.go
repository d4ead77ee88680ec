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
	if err := writeReport(&buf, r, nil, []string{"m1", "m2", "m3"}); err != nil {
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
