package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"fileshare/master"
	"fileshare/peer"
)

// addPeerNATFlags registers the NAT-traversal flags of 'fileshare peer',
// with the library's defaults.
func addPeerNATFlags(f *pflag.FlagSet, cfg *peer.Config, def peer.Config) {
	f.BoolVar(&cfg.Relay, "relay", def.Relay, "relay (end-to-end encrypted) traffic for peers behind NATs that cannot connect otherwise, while the masters can reach this peer")
	f.DurationVar(&cfg.NATInterval, "nat-interval", def.NATInterval, "how often to ask a master which address this peer appears from and whether it can be dialled back")
}

// addMasterNATFlags registers the NAT-traversal flags of 'fileshare
// master', with the library's defaults.
func addMasterNATFlags(f *pflag.FlagSet, cfg *master.Config, def master.Config) {
	f.IntVar(&cfg.RelayBudget, "relay-budget", def.RelayBudget, "relay circuits this master carries at once for peers that cannot connect otherwise (0: none)")
}

// pathsText says how the holders were reached, as " via direct 2,
// relay 1", or "" when nothing is known yet.
func pathsText(paths map[string]int) string {
	if len(paths) == 0 {
		return ""
	}
	names := make([]string, 0, len(paths))
	for p := range paths {
		names = append(names, p)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, p := range names {
		parts = append(parts, fmt.Sprintf("%s %d", p, paths[p]))
	}
	return " via " + strings.Join(parts, ", ")
}
