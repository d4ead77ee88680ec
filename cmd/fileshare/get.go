package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"fileshare/peer"
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
	tls       tlsFlags
}

func newGetCmd(g *globalFlags, stdout, stderr io.Writer) *cobra.Command {
	f := &getFlags{}
	cmd := &cobra.Command{
		Use:   "get ID-or-NAME --masters ADDR,... [--out PATH] [--seed]",
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

get runs as a temporary peer in a temporary --data-dir. With --seed, once the
file is complete it registers as a holder and serves the file until SIGINT or
SIGTERM, then leaves the index.`,
		Example: `  fileshare get holiday.mp4 --masters 127.0.0.1:7001,127.0.0.1:7002 --out ~/Videos/
  fileshare get 3f2a…e9 --masters 127.0.0.1:7001 --out /tmp/file --limit-rate 10MiB`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runGet(cmd, g, f, args[0], stdout, stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.masters, "masters", defaultMasters, "cluster ports of the masters: HOST:PORT,...")
	fl.StringVar(&f.out, "out", "", "where to save the file, or a folder to save it in (default: its name, here)")
	fl.BoolVar(&f.seed, "seed", false, "after the download, serve the file to other peers until interrupted")
	fl.StringVar(&f.dataDir, "data-dir", "", "peer data dir (default: a temporary one, removed at exit)")
	fl.StringVar(&f.listen, "listen", "", "host:port to serve pieces on with --seed (default: any free port)")
	fl.StringVar(&f.advertise, "advertise", "", "address other peers dial with --seed (default: --listen, or the local IP routed to the first master)")
	fl.StringVar(&f.rate, "limit-rate", "", "cap the download rate, e.g. 10MiB or 500KiB (per second)")
	fl.DurationVar(&f.stall, "stall-timeout", 30*time.Second, "give up when no piece arrives for this long")
	fl.StringVarP(&f.output, "output", "o", "text", "output format: text (progress and a summary) or json (the summary only)")
	f.tls.add(fl, false, "")
	return cmd
}

func runGet(cmd *cobra.Command, g *globalFlags, f *getFlags, ref string, stdout, stderr io.Writer) error {
	if f.output != "text" && f.output != "json" {
		return fmt.Errorf("-o %q: use text or json", f.output)
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
	file, err := p.Resolve(rctx, ref)
	cancel()
	var amb *peer.AmbiguousError
	if errors.As(err, &amb) {
		if amb.Named {
			fmt.Fprintf(stderr, "%d files are named %q; give the ID of the one you want:\n", len(amb.Candidates), printable(ref))
		} else {
			fmt.Fprintf(stderr, "no file is named %q, but these contain it; give the full name or the ID of the one you want:\n", printable(ref))
		}
		printFiles(stderr, "table", ref, amb.Candidates)
		return &exitCode{code: 1}
	}
	if err != nil && !errors.Is(err, peer.ErrFileNotFound) {
		return fmt.Errorf("%w; check --masters, that the masters are running, and --trusted-ca-file if they run with TLS", err)
	}
	if err != nil {
		return err
	}
	dest, err := destination(f.out, file.Name)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(dest); err == nil {
		return fmt.Errorf("%w: %s; remove it or choose another --out", peer.ErrDestinationExists, dest)
	}

	text := f.output == "text"
	pp := newProgressPrinter(stdout, isTerminal(stdout))
	if text {
		pp.println("getting %s (%s, %d pieces of %s) from %d holder(s)\n  id %s\n  to %s",
			printable(file.Name), humanBytes(file.Size), peer.PieceCount(file.Size, file.PieceSize), humanBytes(file.PieceSize), file.Holders, file.ID, printable(dest))
	}
	opts := peer.DownloadOptions{Seed: f.seed, RateLimit: rate, StallTimeout: f.stall, ProgressInterval: 200 * time.Millisecond}
	if text {
		opts.Progress = pp.update
	}
	res, err := p.Download(ctx, file.ID, dest, opts)
	pp.done()
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return fmt.Errorf("interrupted after %d of %d pieces; run the same command again to resume", res.Fetched+res.Resumed, res.Pieces)
		}
		return err
	}
	if !text {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		pp.println("%s", summary(res))
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

func summary(r peer.DownloadResult) string {
	var b strings.Builder
	rate := ""
	if s := r.Duration.Seconds(); s > 0 && r.Fetched > 0 {
		rate = fmt.Sprintf(" at %s/s", humanBytes(int64(float64(r.Size)*float64(r.Fetched)/float64(r.Pieces)/s)))
	}
	fmt.Fprintf(&b, "saved %s (%s) in %s%s: fetched %d pieces, resumed %d", r.Path, humanBytes(r.Size), r.Duration.Round(time.Millisecond), rate, r.Fetched, r.Resumed)
	if len(r.FromHolders) > 0 {
		ids := make([]string, 0, len(r.FromHolders))
		for id := range r.FromHolders {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		var parts []string
		for _, id := range ids {
			parts = append(parts, fmt.Sprintf("%s %d", id, r.FromHolders[id]))
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	if len(r.Dropped) > 0 {
		fmt.Fprintf(&b, "; dropped for sending bad pieces: %s", strings.Join(r.Dropped, ", "))
	}
	return b.String()
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressPrinter shows a download's progress: a bar redrawn in place on a
// terminal, a plain line at most once a second otherwise. println prints a
// line of narration without tearing the bar. Safe for concurrent use.
type progressPrinter struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	barShown bool
	last     time.Time
	resumed  bool
}

func newProgressPrinter(w io.Writer, tty bool) *progressPrinter {
	return &progressPrinter{w: w, tty: tty, last: time.Now()} // first line after a second
}

func (pp *progressPrinter) println(format string, args ...any) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.clearBar()
	fmt.Fprintf(pp.w, format+"\n", args...)
}

func (pp *progressPrinter) clearBar() {
	if pp.barShown {
		fmt.Fprint(pp.w, "\r\033[K")
		pp.barShown = false
	}
}

func (pp *progressPrinter) update(p peer.Progress) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if p.Resumed > 0 && !pp.resumed {
		pp.resumed = true
		pp.clearBar()
		fmt.Fprintf(pp.w, "resumed %d/%d pieces (%s) verified by an earlier run\n", p.Resumed, p.Pieces, humanBytes(p.Done))
	}
	pct := 100.0
	if p.Size > 0 {
		pct = 100 * float64(p.Done) / float64(p.Size)
	}
	left := "--"
	if r := p.Remaining(); r >= 0 {
		left = fmtDuration(r)
	}
	if pp.tty {
		const width = 24
		fill := int(pct / 100 * width)
		bar := strings.Repeat("#", fill) + strings.Repeat(".", width-fill)
		fmt.Fprintf(pp.w, "\r\033[K%5.1f%% [%s] %s / %s  %s/s  %d holder(s)  %s left",
			pct, bar, humanBytes(p.Done), humanBytes(p.Size), humanBytes(int64(p.Rate)), p.Holders, left)
		pp.barShown = true
		return
	}
	if time.Since(pp.last) < time.Second || p.PiecesDone == p.Pieces {
		return
	}
	pp.last = time.Now()
	fmt.Fprintf(pp.w, "progress: %.0f%% (%d/%d pieces) %s of %s at %s/s from %d holder(s), %s left\n",
		pct, p.PiecesDone, p.Pieces, humanBytes(p.Done), humanBytes(p.Size), humanBytes(int64(p.Rate)), p.Holders, left)
}

// done ends the bar's line.
func (pp *progressPrinter) done() {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.barShown {
		fmt.Fprintln(pp.w)
		pp.barShown = false
	}
}

func fmtDuration(d time.Duration) string {
	d = d.Round(time.Second)
	if d < time.Minute {
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
	if d < time.Hour {
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}
