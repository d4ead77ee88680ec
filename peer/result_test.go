package peer

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A download's JSON uses snake_case keys and milliseconds, like every
// other JSON the CLI prints.
func TestDownloadResultJSONUsesMilliseconds(t *testing.T) {
	b, err := json.Marshal(DownloadResult{ID: "x", Pieces: 3, Duration: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	if !strings.Contains(got, `"duration_ms":1500`) || strings.Contains(got, "duration_ns") || strings.Contains(got, `"Duration"`) {
		t.Fatalf("got %s, want duration_ms 1500 and no other duration", got)
	}
	if !strings.Contains(got, `"pieces":3`) || !strings.Contains(got, `"id":"x"`) {
		t.Fatalf("got %s, want the other fields too", got)
	}
}
