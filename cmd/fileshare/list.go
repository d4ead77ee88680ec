package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"fileshare/client"
	"fileshare/peer"
)

// readFlags are the flags of a command that only reads the index.
type readFlags struct {
	masters, output, read string
	timeout               time.Duration
	tls                   tlsFlags
}

func (f *readFlags) add(fl *pflag.FlagSet) {
	fl.StringVar(&f.masters, "masters", defaultMasters, "cluster ports of the masters: HOST:PORT,...")
	fl.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	fl.StringVar(&f.read, "read", "linearizable", "read consistency: stale, leader or linearizable")
	fl.DurationVar(&f.timeout, "timeout", 10*time.Second, "give up on a request after this long")
	f.tls.add(fl, false, "")
}

// connect checks the flags and returns a client for the masters (closed
// by the caller) and the read level.
func (f *readFlags) connect() (*client.Client, client.ReadLevel, error) {
	if f.output != "table" && f.output != "json" {
		return nil, "", fmt.Errorf("-o %q: use table or json", f.output)
	}
	level, err := client.ParseReadLevel(f.read)
	if err != nil {
		return nil, "", fmt.Errorf("--read: %w", err)
	}
	creds, err := f.tls.load()
	if err != nil {
		return nil, "", err
	}
	c, err := client.New(client.Config{Masters: splitList(f.masters), TLS: creds})
	if err != nil {
		return nil, "", err
	}
	return c, level, nil
}

// run connects and calls body with the client and a context that ends
// after --timeout.
func (f *readFlags) run(cmd *cobra.Command, body func(ctx context.Context, c *client.Client, level client.ReadLevel) error) error {
	c, level, err := f.connect()
	if err != nil {
		return err
	}
	return callWithin(cmd.Context(), c, f.timeout, func(ctx context.Context) error { return body(ctx, c, level) })
}

// unreachable adds what to check to an error talking to the masters.
func unreachable(what string, err error) error {
	return fmt.Errorf("%s: %w; check --masters, that the masters are running, and --trusted-ca-file if they run with TLS", what, err)
}

// peerResult is one peer in `peers -o json`.
type peerResult struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	JoinedAt string `json:"joined_at"` // RFC 3339, UTC
	Files    int    `json:"files"`
}

func newPeersCmd(stdout io.Writer) *cobra.Command {
	f := &readFlags{}
	cmd := &cobra.Command{
		Use:   "peers --masters ADDR,...",
		Short: "List the peers in the index: ID, address, when each joined, how many files",
		Long: `List every peer that has joined the index, sorted by ID: its ID (derived
from its key), the address it serves pieces on, when it first joined, and how
many files it holds. A peer leaves the list when it leaves the index or stops
heartbeating for longer than its lease.`,
		Example: `  fileshare peers --masters 127.0.0.1:7001,127.0.0.1:7002 --trusted-ca-file /tmp/fileshare/tls/ca.pem
  fileshare peers -o json --masters 127.0.0.1:7001 --trusted-ca-file /tmp/fileshare/tls/ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd, func(ctx context.Context, c *client.Client, level client.ReadLevel) error {
				r, err := c.Peers(ctx, level)
				if err != nil {
					return unreachable("list peers", err)
				}
				return printPeers(stdout, f.output, r.Peers)
			})
		},
	}
	f.add(cmd.Flags())
	return cmd
}

func printPeers(w io.Writer, format string, peers []client.PeerSummary) error {
	joined := func(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339) }
	if format == "json" {
		out := make([]peerResult, len(peers))
		for i, p := range peers {
			out[i] = peerResult{ID: p.ID, Addr: p.Addr, JoinedAt: joined(p.JoinedAt), Files: p.Files}
		}
		return emit(w, "json", out, "")
	}
	if len(peers) == 0 {
		_, err := fmt.Fprintln(w, "no peer has joined the index; start one with 'fileshare peer'")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tJOINED\tFILES")
	for _, p := range peers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", p.ID, printable(p.Addr), joined(p.JoinedAt), p.Files)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, counted(len(peers), "peer"))
	return err
}

// holdersResult is the output of `holders -o json`.
type holdersResult struct {
	File    searchResult   `json:"file"`
	Holders []holderResult `json:"holders"`
}

// holderResult is one holder in `holders -o json`.
type holderResult struct {
	PeerID string `json:"peer_id"`
	Addr   string `json:"addr"`
	Name   string `json:"name"` // what this holder calls the file
}

func newHoldersCmd(stdout, stderr io.Writer) *cobra.Command {
	f := &readFlags{}
	cmd := &cobra.Command{
		Use:   "holders ID-or-NAME --masters ADDR,...",
		Short: "List the peers that hold one file, and the name each gives it",
		Long: `List the holders of one file: each one's peer ID, the address it serves
pieces on, and the name it registered the file under. Name the file as for
'fileshare get': its ID, the first 8 or more digits of its ID, or a name that
only one file has. A file with more than 200 holders lists a random 200 of
them and says so.`,
		Example: `  fileshare holders holiday.mp4 --masters 127.0.0.1:7001 --trusted-ca-file /tmp/fileshare/tls/ca.pem
  fileshare holders 3f2a9c01 -o json --masters 127.0.0.1:7001 --trusted-ca-file /tmp/fileshare/tls/ca.pem`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.run(cmd, func(ctx context.Context, c *client.Client, level client.ReadLevel) error {
				return runHolders(ctx, c, level, f.output, args[0], stdout, stderr)
			})
		},
	}
	f.add(cmd.Flags())
	return cmd
}

func runHolders(ctx context.Context, c *client.Client, level client.ReadLevel, format, ref string, stdout, stderr io.Writer) error {
	file, err := peer.ResolveAt(ctx, c, ref, level)
	var amb *peer.AmbiguousError
	switch {
	case errors.As(err, &amb):
		explainAmbiguous(stderr, ref, amb)
		return &exitCode{code: 1}
	case errors.Is(err, peer.ErrFileNotFound):
		return err
	case err != nil:
		return unreachable("find the file", err)
	}
	r, err := c.Lookup(ctx, file.ID, level)
	if err != nil {
		return unreachable("look up "+file.ID, err)
	}
	if !r.Found {
		return fmt.Errorf("%w: %s (%s) left the index just now", peer.ErrFileNotFound, file.ID, printable(file.Name))
	}
	f := r.File
	if format == "json" {
		out := holdersResult{
			File:    searchResult{ID: f.ID, Name: f.Name, Size: f.Size, PieceSize: f.PieceSize, Holders: f.Holders},
			Holders: make([]holderResult, len(r.Holders)),
		}
		for i, h := range r.Holders {
			out.Holders[i] = holderResult{PeerID: h.PeerID, Addr: h.Addr, Name: h.Name}
		}
		return emit(stdout, "json", out, "")
	}
	fmt.Fprintf(stdout, "%s (%s)\n  id %s\n", printable(f.Name), humanBytes(f.Size), f.ID)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tADDRESS\tNAME")
	for _, h := range r.Holders {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", h.PeerID, printable(h.Addr), printable(h.Name))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Holders) < f.Holders {
		_, err = fmt.Fprintf(stdout, "showing a random %s of %s\n", withCommas(len(r.Holders)), counted(f.Holders, "holder"))
	} else {
		_, err = fmt.Fprintln(stdout, counted(len(r.Holders), "holder"))
	}
	return err
}

// explainAmbiguous tells the user why ref did not single out one file,
// and lists the candidates by ID: for get and holders alike.
func explainAmbiguous(w io.Writer, ref string, amb *peer.AmbiguousError) {
	switch {
	case amb.Named:
		fmt.Fprintf(w, "%d files are named %q; give the ID (or its first 8 or more digits) of the one you want:\n", len(amb.Candidates), printable(ref))
	case amb.Prefix:
		fmt.Fprintf(w, "%q fits several files, by name or as the start of an ID; give the full name, or more of the ID, of the one you want:\n", printable(ref))
	default:
		fmt.Fprintf(w, "no file is named %q, but these contain it; give the full name or the ID of the one you want:\n", printable(ref))
	}
	printFiles(w, "table", ref, amb.Candidates)
}
