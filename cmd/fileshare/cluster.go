package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"fileshare/client"
	"fileshare/transport"
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
		return callWithin(cmd.Context(), c, f.timeout, func(ctx context.Context) error { return body(ctx, c, args) })
	}
}

// callWithin runs body with a context that ends after timeout (or with
// parent), then closes c, which it takes over from the caller; it
// returns body's error.
func callWithin(parent context.Context, c *client.Client, timeout time.Duration, body func(ctx context.Context) error) error {
	defer c.Close()
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	return body(ctx)
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
			sts, errs := statuses(ctx, c, c.Masters(), perMasterTimeout(f.timeout))
			return printStatus(stdout, f.output, c.Masters(), sts, errs)
		}),
	}
	var ready bool
	wait := &cobra.Command{
		Use:   "wait",
		Short: "Wait until every master in --masters answers (--ready: and a leader is known and every member is ready)",
		Long: `Wait until every master in --masters answers; with --ready, also until a
leader is known and every member of the cluster reports itself ready.
Exits 0 when so, or 1 at --timeout (default 60s here) saying what is missing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("timeout") {
				f.timeout = defaultWaitTimeout
			}
			return f.run(func(ctx context.Context, c *client.Client, _ []string) error {
				return waitCluster(ctx, stdout, f.output, c, ready, f.timeout)
			})(cmd, args)
		},
	}
	wait.Flags().BoolVar(&ready, "ready", false, "also wait for a leader and for every member to be ready")
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
			v := struct {
				LeaderID   string `json:"leader_id"`
				LeaderAddr string `json:"leader_addr"`
			}{out.LeaderID, out.LeaderAddr}
			return emit(stdout, f.output, v, fmt.Sprintf("leader is now %s at %s\n", out.LeaderID, out.LeaderAddr))
		}),
	}
	snapshot := &cobra.Command{
		Use:   "snapshot",
		Short: "Snapshot the index on every master in --masters now (e.g. before a backup)",
		Args:  cobra.NoArgs,
		RunE: f.run(func(ctx context.Context, c *client.Client, _ []string) error {
			type result struct {
				Master string `json:"master"`
				Index  uint64 `json:"index"`
				Millis int64  `json:"duration_ms"`
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
	cmd.AddCommand(status, wait, remove, transfer, snapshot, newBackupCmd(f, stdout), newRecoverCmd(stdout))
	cmd.AddCommand(newRevokeCmd(f, stdout))
	return cmd
}

// defaultWaitTimeout is `cluster wait`'s --timeout unless one is given:
// long enough for masters that were just started to elect a leader.
const defaultWaitTimeout = 60 * time.Second

// perMasterTimeout bounds the status call to one master within a command
// whose --timeout is total, so that one paused master costs at most this
// much: a third of total, at most 2 s.
func perMasterTimeout(total time.Duration) time.Duration {
	return min(total/3, 2*time.Second)
}

// errNoAnswer means a master accepted the connection but did not answer
// within the per-master timeout (it may be paused, overloaded or cut off).
type errNoAnswer struct{ within time.Duration }

func (e errNoAnswer) Error() string { return fmt.Sprintf("no answer within %v", e.within) }

// statuses asks each of addrs for its status in parallel, each bounded by
// per; a master that does not answer in time gets an errNoAnswer.
func statuses(ctx context.Context, c *client.Client, addrs []string, per time.Duration) ([]client.Status, []error) {
	sts := make([]client.Status, len(addrs))
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Go(func() {
			actx, cancel := context.WithTimeout(ctx, per)
			defer cancel()
			sts[i], errs[i] = c.Status(actx, addr)
			// The call may end by its own connect deadline a moment
			// before actx does: a timeout either way is no answer.
			var ne net.Error
			timedOut := actx.Err() != nil || errors.As(errs[i], &ne) && ne.Timeout()
			if errs[i] != nil && timedOut && ctx.Err() == nil {
				errs[i] = errNoAnswer{within: per}
			}
		})
	}
	wg.Wait()
	return sts, errs
}

// waitMaster is one master's line in `cluster wait -o json`.
type waitMaster struct {
	Master string `json:"master"`
	ID     string `json:"id,omitempty"`
	State  string `json:"state,omitempty"`
	Ready  bool   `json:"ready"`
	Error  string `json:"error,omitempty"`
}

// waitResult is `cluster wait -o json`'s output.
type waitResult struct {
	OK       bool         `json:"ok"`
	LeaderID string       `json:"leader_id,omitempty"`
	WaitedMs int64        `json:"waited_ms"`
	Masters  []waitMaster `json:"masters"`
	Missing  []string     `json:"missing,omitempty"`
}

// waitCluster polls the masters until every one in --masters answers and,
// with ready, a leader is known and every member (those in --masters and
// those the leader lists) reports Ready. It returns nil, or an exitCode
// saying what was missing when ctx ended. An address that is not a
// FileShare port ends the wait at once: waiting cannot fix it.
func waitCluster(ctx context.Context, w io.Writer, format string, c *client.Client, ready bool, total time.Duration) error {
	start := time.Now()
	per := min(perMasterTimeout(total), time.Second)
	for {
		res, fatal := checkCluster(ctx, c, ready, per)
		res.WaitedMs = time.Since(start).Milliseconds()
		done := res.OK || fatal != nil
		if !done {
			select {
			case <-ctx.Done():
				done = true
			case <-time.After(250 * time.Millisecond):
			}
		}
		if !done {
			continue
		}
		var text strings.Builder
		if res.OK {
			fmt.Fprintf(&text, "all %d masters answer", len(res.Masters))
			if ready {
				fmt.Fprintf(&text, "; leader %s; every member is ready", res.LeaderID)
			}
			fmt.Fprintf(&text, " (waited %d ms)\n", res.WaitedMs)
		}
		if err := emit(w, format, res, text.String()); err != nil {
			return err
		}
		switch {
		case fatal != nil:
			return fatal
		case !res.OK:
			return &exitCode{code: 1, msg: fmt.Sprintf("after %v: %s", total, strings.Join(res.Missing, "; "))}
		}
		return nil
	}
}

// checkCluster takes one look at the cluster for waitCluster. It returns
// an error only for a mistake that waiting cannot fix. With ready, the
// verdict is client.HealthProblems over the masters in --masters and
// every other member of the configuration, asked at its cluster address.
func checkCluster(ctx context.Context, c *client.Client, ready bool, per time.Duration) (waitResult, error) {
	addrs := c.Masters()
	sts, errs := statuses(ctx, c, addrs, per)
	res := waitResult{Masters: make([]waitMaster, len(addrs))}
	names := slices.Clone(addrs)
	var members []client.Member // the leader's configuration, or any master's
	for i, addr := range addrs {
		res.Masters[i].Master = addr
		if errs[i] != nil {
			if errors.Is(errs[i], transport.ErrNotFileShare) {
				return res, errs[i]
			}
			res.Masters[i].Error = errs[i].Error()
			if !ready {
				res.Missing = append(res.Missing, fmt.Sprintf("%s does not answer: %v", addr, errs[i]))
			}
			continue
		}
		s := sts[i]
		names[i] = fmt.Sprintf("%s (%s)", s.ID, addr)
		res.Masters[i].ID, res.Masters[i].State, res.Masters[i].Ready = s.ID, strings.ToLower(string(s.State)), s.Ready
		if s.LeaderID != "" && res.LeaderID == "" {
			res.LeaderID = s.LeaderID
		}
		if members == nil || s.ID == s.LeaderID {
			members = s.Members
		}
	}
	if ready {
		for _, m := range members {
			if m.Addr == "" || slices.ContainsFunc(sts, func(s client.Status) bool { return s.ID == m.ID }) {
				continue
			}
			st, err := statuses(ctx, c, []string{m.Addr}, per)
			names, sts, errs = append(names, fmt.Sprintf("member %s (%s)", m.ID, m.Addr)), append(sts, st[0]), append(errs, err[0])
		}
		res.Missing = client.HealthProblems(names, sts, errs)
	}
	res.OK = len(res.Missing) == 0
	return res, nil
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
				state := "unreachable"
				var na errNoAnswer
				if errors.As(errs[i], &na) {
					state = na.Error()
				}
				fmt.Fprintf(tw, "%s\t-\t%s\t-\t-\t-\t-\t-\t-\t-\t-\n", addr, state)
				continue
			}
			s := sts[i]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%v\n", addr, s.ID, strings.ToLower(string(s.State)), s.LeaderID, s.Term, s.CommitIndex, s.AppliedIndex, s.Peers, s.Files, short(s.Digest), s.Ready)
		}
		tw.Flush()
		for i, addr := range masters {
			if errs[i] != nil {
				fmt.Fprintf(w, "%s: %v\n", addr, errs[i])
			}
		}
		for i := range masters {
			if errs[i] == nil {
				fmt.Fprintf(w, "\nmembers (as %s sees them):\n", sts[i].ID)
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "  ID\tADDR\tSUFFRAGE\tLEADER\tLAST CONTACT")
				for _, m := range sts[i].Members {
					fmt.Fprintf(tw, "  %s\t%s\t%s\t%v\t%s\n", m.ID, m.Addr, strings.ToLower(string(m.Suffrage)), m.Leader, lastContact(m.ID, sts, errs))
				}
				tw.Flush()
				break
			}
		}
	}
	if answered == 0 {
		if errors.Is(errs[0], transport.ErrNotFileShare) {
			// The error says what is wrong; flagHint names the flag.
			return &exitCode{code: 1, msg: fmt.Sprintf("no master answered at %s: %v%s", strings.Join(masters, ","), errs[0], flagHint(errs[0]))}
		}
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
