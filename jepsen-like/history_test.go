package jepsenlike

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func sampleHistory() []Op {
	return []Op{
		{Index: 0, Process: 1, Worker: 0, Peer: "p1", Type: OpJoin, Key: -1, Outcome: OK, Invoke: 10, Complete: 20},
		{Index: 1, Process: 1, Worker: 0, Peer: "p1", Type: OpRegister, Key: 3, File: strings.Repeat("ab", 32), Outcome: Info, Invoke: 30, Complete: 1030, Error: "deadline exceeded"},
		{Index: 2, Process: 2, Worker: 1, Type: OpLookup, Key: 3, Outcome: OK, Invoke: 40, Complete: 50, Holders: []string{"p1", "p7"}},
		{Index: 3, Process: 2, Worker: 1, Type: OpSearch, Key: 3, Outcome: OK, Invoke: 60, Complete: 70, Count: 2},
		{Index: 4, Process: 0, Worker: -1, Type: OpLookup, Key: 3, Outcome: OK, Invoke: 80, Complete: 90, Final: true},
	}
}

func TestHistoryRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteHistory(&buf, sampleHistory()); err != nil {
		t.Fatal(err)
	}
	got, err := ReadHistory(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sampleHistory()) {
		t.Fatalf("round trip changed the history:\ngot  %+v\nwant %+v", got, sampleHistory())
	}
}

func TestReadHistoryRejectsBadLinesAndNamesThem(t *testing.T) {
	for _, tc := range []struct{ name, line string }{
		{"not json", `{"index":`},
		{"unknown type", `{"type":"frob","outcome":"ok","key":1}`},
		{"unknown outcome", `{"type":"lookup","outcome":"maybe","key":1}`},
		{"completes before invoked", `{"type":"lookup","outcome":"ok","key":1,"invoke":10,"complete":5}`},
		{"unsorted holders", `{"type":"lookup","outcome":"ok","key":1,"holders":["b","a"]}`},
		{"holders on a write", `{"type":"register","peer":"a","outcome":"ok","key":1,"holders":["a"]}`},
		{"write without a peer", `{"type":"register","outcome":"ok","key":1}`},
	} {
		in := `{"type":"join","peer":"p","outcome":"ok","key":-1}` + "\n\n" + tc.line + "\n"
		if _, err := ReadHistory(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), "line 3") {
			t.Errorf("%s: got %v, want an error naming line 3", tc.name, err)
		}
	}
}

// FuzzReadHistory: the decoder never panics, and whatever it accepts
// survives a round trip unchanged.
func FuzzReadHistory(f *testing.F) {
	var buf bytes.Buffer
	if err := WriteHistory(&buf, sampleHistory()); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(`{"type":"lookup","outcome":"ok","key":0,"holders":["a","b"]}`))
	f.Add([]byte("\n\n{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ops, err := ReadHistory(bytes.NewReader(data))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := WriteHistory(&out, ops); err != nil {
			t.Fatalf("cannot re-encode an accepted history: %v", err)
		}
		again, err := ReadHistory(&out)
		if err != nil {
			t.Fatalf("re-encoded history does not decode: %v\n%s", err, out.Bytes())
		}
		if !reflect.DeepEqual(ops, again) {
			t.Fatalf("round trip changed the history:\n%+v\n%+v", ops, again)
		}
	})
}
