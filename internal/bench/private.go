package bench

import (
	"context"
	"fmt"
	"strings"

	"fileshare/client"
)

// allowChunk is how many info-hashes one allowlist change names, so that
// a request stays well under the RPC size limit.
const allowChunk = 1000

// SetupPrivate puts the tracker cluster that admin reaches in private
// mode for a benchmark over swarms info-hashes (SwarmHash(0) to
// SwarmHash(swarms-1), which it allows) and members new members, and
// returns the announce URLs to measure: for each member, each of urls
// (http://HOST:PORT/announce) with the member's passkey in the path,
// http://HOST:PORT/PASSKEY/announce. Worker i of a run uses URL
// i % len, so the workers spread over members and masters.
func SetupPrivate(ctx context.Context, admin *client.Client, urls []string, swarms, members int) ([]string, error) {
	if members < 1 {
		return nil, fmt.Errorf("a private benchmark needs at least one member")
	}
	for _, u := range urls {
		if !strings.HasPrefix(u, "http://") || !strings.HasSuffix(u, "/announce") {
			return nil, fmt.Errorf("announce URL %s: a private benchmark runs over HTTP (http://HOST:PORT/announce)", u)
		}
	}
	for lo := 0; lo < swarms; lo += allowChunk {
		var hashes []string
		for i := lo; i < min(lo+allowChunk, swarms); i++ {
			h := SwarmHash(i)
			hashes = append(hashes, fmt.Sprintf("%x", h[:]))
		}
		if _, err := admin.TrackerPolicy(ctx, client.TrackerPolicyRequest{Allow: hashes}); err != nil {
			return nil, fmt.Errorf("allow the benchmark's swarms: %w", err)
		}
	}
	if err := admin.TrackerSetMode(ctx, client.TrackerModePrivate); err != nil {
		return nil, fmt.Errorf("set private mode: %w", err)
	}
	var out []string
	for i := range members {
		m, err := admin.TrackerUserAdd(ctx, fmt.Sprintf("bench%d", i+1))
		if err != nil {
			return nil, fmt.Errorf("add member bench%d: %w", i+1, err)
		}
		for _, u := range urls {
			out = append(out, strings.TrimSuffix(u, "/announce")+"/"+m.Passkey+"/announce")
		}
	}
	return out, nil
}
