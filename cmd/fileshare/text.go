package main

import (
	"fmt"
	"strings"
	"unicode"
)

// printable returns s with every character a terminal would act on
// escaped (control characters, including ESC, and Unicode format
// characters such as bidirectional overrides), so that a name another
// peer chose can neither move the cursor, recolour the screen, nor make
// one name look like another. Printable text, spaces included, is kept.
func printable(s string) string {
	if !strings.ContainsFunc(s, needsEscape) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\uFFFD':
			b.WriteString(`\uFFFD`)
		case needsEscape(r) && r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		case needsEscape(r):
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func needsEscape(r rune) bool {
	return r == '\\' || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\uFFFD'
}

// safeBase is the file name a download is saved under when the user gave
// no --out file: the last element of the name its holder registered, with
// characters a terminal or a shell would act on replaced, and never a
// dotfile, so a name chosen by a stranger cannot plant ".bashrc".
func safeBase(base string) string {
	base = strings.Map(func(r rune) rune {
		if needsEscape(r) && r != '\\' {
			return '_'
		}
		return r
	}, base)
	if base == "" || base == "." || base == ".." || base == "/" {
		return "download"
	}
	if strings.HasPrefix(base, ".") {
		return "download" + base
	}
	return base
}
