package master

import (
	"context"

	"fileshare/fsm"
	"fileshare/tracker"
)

// Totals implements tracker.StatsBackend: the stats pages' counts, from
// this master's replica of the index (stale reads: every master that has
// applied the same log answers the same), and the announces this master's
// own front-ends answered.
func (b trackerBackend) Totals(context.Context) (tracker.Totals, error) {
	t := b.m.fsm.SwarmTotals()
	out := tracker.Totals{
		Mode:      t.Mode.String(),
		Torrents:  t.Torrents,
		Peers:     t.Peers,
		Seeders:   t.Seeders,
		Leechers:  t.Leechers,
		Completed: t.Completed,
	}
	hs, us := b.m.TrackerStats()
	if hs != nil {
		out.Announces += hs.Announces.Load()
	}
	if us != nil {
		out.Announces += us.Announces.Load()
	}
	return out, nil
}

// FullScrape implements tracker.StatsBackend. Only an open or allowlist
// tracker lists its swarms: in any stricter mode (private) which torrents
// exist is the members' business, so full scrape is refused.
func (b trackerBackend) FullScrape(_ context.Context, dst []tracker.ScrapeRow, max int) ([]tracker.ScrapeRow, error) {
	if mode := b.m.fsm.TrackerModeNow(); mode != fsm.TrackerOpen && mode != fsm.TrackerAllowlist {
		return dst, tracker.Refuse("full scrape is off on a private tracker; scrape by info_hash with your passkey")
	}
	ok := b.m.fsm.EachSwarmScrape(max, func(ih fsm.InfoHash, complete, incomplete, downloaded int) {
		dst = append(dst, tracker.ScrapeRow{InfoHash: tracker.InfoHash(ih),
			ScrapeEntry: tracker.ScrapeEntry{Complete: complete, Incomplete: incomplete, Downloaded: downloaded}})
	})
	if !ok {
		return dst, tracker.ErrFullScrapeTooLarge
	}
	return dst, nil
}
