package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"fileshare/client"
	"fileshare/master"
)

// newTrackerCmd is `fileshare tracker`: the replicated tracker policy
// (open or allowlist mode, allowed and denied info-hashes), changed through
// any master with admin credentials.
func newTrackerCmd(stdout io.Writer) *cobra.Command {
	f := &clusterFlags{}
	cmd := &cobra.Command{
		Use:   "tracker",
		Short: "Administer the BitTorrent tracker: open, allowlist or private mode, torrents, members and their books",
		Long: `Every master is a BitTorrent tracker (fileshare master --tracker-http,
--tracker-udp). By default it is open: it tracks any torrent except denied
ones. In allowlist mode it tracks only allowed torrents. In private mode it
tracks only allowed torrents, for members whose passkey is in the announce
URL, and keeps each member's upload and download books. The policy, the
members and the books are replicated: change them through any master; it
needs admin credentials.`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.masters, "masters", "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003", "cluster ports of the masters: HOST:PORT,...")
	pf.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&f.timeout, "timeout", 10*time.Second, "give up after this long")
	f.tls.add(pf, true, "of an admin (or a master), signed by the cluster CA")

	change := func(use, short string, build func(args []string) client.TrackerPolicyRequest, args cobra.PositionalArgs) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  args,
			RunE: f.run(func(ctx context.Context, c *client.Client, args []string) error {
				rep, err := c.TrackerPolicy(ctx, build(args))
				if err != nil {
					return err
				}
				return printTrackerPolicy(stdout, f.output, rep)
			}),
		}
	}
	allow := change("allow INFOHASH...", "Allow torrents (40 hex digits each); in allowlist mode only these are tracked",
		func(args []string) client.TrackerPolicyRequest { return client.TrackerPolicyRequest{Allow: args} }, cobra.MinimumNArgs(1))
	deny := change("deny INFOHASH...", "Deny torrents: their swarms are dropped and announces refused, in either mode",
		func(args []string) client.TrackerPolicyRequest { return client.TrackerPolicyRequest{Deny: args} }, cobra.MinimumNArgs(1))
	mode := change("mode open|allowlist|private", "Set the mode: open (every torrent but denied ones), allowlist (only allowed ones) or private (allowed ones, members' passkeys)",
		func(args []string) client.TrackerPolicyRequest { return client.TrackerPolicyRequest{Mode: args[0]} }, cobra.ExactArgs(1))
	mode.ValidArgs = []string{"open", "allowlist", "private"}
	list := &cobra.Command{
		Use:   "list",
		Short: "Show the mode, the allowed and denied torrents, and swarm counts",
		Args:  cobra.NoArgs,
		RunE: f.run(func(ctx context.Context, c *client.Client, _ []string) error {
			rep, err := c.TrackerList(ctx, client.ReadLinearizable)
			if err != nil {
				return err
			}
			return printTrackerPolicy(stdout, f.output, rep)
		}),
	}
	cmd.AddCommand(allow, deny, mode, list)
	cmd.AddCommand(newTrackerPrivateCmds(stdout, f)...) // trackerprivate.go
	return cmd
}

func printTrackerPolicy(w io.Writer, output string, rep client.TrackerPolicyReply) error {
	if output == "json" {
		type out struct {
			Mode   string   `json:"mode"`
			Allow  []string `json:"allow"`
			Deny   []string `json:"deny"`
			Swarms int      `json:"swarms"`
			Peers  int      `json:"peers"`
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out{rep.Mode, nonNil(rep.Allow), nonNil(rep.Deny), rep.Swarms, rep.Peers})
	}
	fmt.Fprintf(w, "mode:   %s\nswarms: %d (%d peers)\n", rep.Mode, rep.Swarms, rep.Peers)
	fmt.Fprintf(w, "allowed (%d):\n", len(rep.Allow))
	for _, h := range rep.Allow {
		fmt.Fprintf(w, "  %s\n", h)
	}
	fmt.Fprintf(w, "denied (%d):\n", len(rep.Deny))
	for _, h := range rep.Deny {
		fmt.Fprintf(w, "  %s\n", h)
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// addTrackerFlags adds the master's BitTorrent tracker flags, their
// defaults from def (master.DefaultTrackerConfig).
func addTrackerFlags(f *pflag.FlagSet, t *master.TrackerConfig, def master.TrackerConfig) {
	f.StringVar(&t.HTTP, "tracker-http", "", "host:port of the HTTP BitTorrent tracker (announce URL http://HOST:PORT/announce); empty: off")
	f.StringVar(&t.UDP, "tracker-udp", "", "host:port of the UDP BitTorrent tracker (announce URL udp://HOST:PORT/announce); empty: off")
	f.DurationVar(&t.Interval, "tracker-interval", def.Interval, "re-announce interval sent to BitTorrent clients")
	f.DurationVar(&t.PeerLifetime, "tracker-peer-lifetime", def.PeerLifetime, "how long a swarm entry lives without a re-announce (0: 2 × --tracker-interval + 2m)")
	f.IntVar(&t.MaxConnsPerIP, "tracker-http-max-conns-per-ip", def.MaxConnsPerIP, "most HTTP tracker connections one source IP may hold at once")
	f.IntVar(&t.MaxNumWant, "tracker-max-numwant", def.MaxNumWant, "most peers one announce returns")
	f.IntVar(&t.MaxPeers, "tracker-max-peers", def.MaxPeers, "most swarm entries in the whole index")
	f.IntVar(&t.MaxSwarms, "tracker-max-swarms", def.MaxSwarms, "most swarms in the whole index (a swarm with a completed count outlives its peers)")
	f.IntVar(&t.MaxPeersPerIP, "tracker-max-peers-per-ip", def.MaxPeersPerIP, "most swarm entries from one IPv4 or IPv6 address")
	f.IntVar(&t.MaxPeersPer64, "tracker-max-peers-per-64", def.MaxPeersPer64, "most swarm entries from one IPv6 /64 (0: 2 × --tracker-max-peers-per-ip)")
	f.IntVar(&t.MaxPeersPer48, "tracker-max-peers-per-48", def.MaxPeersPer48, "most swarm entries from one IPv6 /48 (0: 4 × --tracker-max-peers-per-ip)")
	f.DurationVar(&t.EmptySwarmLifetime, "tracker-empty-swarm-lifetime", def.EmptySwarmLifetime, "how long a swarm kept for its completed count outlives its last peer")
	f.Int64Var(&t.MaxRate, "tracker-max-rate", def.MaxRate, "private tracker: fastest a member's reported counters may grow, in bytes per second; faster growth is clamped and counted suspicious")
}
