package main

import (
	"fileshare/client"
	"fileshare/peer"
	"strings"
	"testing"
)

// Names from other peers reach the terminal with every control and format
// character escaped, and a saved file never gets a hidden or empty name.
func TestNamesFromStrangersAreMadeHarmless(t *testing.T) {
	for in, want := range map[string]string{
		"holiday 2024.mp4":      "holiday 2024.mp4",
		"naïve café.txt":        "naïve café.txt",
		"evil\x1b[2Jname":       `evil\x1b[2Jname`,
		"line\nbreak\r":         `line\x0abreak\x0d`,
		"gpj.\u202Eexe":         `gpj.\u202Eexe`,
		`back\slash`:            `back\x5cslash`,
		"bad utf8 \xff":         `bad utf8 \uFFFD`,
		"bell\a and del \x7f!":  `bell\x07 and del \x7f!`,
		"zero\u200bwidth space": `zero\u200Bwidth space`,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"song.mp3": "song.mp3",
		".bashrc":  "download.bashrc",
		"..":       "download",
		"":         "download",
		"a\x1bb":   "a_b",
	} {
		if got := safeBase(in); got != want {
			t.Errorf("safeBase(%q) = %q, want %q", in, got, want)
		}
	}
}

// get and holders explain an ambiguous reference the same way, by why it
// is ambiguous: several files with the name, a prefix (or a name and an
// ID) fitting several, or only names that contain it.
func TestAmbiguousReferencesAreExplainedByTheirCause(t *testing.T) {
	cands := []client.FileSummary{{FileEntry: client.FileEntry{ID: strings.Repeat("a", 64), Name: "a.txt"}}, {FileEntry: client.FileEntry{ID: strings.Repeat("b", 64), Name: "b.txt"}}}
	for _, tc := range []struct {
		amb  peer.AmbiguousError
		want string
	}{
		{peer.AmbiguousError{Named: true}, "2 files are named"},
		{peer.AmbiguousError{Prefix: true}, "as the start of an ID"},
		{peer.AmbiguousError{}, "but these contain it"},
	} {
		tc.amb.Query, tc.amb.Candidates = "x", cands
		var b strings.Builder
		explainAmbiguous(&b, "x", &tc.amb)
		if out := b.String(); !strings.Contains(out, tc.want) || !strings.Contains(out, "a.txt") || !strings.Contains(out, "b.txt") {
			t.Errorf("Named=%v Prefix=%v: got\n%s\nwant %q and both candidates", tc.amb.Named, tc.amb.Prefix, out, tc.want)
		}
	}
}
