package peer

import (
	"cmp"
	"context"
	"fmt"
	"path"
	"slices"

	"fileshare/client"
	"fileshare/fsm"
)

// resolveLimit is how many search results Resolve considers.
const resolveLimit = 100

// Resolve finds the one file a user means by ref, reading linearizably:
//
//   - a file ID (64 lowercase hex digits) is looked up directly;
//   - otherwise ref must be a file's name, or the last element of its
//     name, as any of its holders registered it, or a prefix of a file's
//     ID of at least fsm.MinIDPrefixLen (8) lowercase hex digits; if
//     exactly one file fits, that file.
//
// Every holder's name counts, not only the one search shows, so nobody
// can make Resolve pick their file by renaming another: registering a
// known file under another name does not take the name away from it. A
// name that only part-matches is never enough. Likewise a prefix that
// fits several files, or one file by its ID and another by its name, is
// ambiguous: someone who grinds a file ID to share a prefix that a user
// copied can make the prefix fail, never make it pick their file.
//
// It returns ErrFileNotFound if nothing matches, and an *AmbiguousError
// (matching ErrAmbiguous) listing the candidates if several files fit
// (Named is true when every candidate has the name exactly), or if files
// only contain the name.
func Resolve(ctx context.Context, c *client.Client, ref string) (client.FileSummary, error) {
	return ResolveAt(ctx, c, ref, client.ReadLinearizable)
}

// ResolveAt is Resolve with every read made at level ("" =
// linearizable). A stale level may resolve a name to a file that has
// since left the index, or miss one just registered.
func ResolveAt(ctx context.Context, c *client.Client, ref string, level client.ReadLevel) (client.FileSummary, error) {
	if fsm.FileID(ref).Validate() == nil {
		r, err := c.Lookup(ctx, ref, level)
		if err != nil {
			return client.FileSummary{}, fmt.Errorf("look up %s: %w", ref, err)
		}
		if !r.Found {
			return client.FileSummary{}, fmt.Errorf("%w: %s", ErrFileNotFound, ref)
		}
		return r.File, nil
	}
	var byID []client.FileSummary
	if fsm.ValidateIDPrefix(ref) == nil {
		r, err := c.Find(ctx, ref, resolveLimit, level)
		if err != nil {
			return client.FileSummary{}, fmt.Errorf("find files whose ID starts with %s: %w", ref, err)
		}
		byID = r.Files
	}
	r, err := c.Search(ctx, ref, resolveLimit, level)
	if err != nil {
		return client.FileSummary{}, fmt.Errorf("search for %q: %w", ref, err)
	}
	named := func(n string) bool { return n == ref || path.Base(n) == ref }
	var exact []client.FileSummary
	for _, f := range r.Files {
		if named(f.Name) {
			exact = append(exact, f)
			continue
		}
		// Search shows one name per file; another holder may use ref.
		l, err := c.Lookup(ctx, f.ID, level)
		if err != nil {
			return client.FileSummary{}, fmt.Errorf("look up %s: %w", f.ID, err)
		}
		if slices.ContainsFunc(l.Holders, func(h client.HolderEntry) bool { return named(h.Name) }) {
			exact = append(exact, f)
		}
	}
	fits := exact
	for _, f := range byID {
		if !slices.ContainsFunc(fits, func(e client.FileSummary) bool { return e.ID == f.ID }) {
			fits = append(fits, f)
		}
	}
	slices.SortFunc(fits, func(a, b client.FileSummary) int { return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID)) })
	switch {
	case len(fits) == 1:
		return fits[0], nil
	case len(fits) > 1:
		return client.FileSummary{}, &AmbiguousError{Query: ref, Candidates: fits, Named: len(exact) == len(fits), Prefix: len(exact) != len(fits)}
	case len(r.Files) == 0 && fsm.ValidateIDPrefix(ref) == nil:
		return client.FileSummary{}, fmt.Errorf("%w: nothing named like %q, and no file ID starts with it; try fileshare search", ErrFileNotFound, ref)
	case len(r.Files) == 0:
		return client.FileSummary{}, fmt.Errorf("%w: nothing named like %q; try fileshare search", ErrFileNotFound, ref)
	}
	return client.FileSummary{}, &AmbiguousError{Query: ref, Candidates: r.Files}
}

// Search returns the files whose name contains every word of query (all
// files if it is empty), at most limit (0 = the index's default), sorted
// by name, read linearizably.
func (p *Peer) Search(ctx context.Context, query string, limit int) ([]client.FileSummary, error) {
	r, err := p.client.Search(ctx, query, limit, client.ReadLinearizable)
	if err != nil {
		return nil, fmt.Errorf("search for %q: %w", query, err)
	}
	return r.Files, nil
}
