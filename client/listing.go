package client

import "context"

// SearchPage returns one page of the files whose name contains every word
// of query (every file if query is empty), sorted by name, then ID, read
// at level ("" = linearizable). after is "" for the first page, or the
// Next of the previous reply to the same query; limit is the page size
// (0 = the index's default, capped at 10,000 by the master). The reply's
// Total counts every match and Next is "" on the last page. It blocks
// until a master answers or ctx ends, with Call's failover and errors; a
// cursor the master did not make fails with an error matching
// fsm.ErrInvalid.
func (c *Client) SearchPage(ctx context.Context, query, after string, limit int, level ReadLevel) (SearchReply, error) {
	var out SearchReply
	err := c.Call(ctx, MethodSearch, &SearchRequest{ReadHeader: ReadHeader{Level: level}, Query: query, Limit: limit, After: after}, &out)
	return out, err
}

// Find returns the files whose ID starts with prefix (8 to 64 lowercase
// hex digits), sorted by ID, at most limit of them (0 = 100), and in the
// reply's Total how many match in all, read at level ("" =
// linearizable). A malformed prefix fails with an error matching
// fsm.ErrInvalid. It blocks like Call.
func (c *Client) Find(ctx context.Context, prefix string, limit int, level ReadLevel) (FindReply, error) {
	var out FindReply
	err := c.Call(ctx, MethodFind, &FindRequest{ReadHeader: ReadHeader{Level: level}, Prefix: prefix, Limit: limit}, &out)
	return out, err
}
