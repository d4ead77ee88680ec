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

// searchResult is one file in `search -o json`.
type searchResult struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	PieceSize int64  `json:"piece_size"`
	Holders   int    `json:"holders"`
}

func newSearchCmd(_ *globalFlags, stdout io.Writer) *cobra.Command {
	var masters, output, read string
	var limit int
	var timeout time.Duration
	var tf tlsFlags
	cmd := &cobra.Command{
		Use:   "search [WORDS...] --masters ADDR,...",
		Short: "Find files in the index whose name contains every word",
		Long: `Search the index for files whose name contains every word (case does not
matter); with no words, list every file. Prints the ID, name, size and number
of holders of each; fetch one with 'fileshare get ID' or 'fileshare get NAME'.`,
		Example: `  fileshare search holiday 2024 --masters 127.0.0.1:7001,127.0.0.1:7002
  fileshare search -o json --masters 127.0.0.1:7001`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q: use table or json", output)
			}
			level, err := client.ParseReadLevel(read)
			if err != nil {
				return fmt.Errorf("--read: %w", err)
			}
			creds, err := tf.load()
			if err != nil {
				return err
			}
			c, err := client.New(client.Config{Masters: splitList(masters), TLS: creds})
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			query := strings.Join(args, " ")
			r, err := c.Search(ctx, query, limit, level)
			if err != nil {
				return fmt.Errorf("search: %w; check --masters, that the masters are running, and --trusted-ca-file if they run with TLS", err)
			}
			return printFiles(stdout, output, query, r.Files)
		},
	}
	f := cmd.Flags()
	f.StringVar(&masters, "masters", defaultMasters, "cluster ports of the masters: HOST:PORT,...")
	f.StringVarP(&output, "output", "o", "table", "output format: table or json")
	f.IntVar(&limit, "limit", 100, "most files to list")
	f.StringVar(&read, "read", "linearizable", "read consistency: stale, leader or linearizable")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "give up after this long")
	tf.add(f, false, "")
	return cmd
}

func printFiles(w io.Writer, format, query string, files []client.FileSummary) error {
	if format == "json" {
		out := make([]searchResult, 0, len(files))
		for _, f := range files {
			out = append(out, searchResult{ID: f.ID, Name: f.Name, Size: f.Size, PieceSize: f.PieceSize, Holders: f.Holders})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(files) == 0 {
		_, err := fmt.Fprintf(w, "no file matches %q\n", query)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSIZE\tHOLDERS")
	for _, f := range files {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", f.ID, printable(f.Name), humanBytes(f.Size), f.Holders)
	}
	return tw.Flush()
}

// humanBytes formats n bytes with a binary unit: "512 B", "1.5 KiB", "64.0 MiB".
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
