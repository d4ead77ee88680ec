package peer

import (
	"context"
	"fmt"
	"path"

	"fileshare/client"
	"fileshare/fsm"
)

// resolveLimit is how many search results Resolve considers.
const resolveLimit = 100

// Resolve finds the one file a user means by ref, reading linearizably:
//
//   - a file ID (64 lowercase hex digits) is looked up directly;
//   - otherwise ref is a search query; if exactly one file's name, or the
//     last element of its name, equals ref, that file; else if the search
//     finds exactly one file, that file.
//
// It returns ErrFileNotFound if nothing matches, and an *AmbiguousError
// (matching ErrAmbiguous) listing the candidates if several do.
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
	var exact []client.FileSummary
	for _, f := range r.Files {
		if f.Name == ref || path.Base(f.Name) == ref {
			exact = append(exact, f)
		}
	}
	switch {
	case len(exact) == 1:
		return exact[0], nil
	case len(exact) > 1:
		return client.FileSummary{}, &AmbiguousError{Query: ref, Candidates: exact}
	case len(r.Files) == 1:
		return r.Files[0], nil
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
