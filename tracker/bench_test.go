package tracker_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"fileshare/tracker"
	"fileshare/tracker/trackertest"
)

func BenchmarkParseAnnounce(b *testing.B) {
	q := baseQuery("%124Vx%9A%bc%de%F0+%00ABCDEFGHIJ") + "&key=DEADBEEF&numwant=80&compact=1&event=started"
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := tracker.ParseAnnounce(q, src, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// discardWriter is a ResponseWriter that keeps nothing, so the benchmark
// measures the handler, not a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

func BenchmarkHTTPAnnounce(b *testing.B) {
	mem := &trackertest.MemoryBackend{}
	h := tracker.NewHTTPHandler(mem, tracker.HTTPConfig{})
	r := httptest.NewRequest("GET", "/announce?"+baseQuery(escapeAll(hash20, false))+"&numwant=50", nil)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}
