package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"fileshare/client"
	"fileshare/fsm"
)

// searchResult is one file in `search -o json`.
type searchResult struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	PieceSize int64  `json:"piece_size"`
	Holders   int    `json:"holders"`
}

// searchPage is the output of `search -o json`: one page of the matches,
// or all of them with --all.
type searchPage struct {
	// Total is the number of files that match in the whole index.
	Total int `json:"total"`
	// Next is the --after value of the following page; "" when Files end
	// with the last match.
	Next  string         `json:"next"`
	Files []searchResult `json:"files"`
}

type searchFlags struct {
	readFlags
	after string
	limit int
	all   bool
}

func newSearchCmd(_ *globalFlags, stdout io.Writer) *cobra.Command {
	f := &searchFlags{}
	cmd := &cobra.Command{
		Use:   "search [WORDS...] --masters ADDR,...",
		Short: "Find files in the index whose name contains every word",
		Long: fmt.Sprintf(`Search the index for files whose name contains every word (case does not
matter); with no words, every file matches. Prints the ID, name, size and
number of holders of each, sorted by name; fetch one with 'fileshare get ID',
'fileshare get NAME' or 'fileshare get' and the first 8 or more digits of the
ID, and list who holds it with 'fileshare holders'.

Search lists at most --limit files (1 to %d) and then says how many matched
in all and how to see the next page: --after with the cursor it prints, or
--all to follow every page to the end. With -o json it prints
{"total": N, "next": CURSOR, "files": [...]}, where next is "" on the last page.`, fsm.MaxSearchLimit),
		Example: `  fileshare search holiday 2024 --masters 127.0.0.1:7001,127.0.0.1:7002 --trusted-ca-file /tmp/fileshare/tls/ca.pem
  fileshare search --all -o json --masters 127.0.0.1:7001 --trusted-ca-file /tmp/fileshare/tls/ca.pem
  fileshare search --limit 50 --after CURSOR --masters 127.0.0.1:7001 --trusted-ca-file /tmp/fileshare/tls/ca.pem`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSearch(cmd, f, strings.Join(args, " "), stdout)
		},
	}
	fl := cmd.Flags()
	f.readFlags.add(fl)
	fl.IntVar(&f.limit, "limit", fsm.DefaultSearchLimit, fmt.Sprintf("most files to list per page, 1 to %d", fsm.MaxSearchLimit))
	fl.StringVar(&f.after, "after", "", "list the page after this cursor, as a previous search printed it")
	fl.BoolVar(&f.all, "all", false, fmt.Sprintf("list every matching file, following pages to the end (%d per request unless --limit)", fsm.MaxSearchLimit))
	return cmd
}

func runSearch(cmd *cobra.Command, f *searchFlags, query string, stdout io.Writer) error {
	if f.limit < 1 || f.limit > fsm.MaxSearchLimit {
		return fmt.Errorf("--limit %d: give a page size from 1 to %d, and --after or --all for more", f.limit, fsm.MaxSearchLimit)
	}
	if len(query) > fsm.MaxQueryLen {
		return fmt.Errorf("the search words are %d bytes long; the index matches at most %d: use fewer or shorter words", len(query), fsm.MaxQueryLen)
	}
	c, level, err := f.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	limit := f.limit
	if f.all && !cmd.Flags().Changed("limit") {
		limit = fsm.MaxSearchLimit
	}
	var files []client.FileSummary
	seen := map[string]bool{}
	after := f.after
	var last client.SearchReply
	skipped := 0
	for first := true; first || (f.all && after != ""); first = false {
		ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
		last, err = c.SearchPage(ctx, query, after, limit, level)
		cancel()
		if errors.Is(err, fsm.ErrInvalid) && after != "" {
			return fmt.Errorf("--after: %w", err)
		}
		if err != nil {
			return unreachable("search", err)
		}
		// A file whose name changes between pages can move past the
		// cursor and come again: list it once.
		for _, fl := range last.Files {
			if !seen[fl.ID] {
				seen[fl.ID] = true
				files = append(files, fl)
			}
		}
		if first {
			skipped = last.Skipped
		}
		after = last.Next
	}
	// The last page's Total and Next, the first page's position.
	page := last
	page.Files, page.Skipped = files, skipped
	return printSearchPage(stdout, f.output, query, page)
}

// printSearchPage prints the files of r and, in a table, a footer that
// says what the page left out and how to see it; in JSON, a searchPage.
func printSearchPage(w io.Writer, format, query string, r client.SearchReply) error {
	if format == "json" {
		out := searchPage{Total: r.Total, Next: r.Next, Files: make([]searchResult, 0, len(r.Files))}
		for _, f := range r.Files {
			out.Files = append(out.Files, searchResult{ID: f.ID, Name: f.Name, Size: f.Size, PieceSize: f.PieceSize, Holders: f.Holders})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(r.Files) == 0 && r.Total > 0 {
		_, err := fmt.Fprintf(w, "no more files: all %s matching files sort before --after\n", withCommas(r.Total))
		return err
	}
	if err := printFiles(w, "table", query, r.Files); err != nil {
		return err
	}
	if len(r.Files) == r.Total {
		return nil // nothing left out
	}
	what := "files"
	if query != "" {
		what = "matching files"
	}
	var err error
	if r.Skipped == 0 {
		_, err = fmt.Fprintf(w, "showing %s of %s %s", withCommas(len(r.Files)), withCommas(r.Total), what)
	} else {
		_, err = fmt.Fprintf(w, "showing %s–%s of %s %s", withCommas(r.Skipped+1), withCommas(r.Skipped+len(r.Files)), withCommas(r.Total), what)
	}
	if err != nil {
		return err
	}
	if r.Next != "" {
		_, err = fmt.Fprintf(w, "; next page: --after %s (or --all)\n", r.Next)
	} else {
		_, err = fmt.Fprintln(w, "; this is the last page")
	}
	return err
}

// counted formats n and noun, plural unless n is 1: "1 peer", "2,000 peers".
func counted(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return withCommas(n) + " " + noun + "s"
}

// withCommas formats n with thousands separators: 2000 → "2,000".
func withCommas(n int) string {
	if n < 0 {
		return "-" + withCommas(-n)
	}
	s := strconv.Itoa(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func printFiles(w io.Writer, format, query string, files []client.FileSummary) error {
	if format == "json" {
		out := make([]searchResult, 0, len(files))
		for _, f := range files {
			out = append(out, searchResult{ID: f.ID, Name: f.Name, Size: f.Size, PieceSize: f.PieceSize, Holders: f.Holders})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(files) == 0 {
		_, err := fmt.Fprintf(w, "no file matches %q\n", query)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSIZE\tHOLDERS")
	for _, f := range files {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", f.ID, printable(f.Name), humanBytes(f.Size), f.Holders)
	}
	return tw.Flush()
}

// humanBytes formats n bytes with a binary unit: "512 B", "1.5 KiB", "64.0 MiB".
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
