package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"fileshare/client"
	"fileshare/peer"
	"fileshare/transport"
)

type getFlags struct {
	masters   string
	out       string
	seed      bool
	dataDir   string
	listen    string
	advertise string
	rate      string
	stall     time.Duration
	output    string
	read      string
	tls       tlsFlags
}

func newGetCmd(g *globalFlags, stdout, stderr io.Writer) *cobra.Command {
	f := &getFlags{}
	cmd := &cobra.Command{
		Use:   "get ID-or-NAME --masters ADDR,... [--out PATH|-] [--seed]",
		Short: "Download a file from every peer that holds it, verifying each piece",
		Long: `Download a file by its ID or by a name that identifies one file (run
'fileshare search' to find it). The file comes from all its holders at once;
every piece is checked against the file's ID (its Merkle root) before it is written,
and a holder that sends a bad piece is dropped.

The file is written to --out (default: its name in the current folder; if
--out is a folder, its name in that folder). While it downloads, the data is
in OUT.fileshare-partial and the list of verified pieces in
OUT.fileshare-resume: if get is interrupted or killed, run the same command
again and it continues from the verified pieces.

With --out -, the file's bytes go to stdout: get downloads it into the data
dir first, and writes it out only once every piece is verified (so nothing
unverified ever reaches stdout), then deletes its copy. Progress and
messages always go to stderr, so stdout carries only data: the file with
--out -, the summary with -o json.

The index is read linearizably by default, which needs a majority of the
masters. If most masters are down but the holders are not, --read stale
asks any one master that answers: its list of holders may be out of date,
which costs at most a failed connection to a holder that has gone; every
piece is still verified against the file's ID.

get runs as a temporary peer in a temporary --data-dir. With --seed, once the
file is complete it registers as a holder and serves the file until SIGINT or
SIGTERM, then leaves the index.`,
		Example: `  fileshare get holiday.mp4 --masters 127.0.0.1:7001,127.0.0.1:7002 --out ~/Videos/
  fileshare get 3f2a…e9 --masters 127.0.0.1:7001 --out /tmp/file --limit-rate 10MiB
  fileshare get notes.txt --masters 127.0.0.1:7001 --out - | less
  fileshare get holiday.mp4 --masters 127.0.0.1:7003 --read stale`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runGet(cmd, g, f, args[0], stdout, stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.masters, "masters", defaultMasters, "cluster ports of the masters: HOST:PORT,...")
	fl.StringVar(&f.out, "out", "", "where to save the file, a folder to save it in, or - for stdout (default: its name, here)")
	fl.BoolVar(&f.seed, "seed", false, "after the download, serve the file to other peers until interrupted")
	fl.StringVar(&f.dataDir, "data-dir", "", "peer data dir (default: a temporary one, removed at exit)")
	fl.StringVar(&f.listen, "listen", "", "host:port to serve pieces on with --seed (default: any free port)")
	fl.StringVar(&f.advertise, "advertise", "", "address other peers dial with --seed (default: --listen, or the local IP routed to the first master)")
	fl.StringVar(&f.rate, "limit-rate", "", "cap the download rate, e.g. 10MiB or 500KiB (per second)")
	fl.DurationVar(&f.stall, "stall-timeout", 30*time.Second, "give up when no piece arrives for this long")
	fl.StringVarP(&f.output, "output", "o", "table", "output format: table (progress and a summary, on stderr) or json (the summary only, on stdout)")
	fl.StringVar(&f.read, "read", "linearizable", "read consistency of the index: stale (any one master; works without a majority), leader or linearizable")
	f.tls.add(fl, false, "")
	return cmd
}

// toStdout is the --out value that sends the file to stdout.
const toStdout = "-"

func runGet(cmd *cobra.Command, g *globalFlags, f *getFlags, ref string, stdout, stderr io.Writer) error {
	switch f.output {
	case "text": // the name before table; still accepted
		f.output = "table"
	case "table", "json":
	default:
		return fmt.Errorf("-o %q: use table or json", f.output)
	}
	if f.out == toStdout && f.output == "json" {
		return errors.New("--out - and -o json would both write to stdout; drop one of them")
	}
	level, err := client.ParseReadLevel(f.read)
	if err != nil {
		return fmt.Errorf("--read: %w", err)
	}
	rate, err := parseBytes(f.rate)
	if err != nil {
		return fmt.Errorf("--limit-rate: %w", err)
	}
	// Library logs would tear the progress bar: warnings only, unless
	// the user asked for more.
	if !cmd.Flags().Changed("log-level") {
		g.logLevel = "warn"
	}
	logger, err := g.logger(stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dataDir := f.dataDir
	if dataDir == "" {
		if dataDir, err = os.MkdirTemp("", "fileshare-get-*"); err != nil {
			return fmt.Errorf("create a temporary data dir: %w; pass --data-dir", err)
		}
		defer os.RemoveAll(dataDir)
	}
	ca, err := f.tls.load()
	if err != nil {
		return err
	}
	cfg := peer.Config{Masters: splitList(f.masters), CA: ca, DataDir: dataDir, Listen: f.listen, Advertise: f.advertise, Logger: logger}
	if f.seed {
		cfg.ShareDir = filepath.Join(dataDir, "seed")
	}
	p, err := peer.New(cfg)
	if err != nil {
		return err
	}
	defer p.Close()

	rctx, cancel := context.WithTimeout(ctx, f.stall)
	file, err := peer.ResolveAt(rctx, p.Client(), ref, level)
	cancel()
	var amb *peer.AmbiguousError
	if errors.As(err, &amb) {
		explainAmbiguous(stderr, ref, amb)
		return &exitCode{code: 1}
	}
	if err != nil && !errors.Is(err, peer.ErrFileNotFound) {
		return withClusterHint(err, level)
	}
	if err != nil {
		return err
	}
	var dest string
	if f.out == toStdout {
		// Into the data dir, where a rerun with the same --data-dir resumes.
		dest = filepath.Join(dataDir, "stdout-"+file.ID)
		if err := os.Remove(dest); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove an earlier run's copy: %w", err)
		}
		defer os.Remove(dest)
	} else {
		if dest, err = destination(f.out, file.Name); err != nil {
			return err
		}
		if _, err := os.Lstat(dest); err == nil {
			return fmt.Errorf("%w: %s; remove it or choose another --out", peer.ErrDestinationExists, dest)
		}
	}

	text := f.output == "table"
	pp := newProgressPrinter(stderr, isTerminal(stderr))
	if text {
		to := printable(dest)
		if f.out == toStdout {
			to = "stdout, once verified (via " + to + ")"
		}
		pp.println("getting %s (%s, %s of %s) from %s\n  id %s\n  to %s",
			printable(file.Name), humanBytes(file.Size), plural(peer.PieceCount(file.Size, file.PieceSize), "piece"), humanBytes(file.PieceSize), plural(file.Holders, "holder"), file.ID, to)
	}
	opts := peer.DownloadOptions{Seed: f.seed, RateLimit: rate, StallTimeout: f.stall, ProgressInterval: 200 * time.Millisecond, ReadLevel: level}
	if text {
		opts.Progress = pp.update
	}
	res, err := p.Download(ctx, file.ID, dest, opts)
	if err != nil {
		pp.done(nil)
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			again := "run the same command again to resume"
			if f.out == toStdout && f.dataDir == "" {
				again = "with --out -, the verified pieces stay only in a --data-dir you give; pass one to be able to resume"
			}
			return fmt.Errorf("interrupted after %d of %d pieces; %s", res.Fetched+res.Resumed, res.Pieces, again)
		}
		if errors.Is(err, transport.ErrNoLeader) {
			return withClusterHint(err, level)
		}
		return err
	}
	pp.done(&res)
	if f.out == toStdout {
		if err := copyFileTo(stdout, dest); err != nil {
			return err
		}
	}
	if !text {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		pp.println("%s", summary(res, f.out == toStdout))
	}
	if f.seed {
		if text {
			pp.println("seeding %s as peer %s at %s until interrupted (Ctrl-C)", printable(file.Name), p.ID(), p.Addr())
		}
		<-ctx.Done()
	}
	lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.Leave(lctx)
}

// copyFileTo writes the file at path to w.
func copyFileTo(w io.Writer, path string) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	if _, err := io.Copy(w, src); err != nil {
		return fmt.Errorf("write the file to stdout: %w", err)
	}
	return nil
}

// withClusterHint adds to err, a failed read of the index at level, what
// the user can do about it. A read that needs a majority (leader or
// linearizable) and ran out of time, or found no leader, suggests --read
// stale, which any one master can serve.
func withClusterHint(err error, level client.ReadLevel) error {
	stale := ""
	if level != client.ReadStale {
		stale = "; if some masters are up but not a majority, retry with --read stale to read the index from any one of them (it may be out of date)"
	}
	if errors.Is(err, transport.ErrNoLeader) {
		return fmt.Errorf("%w; the cluster has no leader, so a majority of its masters is down or unreachable: start them again%s", err, stale)
	}
	if !transport.Retryable(err) && !errors.Is(err, context.DeadlineExceeded) {
		stale = "" // no master answered at all, or refused the request
	}
	return fmt.Errorf("%w; check --masters, that the masters are running, and --trusted-ca-file if they run with TLS%s", err, stale)
}

// destination resolves --out: empty means the file's base name here; an
// existing folder means the base name inside it.
func destination(out, name string) (string, error) {
	base := safeBase(path.Base(name))
	if out == "" {
		return filepath.Abs(base)
	}
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		return filepath.Abs(filepath.Join(out, base))
	}
	return filepath.Abs(out)
}

// summary describes a finished download in one line; toStdout says the
// file went to stdout, r.Path being only the copy it came through.
func summary(r peer.DownloadResult, toStdout bool) string {
	var b strings.Builder
	where := "saved " + printable(r.Path)
	if toStdout {
		where = "wrote to stdout"
	}
	rate := ""
	if s := r.Duration.Seconds(); s > 0 && r.Fetched > 0 {
		rate = fmt.Sprintf(" at %s/s", humanBytes(int64(float64(r.Size)*float64(r.Fetched)/float64(r.Pieces)/s)))
	}
	fmt.Fprintf(&b, "%s (%s) in %s%s: fetched %s, resumed %d", where, humanBytes(r.Size), r.Duration.Round(time.Millisecond), rate, plural(r.Fetched, "piece"), r.Resumed)
	if len(r.FromHolders) > 0 {
		ids := make([]string, 0, len(r.FromHolders))
		for id := range r.FromHolders {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		var parts []string
		for _, id := range ids {
			part := fmt.Sprintf("%s %d", id, r.FromHolders[id])
			if path := r.Paths[id]; path != "" {
				part += " " + path
			}
			parts = append(parts, part)
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	if len(r.Dropped) > 0 {
		fmt.Fprintf(&b, "; dropped for sending bad pieces: %s", strings.Join(r.Dropped, ", "))
	}
	return b.String()
}
