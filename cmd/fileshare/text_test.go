package main

import "testing"

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
