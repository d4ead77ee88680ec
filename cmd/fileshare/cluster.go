package main

import (
	"context"
	"encoding/json"
	"fileshare/client"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

type clusterFlags struct {
	masters string
	output  string
	timeout time.Duration
	tls     tlsFlags
}

func (f *clusterFlags) client() (*client.Client, error) {
	if f.output != "table" && f.output != "json" {
		return nil, fmt.Errorf("-o %q: use table or json", f.output)
	}
	creds, err := f.tls.load()
	if err != nil {
		return nil, err
	}
	return client.New(client.Config{Masters: splitList(f.masters), TLS: creds})
}

// run wraps a cluster subcommand: it checks the flags, connects to
// --masters, bounds the call by --timeout, and closes the client after.
func (f *clusterFlags) run(body func(ctx context.Context, c *client.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := f.client()
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
		defer cancel()
		return body(ctx, c, args)
	}
}

func newClusterCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	f := &clusterFlags{}
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Inspect and administer a SwarmMaster cluster",
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.masters, "masters", "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003", "cluster ports of the masters: HOST:PORT,...")
	pf.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&f.timeout, "timeout", 10*time.Second, "give up after this long")
	f.tls.add(pf, true, "of an admin (or a master), signed by the cluster CA; needed to change the cluster")

	status := &cobra.Command{
		Use:   "status",
		Short: "Show every master's view: state, leader, term, indexes, members, digest",
		Args:  cobra.NoArgs,
		RunE: f.run(func(ctx context.Context, c *client.Client, _ []string) error {
			sts, errs := c.ClusterStatus(ctx)
			return printStatus(stdout, f.output, c.Masters(), sts, errs)
		}),
	}
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a master from the cluster",
		Args:  cobra.ExactArgs(1),
		RunE: f.run(func(ctx context.Context, c *client.Client, args []string) error {
			if err := c.RemoveMember(ctx, args[0]); err != nil {
				return fmt.Errorf("remove %s: %w", args[0], err)
			}
			return emit(stdout, f.output, map[string]string{"removed": args[0]}, fmt.Sprintf("removed %s from the cluster\n", args[0]))
		}),
	}
	transfer := &cobra.Command{
		Use:   "transfer-leader [ID]",
		Short: "Hand leadership to ID, or to any up-to-date master",
		Args:  cobra.MaximumNArgs(1),
		RunE: f.run(func(ctx context.Context, c *client.Client, args []string) error {
			target := ""
			if len(args) == 1 {
				target = args[0]
			}
			out, err := c.TransferLeader(ctx, target)
			if err != nil {
				return fmt.Errorf("transfer leadership: %w", err)
			}
			return emit(stdout, f.output, out, fmt.Sprintf("leader is now %s at %s\n", out.LeaderID, out.LeaderAddr))
		}),
	}
	snapshot := &cobra.Command{
		Use:   "snapshot",
		Short: "Snapshot the index on every master in --masters now (e.g. before a backup)",
		Args:  cobra.NoArgs,
		RunE: f.run(func(ctx context.Context, c *client.Client, _ []string) error {
			type result struct {
				Master string `json:"master"`
				Index  uint64 `json:"index,omitempty"`
				Millis int64  `json:"duration_ms,omitempty"`
				Error  string `json:"error,omitempty"`
			}
			var out []result
			var text strings.Builder
			failed := 0
			for _, addr := range c.Masters() {
				r, err := c.Snapshot(ctx, addr)
				if err != nil {
					failed++
					out = append(out, result{Master: addr, Error: err.Error()})
					fmt.Fprintf(&text, "%s: %v\n", addr, err)
					continue
				}
				out = append(out, result{Master: addr, Index: r.Index, Millis: r.DurationMillis})
				fmt.Fprintf(&text, "%s: snapshot at index %d in %d ms\n", addr, r.Index, r.DurationMillis)
			}
			if err := emit(stdout, f.output, out, text.String()); err != nil {
				return err
			}
			if failed == len(out) {
				return &exitCode{code: 1, msg: "no master took a snapshot"}
			}
			return nil
		}),
	}
	cmd.AddCommand(status, remove, transfer, snapshot)
	return cmd
}

func emit(w io.Writer, format string, v any, text string) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	_, err := io.WriteString(w, text)
	return err
}

// statusEntry is one master's answer in `cluster status -o json`.
type statusEntry struct {
	Master string         `json:"master"`
	Status *client.Status `json:"status,omitempty"`
	Error  string         `json:"error,omitempty"`
}

func printStatus(w io.Writer, format string, masters []string, sts []client.Status, errs []error) error {
	answered := 0
	for _, e := range errs {
		if e == nil {
			answered++
		}
	}
	if format == "json" {
		out := make([]statusEntry, len(masters))
		for i := range masters {
			out[i].Master = masters[i]
			if errs[i] != nil {
				out[i].Error = errs[i].Error()
			} else {
				out[i].Status = &sts[i]
			}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "MASTER\tID\tSTATE\tLEADER\tTERM\tCOMMIT\tAPPLIED\tPEERS\tFILES\tDIGEST\tREADY")
		for i, addr := range masters {
			if errs[i] != nil {
				fmt.Fprintf(tw, "%s\t-\tunreachable\t-\t-\t-\t-\t-\t-\t-\t-\n", addr)
				continue
			}
			s := sts[i]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%v\n", addr, s.ID, strings.ToLower(s.State), s.LeaderID, s.Term, s.CommitIndex, s.AppliedIndex, s.Peers, s.Files, short(s.Digest), s.Ready)
		}
		tw.Flush()
		for i := range masters {
			if errs[i] == nil {
				fmt.Fprintf(w, "\nmembers (as %s sees them):\n", sts[i].ID)
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "  ID\tADDR\tSUFFRAGE\tLEADER\tLAST CONTACT")
				for _, m := range sts[i].Members {
					fmt.Fprintf(tw, "  %s\t%s\t%s\t%v\t%s\n", m.ID, m.Addr, strings.ToLower(m.Suffrage), m.Leader, lastContact(m.ID, sts, errs))
				}
				tw.Flush()
				break
			}
		}
	}
	if answered == 0 {
		return &exitCode{code: 1, msg: fmt.Sprintf("no master answered at %s: %v; check --masters, that the masters are running, and --trusted-ca-file if they run with TLS", strings.Join(masters, ","), errs[0])}
	}
	return nil
}

// lastContact is how long ago member id heard from the leader, as that
// member itself reported it.
func lastContact(id string, sts []client.Status, errs []error) string {
	for i, s := range sts {
		if errs[i] != nil || s.ID != id {
			continue
		}
		for _, m := range s.Members {
			if m.ID == id {
				switch {
				case m.LastContactMillis < 0:
					return "never"
				case m.Leader:
					return "is leader"
				}
				return fmt.Sprintf("%d ms ago", m.LastContactMillis)
			}
		}
	}
	return "unknown"
}

func short(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}
