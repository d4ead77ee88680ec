package fsm

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// pageAll follows SearchAfter's cursors from the start to the end of the
// results of query, failing if it takes more than maxPages pages.
func pageAll(t *testing.T, f *FSM, query string, limit, maxPages int) (files []FileInfo, pages []SearchPage) {
	t.Helper()
	var after SearchCursor
	for range maxPages {
		p := f.SearchAfter(query, after, limit)
		pages = append(pages, p)
		files = append(files, p.Files...)
		if !p.More {
			return files, pages
		}
		after = p.Next()
	}
	t.Fatalf("SearchAfter(%q, limit %d) still had more results after %d pages", query, limit, maxPages)
	return nil, nil
}

// Paging with cursors reports every matching file exactly once, in the
// order of a single unlimited search, and every page states the same
// total and how many results came before it. Names repeat across files so
// that the ID tie-break is exercised.
func TestSearchPagesReportEveryFileOnce(t *testing.T) {
	n := newNode(t)
	n.mustApply(joinA(1))
	const nFiles = 1000
	rng := rand.New(rand.NewPCG(12, 12))
	var files []FileMeta
	for i := range nFiles {
		files = append(files, meta(i, fmt.Sprintf("dir/file-%03d.txt", rng.IntN(300))))
	}
	n.mustApply(regA(2, files...))
	want := n.f.Search("", MaxSearchLimit)
	if len(want) != nFiles {
		t.Fatalf("Search(\"\", MaxSearchLimit): got %d files, want %d", len(want), nFiles)
	}
	for _, limit := range []int{1, 7, 100, nFiles - 1, nFiles, nFiles + 1} {
		t.Run(fmt.Sprint("limit=", limit), func(t *testing.T) {
			got, pages := pageAll(t, n.f, "", limit, nFiles+1)
			if !slices.Equal(got, want) {
				t.Fatalf("paging by %d: got %d files, want the %d of one unlimited search in the same order", limit, len(got), len(want))
			}
			seen := 0
			for i, p := range pages {
				if p.Total != nFiles || p.Skipped != seen {
					t.Fatalf("page %d: got Total %d Skipped %d, want %d and %d", i, p.Total, p.Skipped, nFiles, seen)
				}
				if last := i == len(pages)-1; p.More == last {
					t.Fatalf("page %d of %d: More = %v", i, len(pages), p.More)
				}
				seen += len(p.Files)
			}
		})
	}
}

// A query's total counts every match, not just the page; pages of a
// filtered query hold only matches.
func TestSearchTotalCountsEveryMatch(t *testing.T) {
	n := newNode(t)
	n.mustApply(joinA(1))
	var files []FileMeta
	for i := range 250 {
		name := fmt.Sprintf("photo-%03d.jpg", i)
		if i%5 == 0 {
			name = fmt.Sprintf("holiday-%03d.mp4", i)
		}
		files = append(files, meta(i, name))
	}
	n.mustApply(regA(2, files...))
	for _, tc := range []struct {
		query      string
		limit      int
		total, got int
		more       bool
	}{
		{"", 0, 250, DefaultSearchLimit, true},
		{"", -1, 250, DefaultSearchLimit, true},
		{"holiday", 10, 50, 10, true},
		{"holiday", 50, 50, 50, false},
		{"HOLIDAY mp4", 0, 50, 50, false},
		{"nothing", 0, 0, 0, false},
		{strings.Repeat("x", MaxQueryLen+1), 0, 0, 0, false},
	} {
		p := n.f.SearchAfter(tc.query, SearchCursor{}, tc.limit)
		if p.Total != tc.total || len(p.Files) != tc.got || p.More != tc.more || p.Skipped != 0 {
			t.Errorf("SearchAfter(%.20q, zero, %d): got Total %d, %d files, More %v, Skipped %d; want %d, %d, %v, 0",
				tc.query, tc.limit, p.Total, len(p.Files), p.More, p.Skipped, tc.total, tc.got, tc.more)
		}
		for _, f := range p.Files {
			if tc.query == "holiday" && !strings.HasPrefix(f.Name, "holiday") {
				t.Errorf("SearchAfter(%q) returned %q", tc.query, f.Name)
			}
		}
	}
	// A cursor past the last result gives an empty last page with the
	// same total.
	all := n.f.Search("holiday", 0)
	last := all[len(all)-1]
	if p := n.f.SearchAfter("holiday", SearchCursor{Name: last.Name, ID: last.ID}, 0); len(p.Files) != 0 || p.More || p.Total != 50 || p.Skipped != 50 {
		t.Errorf("SearchAfter past the end: got %+v, want no files, Total 50, Skipped 50", p)
	}
}

// Files registered between pages never make a page repeat a file: each
// file is reported at most once, and every file present throughout is
// reported.
func TestSearchPagesNoDuplicatesUnderInserts(t *testing.T) {
	n := newNode(t)
	n.mustApply(joinA(1))
	var files []FileMeta
	for i := range 300 {
		files = append(files, meta(i, fmt.Sprintf("f-%03d", i)))
	}
	n.mustApply(regA(2, files...))
	var after SearchCursor
	seen := map[FileID]bool{}
	next := 300
	req := uint64(3)
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("paging did not end")
		}
		p := n.f.SearchAfter("f-", after, 17)
		for _, f := range p.Files {
			if seen[f.ID] {
				t.Fatalf("file %s (%s) reported twice", f.ID, f.Name)
			}
			seen[f.ID] = true
		}
		if !p.More {
			break
		}
		after = p.Next()
		// Some new files sort before the cursor, some after.
		n.mustApply(regA(req, meta(next, fmt.Sprintf("f-%03d", next%300)), meta(next+1, fmt.Sprintf("f-%03d-new", (next*7)%300))))
		next += 2
		req++
	}
	for i := range 300 {
		if !seen[fid(i)] {
			t.Errorf("file %d, indexed throughout, was never reported", i)
		}
	}
}

// A unique ID prefix finds its file; a shared prefix finds every file that
// has it, sorted by ID; a prefix too short or not lowercase hex finds
// nothing and ValidateIDPrefix says why.
func TestFilesWithPrefix(t *testing.T) {
	n := newNode(t)
	n.mustApply(joinA(1))
	var files []FileMeta
	for i := range 2000 {
		files = append(files, meta(i, fmt.Sprint("f", i)))
	}
	n.mustApply(regA(2, files...))
	target := fid(7)
	got, total := n.f.FilesWithPrefix(string(target[:MinIDPrefixLen]), 0)
	if total != 1 || len(got) != 1 || got[0].ID != target || got[0].Name != "f7" || got[0].Holders != 1 {
		t.Fatalf("FilesWithPrefix(%s): got %+v (total %d), want file 7 alone", target[:MinIDPrefixLen], got, total)
	}
	if got, total := n.f.FilesWithPrefix(string(target), 0); total != 1 || len(got) != 1 || got[0].ID != target {
		t.Fatalf("FilesWithPrefix(full ID): got %+v (total %d), want file 7", got, total)
	}

	// Register files whose IDs share an 8-digit prefix.
	shared := "abcdef01"
	var twins []FileMeta
	for i := range 5 {
		id := FileID(shared + strings.Repeat(fmt.Sprint(i), FileIDLen-len(shared)))
		twins = append(twins, FileMeta{ID: id, Name: fmt.Sprint("twin", i), Size: 10, PieceSize: 1 << 18})
	}
	n.mustApply(regA(3, twins...))
	got, total = n.f.FilesWithPrefix(shared, 3)
	if total != 5 || len(got) != 3 || !slices.IsSortedFunc(got, func(a, b FileInfo) int { return strings.Compare(string(a.ID), string(b.ID)) }) {
		t.Fatalf("FilesWithPrefix(%s, 3): got %d files (total %d), want 3 of 5 sorted by ID", shared, len(got), total)
	}
	for _, bad := range []string{"", "abcdef0", strings.ToUpper(shared), "abcdefgh", string(target) + "0"} {
		if got, total := n.f.FilesWithPrefix(bad, 0); got != nil || total != 0 {
			t.Errorf("FilesWithPrefix(%q): got %d files, want none", bad, total)
		}
		if err := ValidateIDPrefix(bad); err == nil {
			t.Errorf("ValidateIDPrefix(%q): got nil, want an error", bad)
		}
	}
}
