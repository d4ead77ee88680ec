package peer

import (
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
//     name, as any of its holders registered it; if exactly one file has
//     that name, that file.
//
// Every holder's name counts, not only the one search shows, so nobody
// can make Resolve pick their file by renaming another: registering a
// known file under another name does not take the name away from it. A
// name that only part-matches is never enough.
//
// It returns ErrFileNotFound if nothing matches, and an *AmbiguousError
// (matching ErrAmbiguous) listing the candidates by ID if several files
// have the name, or if files only contain it.
func Resolve(ctx context.Context, c *client.Client, ref string) (client.FileSummary, error) {
	if fsm.FileID(ref).Validate() == nil {
		r, err := c.Lookup(ctx, ref, client.ReadLinearizable)
		if err != nil {
			return client.FileSummary{}, fmt.Errorf("look up %s: %w", ref, err)
		}
		if !r.Found {
			return client.FileSummary{}, fmt.Errorf("%w: %s", ErrFileNotFound, ref)
		}
		return r.File, nil
	}
	r, err := c.Search(ctx, ref, resolveLimit, client.ReadLinearizable)
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
		l, err := c.Lookup(ctx, f.ID, client.ReadLinearizable)
		if err != nil {
			return client.FileSummary{}, fmt.Errorf("look up %s: %w", f.ID, err)
		}
		if slices.ContainsFunc(l.Holders, func(h client.HolderEntry) bool { return named(h.Name) }) {
			exact = append(exact, f)
		}
	}
	switch {
	case len(exact) == 1:
		return exact[0], nil
	case len(exact) > 1:
		return client.FileSummary{}, &AmbiguousError{Query: ref, Candidates: exact, Named: true}
	case len(r.Files) == 0:
		return client.FileSummary{}, fmt.Errorf("%w: nothing named like %q; try fileshare search", ErrFileNotFound, ref)
	}
	return client.FileSummary{}, &AmbiguousError{Query: ref, Candidates: r.Files}
}

// Resolve is Resolve with this peer's client.Client.
func (p *Peer) Resolve(ctx context.Context, ref string) (client.FileSummary, error) {
	return Resolve(ctx, p.client, ref)
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
