package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"fileshare/client"
	"fileshare/fsm"
)

// newTrackerPrivateCmds are the private tracker's subcommands of
// `fileshare tracker`: members (user), per-torrent factors (torrent),
// client prefixes (clients) and the ledger feed (ledger). They share the
// tracker command's flags f.
func newTrackerPrivateCmds(stdout io.Writer, f *clusterFlags) []*cobra.Command {
	user := &cobra.Command{
		Use:   "user",
		Short: "Members of a private tracker: add, rotate, revoke, list, show",
		Long: `In private mode (fileshare tracker mode private) every announce must carry a
member's passkey, and the tracker keeps each member's books: credited upload
and download, completions and seed time, per torrent. Members are replicated:
manage them through any master with admin credentials.`,
	}
	var announceHost string
	member := func(use, short string, op func(*client.Client) func(context.Context, string) (client.TrackerMember, error), urls bool) *cobra.Command {
		cmd := &cobra.Command{
			Use:   use + " NAME",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: f.run(func(ctx context.Context, c *client.Client, args []string) error {
				m, err := op(c)(ctx, args[0])
				if err != nil {
					return memberError(args[0], err)
				}
				var forms []announceURL
				if urls {
					forms = announceURLs(ctx, c, f.timeout, announceHost, m.Passkey)
				}
				return printMember(stdout, f.output, m, forms)
			}),
		}
		if urls {
			cmd.Flags().StringVar(&announceHost, "announce-host", "", "host name to put in the announce URLs (default: each master's host as given in --masters)")
		}
		return cmd
	}
	add := member("add", "Add a member; prints its passkey and its announce URLs on every master",
		func(c *client.Client) func(context.Context, string) (client.TrackerMember, error) {
			return c.TrackerUserAdd
		}, true)
	rotate := member("rotate", "Give a member a new passkey; the old one is refused from now on",
		func(c *client.Client) func(context.Context, string) (client.TrackerMember, error) {
			return c.TrackerUserRotate
		}, true)
	revoke := member("revoke", "Revoke a member: its passkey is refused from now on (its books are kept)",
		func(c *client.Client) func(context.Context, string) (client.TrackerMember, error) {
			return c.TrackerUserRevoke
		}, false)
	list := &cobra.Command{
		Use:   "list",
		Short: "List the members with their totals",
		Args:  cobra.NoArgs,
		RunE: f.run(func(ctx context.Context, c *client.Client, _ []string) error {
			rep, err := c.TrackerUsers(ctx, client.ReadLinearizable)
			if err != nil {
				return err
			}
			return printMembers(stdout, f.output, rep.Members)
		}),
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a member's books: totals and one row per torrent",
		Args:  cobra.ExactArgs(1),
		RunE: f.run(func(ctx context.Context, c *client.Client, args []string) error {
			b, err := c.TrackerUserBooks(ctx, args[0], client.ReadLinearizable)
			if err != nil {
				return memberError(args[0], err)
			}
			return printBooks(stdout, f.output, b)
		}),
	}
	user.AddCommand(add, rotate, revoke, list, show)

	var upPct, downPct uint32
	torrent := &cobra.Command{Use: "torrent", Short: "Per-torrent settings of a private tracker"}
	set := &cobra.Command{
		Use:   "set INFOHASH",
		Short: "Set a torrent's upload and download factors in percent (100 normal, 0 freeleech, 200 double)",
		Long: `Set the factors applied to what members are credited on a torrent from now
on, in percent: --download-factor 0 is freeleech, --upload-factor 200 double
upload. A factor left out is set to 100.`,
		Args: cobra.ExactArgs(1),
		RunE: f.run(func(ctx context.Context, c *client.Client, args []string) error {
			if upPct > fsm.MaxFactorPct || downPct > fsm.MaxFactorPct {
				return fmt.Errorf("a factor is at most %d (percent)", fsm.MaxFactorPct)
			}
			rep, err := c.TrackerTorrentSet(ctx, args[0], upPct, downPct)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return writeJSON(stdout, rep)
			}
			fmt.Fprintf(stdout, "torrent %s: upload factor %d%%, download factor %d%%\n", rep.InfoHash, rep.UploadFactorPct, rep.DownloadFactorPct)
			return nil
		}),
	}
	set.Flags().Uint32Var(&upPct, "upload-factor", 100, "percent of uploaded bytes credited")
	set.Flags().Uint32Var(&downPct, "download-factor", 100, "percent of downloaded bytes credited")
	torrent.AddCommand(set)

	var allow, deny []string
	var clear bool
	clients := &cobra.Command{
		Use:   "clients --allow PREFIX... | --deny PREFIX... | --clear",
		Short: "Allow or deny BitTorrent clients by peer-ID prefix (-qB4, -TR3, -lt0D)",
		Long: `Replace the peer-ID prefix lists, which apply in every mode: an announce
whose peer_id starts with a denied prefix is refused; if any prefix is
allowed, an announce whose peer_id starts with none of them is refused too.
Both lists are replaced at once: give the whole of each. --clear empties both.`,
		Example: `  fileshare tracker clients --allow -qB4,-TR3,-lt0D --deny -lt0D1
  fileshare tracker clients --clear`,
		Args: cobra.NoArgs,
		RunE: f.run(func(ctx context.Context, c *client.Client, _ []string) error {
			if !clear && len(allow) == 0 && len(deny) == 0 {
				return errors.New("give --allow, --deny or both (they replace the lists), or --clear to empty them")
			}
			if clear && (len(allow) > 0 || len(deny) > 0) {
				return errors.New("--clear empties both lists; give it alone")
			}
			rep, err := c.TrackerClients(ctx, allow, deny)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return writeJSON(stdout, rep)
			}
			fmt.Fprintf(stdout, "allowed prefixes: %s\ndenied prefixes:  %s\n", listOrNone(rep.Allow), listOrNone(rep.Deny))
			return nil
		}),
	}
	clients.Flags().StringSliceVar(&allow, "allow", nil, "peer-ID prefixes allowed (comma-separated or repeated); none: every client not denied")
	clients.Flags().StringSliceVar(&deny, "deny", nil, "peer-ID prefixes refused (comma-separated or repeated)")
	clients.Flags().BoolVar(&clear, "clear", false, "empty both lists")

	var after string
	var limit int
	ledger := &cobra.Command{
		Use:   "ledger [--after CURSOR]",
		Short: "Print credited deltas in commit order, after a cursor (the ledger feed)",
		Long: `Print the credited deltas after CURSOR (INDEX.POS, or 0 for the oldest kept),
in commit order, then the cursor to pass next time: a site imports each
delta exactly once by storing that cursor with what it imported.`,
		Args: cobra.NoArgs,
		RunE: f.run(func(ctx context.Context, c *client.Client, _ []string) error {
			cur, err := client.ParseLedgerCursor(after)
			if err != nil {
				return err
			}
			rep, err := c.TrackerLedger(ctx, cur, limit, client.ReadLinearizable)
			if errors.Is(err, fsm.ErrLedgerGone) {
				return fmt.Errorf("%w: the ledger no longer holds deltas after %s; resynchronize totals from `fileshare tracker user list -o json` and continue with --after 0", err, cur)
			}
			if err != nil {
				return err
			}
			if f.output == "json" {
				return writeJSON(stdout, rep)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CURSOR\tTIME\tMEMBER\tINFOHASH\tUPLOADED\tDOWNLOADED\tSEED TIME\tCOMPLETED")
			for _, e := range rep.Entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%ds\t%v\n", e.Cursor, time.Unix(0, e.Time).UTC().Format(time.RFC3339), e.Member, e.InfoHash, e.Uploaded, e.Downloaded, e.SeedTimeS, e.Completed)
			}
			tw.Flush()
			fmt.Fprintf(stdout, "next: --after %s\n", rep.Next)
			return nil
		}),
	}
	ledger.Flags().StringVar(&after, "after", "0", "print deltas after this cursor (INDEX.POS from the last page's next)")
	ledger.Flags().IntVar(&limit, "limit", client.MaxLedgerPage, "most deltas to print")
	return []*cobra.Command{user, torrent, clients, ledger}
}

// memberError says what to do about a member error.
func memberError(name string, err error) error {
	switch {
	case errors.Is(err, fsm.ErrMemberExists):
		return fmt.Errorf("%w: %q is a member already; `fileshare tracker user rotate %s` gives it a new passkey", err, name, name)
	case errors.Is(err, fsm.ErrUnknownMember):
		return fmt.Errorf("%w: no member %q; `fileshare tracker user list` shows the members", err, name)
	}
	return err
}

// announceURL is one master's announce URLs for a passkey.
type announceURL struct {
	Master string   `json:"master"`
	URLs   []string `json:"urls,omitempty"`
	Error  string   `json:"error,omitempty"`
}

// announceURLs asks every master for its tracker addresses and returns the
// URL forms of passkey on each: HTTP /PASSKEY/announce and
// /announce/PASSKEY, and UDP /PASSKEY/announce (BEP 41).
func announceURLs(ctx context.Context, c *client.Client, timeout time.Duration, host, passkey string) []announceURL {
	addrs := c.Masters()
	sts, errs := statuses(ctx, c, addrs, perMasterTimeout(timeout))
	out := make([]announceURL, len(addrs))
	for i, addr := range addrs {
		out[i].Master = addr
		if errs[i] != nil {
			out[i].Error = errs[i].Error()
			continue
		}
		if a := sts[i].TrackerHTTP; a != "" {
			hp := publicHostPort(a, addr, host)
			out[i].URLs = append(out[i].URLs, "http://"+hp+"/"+passkey+"/announce", "http://"+hp+"/announce/"+passkey)
		}
		if a := sts[i].TrackerUDP; a != "" {
			out[i].URLs = append(out[i].URLs, "udp://"+publicHostPort(a, addr, host)+"/"+passkey+"/announce")
		}
		if len(out[i].URLs) == 0 {
			out[i].Error = "this master serves no tracker (start it with --tracker-http or --tracker-udp)"
		}
	}
	return out
}

// publicHostPort is the host:port clients dial for a tracker listening on
// listen: host if given, else listen's host unless it is unspecified
// (0.0.0.0, ::), in which case the host of the master's address as the
// user gave it.
func publicHostPort(listen, masterAddr, host string) string {
	lh, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if host == "" {
		host = lh
		if a, err := netip.ParseAddr(lh); lh == "" || err == nil && a.IsUnspecified() {
			host, _, _ = net.SplitHostPort(masterAddr)
		}
	}
	return net.JoinHostPort(host, port)
}

func printMember(w io.Writer, output string, m client.TrackerMember, urls []announceURL) error {
	if output == "json" {
		return writeJSON(w, struct {
			client.TrackerMember
			Announce []announceURL `json:"announce,omitempty"`
		}{m, urls})
	}
	state := "active"
	if m.Revoked {
		state = "revoked"
	}
	fmt.Fprintf(w, "member:  %s (%s)\npasskey: %s\n", m.Name, state, m.Passkey)
	if len(urls) > 0 {
		fmt.Fprintln(w, "announce URLs (put all in one tier of the torrent, BEP 12):")
		for _, u := range urls {
			if u.Error != "" {
				fmt.Fprintf(w, "  %s: no URLs: %s\n", u.Master, u.Error)
			}
			for _, s := range u.URLs {
				fmt.Fprintf(w, "  %s\n", s)
			}
		}
	}
	return nil
}

func printMembers(w io.Writer, output string, ms []client.TrackerBooks) error {
	if output == "json" {
		if ms == nil {
			ms = []client.TrackerBooks{}
		}
		return writeJSON(w, ms)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tUPLOADED\tDOWNLOADED\tCOMPLETED\tSEEDING\tLEECHING\tSEED TIME")
	for _, b := range ms {
		state := "active"
		if b.Revoked {
			state = "revoked"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%ds\n", b.Name, state, b.Uploaded, b.Downloaded, b.Completed, b.Seeding, b.Leeching, b.SeedTimeS)
	}
	return tw.Flush()
}

func printBooks(w io.Writer, output string, b client.TrackerBooks) error {
	if output == "json" {
		if b.Torrents == nil {
			b.Torrents = []client.TrackerBookRow{}
		}
		return writeJSON(w, b)
	}
	state := "active"
	if b.Revoked {
		state = "revoked"
	}
	fmt.Fprintf(w, "member:     %s (%s)\nuploaded:   %d bytes credited (%d counted)\ndownloaded: %d bytes credited (%d counted)\ncompleted:  %d\nseeding:    %d\nleeching:   %d\nseed time:  %ds\nsuspicious: %d\n",
		b.Name, state, b.Uploaded, b.RawUploaded, b.Downloaded, b.RawDownloaded, b.Completed, b.Seeding, b.Leeching, b.SeedTimeS, b.Suspicious)
	if len(b.Torrents) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INFOHASH\tUPLOADED\tDOWNLOADED\tCOMPLETED\tSEEDING\tLEECHING\tSEED TIME")
	for _, r := range b.Torrents {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%ds\n", r.InfoHash, r.Uploaded, r.Downloaded, r.Completed, r.Seeding, r.Leeching, r.SeedTimeS)
	}
	return tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, " ")
}
