package fsm

import "math"

// SwarmTotals are the tracker's counts over every swarm, as the stats
// pages show them.
type SwarmTotals struct {
	Mode      TrackerMode
	Torrents  int    // swarms held, including those with only a downloaded count
	Peers     int    // swarm records
	Seeders   int    // records that announced left=0
	Leechers  int    // the other records
	Completed uint64 // completed events counted, summed over the swarms held
}

// SwarmTotals sums the counts of every swarm. Everything it reads is
// replicated, so every master that has applied the same log returns the
// same totals. It scans like SilentSwarmPeers, holding the read lock for
// one shard (1/256 of the swarms) at a time, so a scan that overlaps an
// Apply may count some shards before it and others after; callers cache
// the result rather than scan per request.
func (f *FSM) SwarmTotals() SwarmTotals {
	var t SwarmTotals
	t.Mode = f.TrackerModeNow()
	for i := range nShards {
		f.mu.RLock()
		for _, sw := range f.st.swarms[i].m {
			t.Torrents++
			t.Peers += len(sw.recs)
			t.Leechers += int(sw.nLeech)
			if t.Completed+sw.downloaded >= t.Completed {
				t.Completed += sw.downloaded
			} else {
				t.Completed = math.MaxUint64
			}
		}
		f.mu.RUnlock()
	}
	t.Seeders = t.Peers - t.Leechers
	return t
}

// EachSwarmScrape calls fn with every swarm's scrape counts (as Scrape
// returns them), in no particular order, unless the index holds more than
// max swarms: then it stops, maybe after some calls, and returns false, so
// a caller bounds the memory a full scrape may take. fn runs under the
// read lock and must only copy what it is given. It scans like
// SwarmTotals.
func (f *FSM) EachSwarmScrape(max int, fn func(ih InfoHash, complete, incomplete, downloaded int)) bool {
	n := 0
	for i := range nShards {
		f.mu.RLock()
		if n += len(f.st.swarms[i].m); n > max {
			f.mu.RUnlock()
			return false
		}
		for ih, sw := range f.st.swarms[i].m {
			fn(ih, len(sw.recs)-int(sw.nLeech), int(sw.nLeech), int(min(sw.downloaded, math.MaxInt)))
		}
		f.mu.RUnlock()
	}
	return true
}
