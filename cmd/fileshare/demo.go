package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"fileshare/client"
	"fileshare/master"
	"fileshare/master/mastertest"
	"fileshare/peer"
)

type demoFlags struct {
	keep bool
	size string
	rate string
	dir  string
}

func newDemoCmd(g *globalFlags, stdout, stderr io.Writer) *cobra.Command {
	f := &demoFlags{}
	cmd := &cobra.Command{
		Use:   "demo [--keep]",
		Short: "Watch FileShare work: 3 masters, 3 peers, a download that survives the loss of the leader",
		Long: `Run a small FileShare network on loopback, in temporary folders, and
narrate what happens: 3 masters elect a leader; 3 peers share files and
register them; one peer searches and downloads a 64 MiB file from two others
at once, verifying every piece; the leader is killed in the middle and a new
one takes over without the download noticing; the copy's SHA-256 is checked.

With --keep the network keeps running until Ctrl-C, and the demo prints the
commands that talk to it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			size, err := parseBytes(f.size)
			if err != nil || size < 1<<20 {
				return fmt.Errorf("--size %q: give at least 1MiB", f.size)
			}
			rate, err := parseBytes(f.rate)
			if err != nil {
				return fmt.Errorf("--limit-rate: %w", err)
			}
			logger := slog.New(slog.DiscardHandler) // the narration is the output
			if cmd.Flags().Changed("log-level") {
				if logger, err = g.logger(stderr); err != nil {
					return err
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			d := &demo{out: newProgressPrinter(stdout, isTerminal(stdout)), logger: logger, size: size, rate: rate, keep: f.keep, start: time.Now(), names: map[string]string{}}
			return d.run(ctx, f.dir)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.keep, "keep", false, "keep the network running until Ctrl-C and print how to talk to it")
	fl.StringVar(&f.size, "size", "64MiB", "size of the big file")
	fl.StringVar(&f.rate, "limit-rate", "32MiB", "download rate limit, so you can watch (0 or \"\" for none)")
	fl.StringVar(&f.dir, "dir", "", "work in this folder instead of a temporary one (kept afterwards)")
	_ = fl.MarkHidden("dir")
	return cmd
}

// demo is one run of `fileshare demo`.
type demo struct {
	out     *progressPrinter
	logger  *slog.Logger
	size    int64
	rate    int64
	keep    bool
	start   time.Time
	dir     string
	masters *mastertest.Cluster // nil until startMasters; safe to use from the progress callback
	tracker *demoTracker        // the BitTorrent part; set by startMasters
	peers   []*peer.Peer
	names   map[string]string // peer ID → alice, bob, carol
	step    int
}

func (d *demo) say(format string, args ...any) {
	d.step++
	d.out.println("\n%d. "+format, append([]any{d.step}, args...)...)
}

func (d *demo) note(format string, args ...any) { d.out.println("   "+format, args...) }

func (d *demo) run(ctx context.Context, dir string) (err error) {
	if dir == "" {
		if dir, err = os.MkdirTemp("", "fileshare-demo-*"); err != nil {
			return fmt.Errorf("create a temporary folder: %w", err)
		}
		defer os.RemoveAll(dir)
	}
	d.dir = dir
	defer d.shutdown()
	d.out.println("FileShare demo: 3 masters keep a replicated index of who holds which file;\npeers register their files there and fetch files directly from each other.\nEverything runs on this machine, in %s.", dir)

	if err := d.startMasters(ctx); err != nil {
		return err
	}
	leader, err := d.masters.WaitLeader(ctx)
	if err != nil {
		return err
	}
	d.note("%s is the leader: every change to the index goes through it and is copied to a majority before it counts.", d.masters.ID(leader))

	big, err := d.makeFiles()
	if err != nil {
		return err
	}
	alice, bob, carol, err := d.startPeers(ctx)
	if err != nil {
		return err
	}

	d.say("carol searches the index for \"big\" (a linearizable read: the leader answers, after confirming it still leads):")
	files, err := carol.Search(ctx, "big", 10)
	if err != nil {
		return err
	}
	if len(files) != 1 {
		return fmt.Errorf("search found %d files, want 1", len(files))
	}
	printFiles(d.out.w, "table", "big", files)
	file := files[0]

	limit := ""
	if d.rate > 0 {
		limit = fmt.Sprintf(" (limited to %s/s so you can watch)", humanBytes(d.rate))
	}
	d.say("carol downloads big.bin from alice and bob at once%s.\n   Each piece's SHA-256 is checked against the file's ID before it is written.", limit)
	dest := filepath.Join(dir, "carol-downloads", "big.bin")
	var killed atomic.Bool
	var killWG sync.WaitGroup
	defer killWG.Wait()
	res, err := carol.Download(ctx, file.ID, dest, peer.DownloadOptions{
		Seed:             true,
		RateLimit:        d.rate,
		ProgressInterval: 200 * time.Millisecond,
		Progress: func(p peer.Progress) {
			d.out.update(p)
			if p.PiecesDone >= p.Pieces/3 && killed.CompareAndSwap(false, true) {
				killWG.Add(1)
				go func() { defer killWG.Done(); d.killLeader(ctx, leader) }()
			}
		},
	})
	if err != nil {
		d.out.done(nil)
		killWG.Wait()
		return fmt.Errorf("download: %w", err)
	}
	d.out.done(&res)
	killWG.Wait()
	var parts []string
	for _, p := range []*peer.Peer{alice, bob} {
		parts = append(parts, fmt.Sprintf("%d from %s", res.FromHolders[p.ID()], d.names[p.ID()]))
	}
	d.say("Download complete in %s: %d pieces, %s.", res.Duration.Round(time.Millisecond), res.Pieces, strings.Join(parts, ", "))
	got, err := sha256Of(dest)
	if err != nil {
		return err
	}
	if got != big {
		return fmt.Errorf("the downloaded file's SHA-256 %s differs from the original's %s", got, big)
	}
	d.note("SHA-256 of carol's copy: %s", got)
	d.note("SHA-256 of the original: %s — they match.", big)

	r, err := carol.Client().Lookup(ctx, file.ID, client.ReadLinearizable)
	if err != nil {
		return err
	}
	var names []string
	for _, h := range r.Holders {
		names = append(names, d.names[h.PeerID])
	}
	slices.Sort(names)
	d.say("carol now seeds big.bin too. The index, answering through the new leader, lists %d holders: %s.", len(names), strings.Join(names, ", "))

	if !killed.Load() {
		d.note("(the download finished before the leader could be killed; try a lower --limit-rate)")
	} else {
		d.say("Restarting %s from its data dir: it rejoins as a follower and catches up from the log.", d.masters.ID(leader))
		if err := d.restartMaster(ctx, leader); err != nil {
			return err
		}
		d.note("%s holds the same index as the leader again.", d.masters.ID(leader))
	}

	if err := d.tracker.run(ctx, filepath.Join(dir, "alice-share", "big.bin")); err != nil {
		return fmt.Errorf("tracker: %w", err)
	}

	if d.keep {
		return d.waitForUser(ctx, alice, bob)
	}
	d.say("Shutting down: the peers leave the index, the masters stop (a leader hands off first).")
	d.shutdown()
	prog, _ := selfCommand()
	d.out.println("\nDemo finished in %s. Run '%s demo --keep' to explore the network yourself.", time.Since(d.start).Round(100*time.Millisecond), prog)
	return nil
}

// startMasters starts the 3 masters, each in a folder of d.dir, and
// announces their addresses.
func (d *demo) startMasters(ctx context.Context) error {
	d.tracker = &demoTracker{d: d}
	withTracker, err := d.tracker.trackerConfig(3)
	if err != nil {
		return err
	}
	opts := mastertest.Options{Dir: d.dir, Logger: d.logger, TLS: true}
	opts.Config = func(c *master.Config) {
		withTracker(c)
		if d.keep {
			// --keep leaves the network to explore: give each master an
			// HTTP port for its dashboard and /metrics.
			c.HTTP = "127.0.0.1:0"
		}
	}
	c, err := mastertest.NewUnstarted(3, opts)
	if err != nil {
		return err
	}
	d.masters = c
	d.say("Starting 3 masters (m1, m2, m3) on %s. They elect a leader with Raft.", strings.Join(c.Addrs(), ", "))
	return c.Start(ctx)
}

func (d *demo) addrs() []string { return d.masters.Addrs() }

// killLeader kills the leader abruptly and narrates the election of the
// next one. It runs on its own goroutine, started from the download's
// progress callback.
func (d *demo) killLeader(ctx context.Context, leader int) {
	d.out.println("\n%d. Killing the leader %s in the middle of the download, as if its machine had crashed…", d.step+1, d.masters.ID(leader))
	d.step++
	t0 := time.Now()
	_ = d.masters.Kill(leader)
	next, err := d.masters.WaitLeader(ctx)
	if err != nil {
		return
	}
	d.out.println("   %s took over as leader %s later. The download never talks to the masters for data, and\n   its rare index calls fail over to the new leader on their own, so it carries on.", d.masters.ID(next), time.Since(t0).Round(10*time.Millisecond))
}

// restartMaster restarts member i from its data dir and waits until every
// master holds the same index.
func (d *demo) restartMaster(ctx context.Context, i int) error {
	if err := d.masters.Restart(ctx, i); err != nil {
		return fmt.Errorf("restart %s: %w", d.masters.ID(i), err)
	}
	if _, err := d.masters.WaitLeader(ctx); err != nil {
		return err
	}
	_, err := d.masters.WaitConverged(ctx)
	return err
}

// makeFiles writes the big random file into alice's and bob's share
// folders and a few small ones, and returns the big file's SHA-256.
func (d *demo) makeFiles() (string, error) {
	d.say("Generating files: a %s random file big.bin for both alice and bob, and a few small notes.", humanBytes(d.size))
	var seed [32]byte
	r := rand.Uint64()
	for i := range 8 {
		seed[i] = byte(r >> (8 * i))
	}
	big := make([]byte, d.size)
	rand.NewChaCha8(seed).Read(big)
	for _, who := range []string{"alice", "bob"} {
		share := filepath.Join(d.dir, who+"-share")
		if err := os.MkdirAll(filepath.Join(share, "notes"), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(share, "big.bin"), big, 0o644); err != nil {
			return "", err
		}
	}
	small := map[string]string{
		"alice-share/notes/recipe.txt":   "Pancakes: 2 eggs, 250 ml milk, 125 g flour.\n",
		"alice-share/notes/todo.txt":     "water the plants\n",
		"bob-share/notes/reading.txt":    "In Search of an Understandable Consensus Algorithm\n",
		"alice-share/notes/empty-file":   "",
		"bob-share/notes/shared-too.txt": "both alice and bob have this note\n",
	}
	small["alice-share/notes/shared-too.txt"] = small["bob-share/notes/shared-too.txt"]
	for p, content := range small {
		full := filepath.Join(d.dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	sum := sha256.Sum256(big)
	return hex.EncodeToString(sum[:]), nil
}

func (d *demo) startPeers(ctx context.Context) (alice, bob, carol *peer.Peer, err error) {
	d.say("Starting 3 peers: alice and bob share folders, carol's is empty. Each peer cuts its files into\n   256 KiB pieces, hashes each piece with SHA-256, derives the file's ID from the Merkle root of those\n   hashes, the size and the piece size, and registers (ID, name, size) with the index.")
	var ps []*peer.Peer
	for _, who := range []string{"alice", "bob", "carol"} {
		p, err := peer.New(peer.Config{
			Masters:  d.addrs(),
			CA:       d.masters.CA(),
			DataDir:  filepath.Join(d.dir, who),
			ShareDir: filepath.Join(d.dir, who+"-share"),
			Listen:   "127.0.0.1:0",
			Logger:   d.logger.With("peer", who),
		})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("start peer %s: %w", who, err)
		}
		d.peers = append(d.peers, p)
		d.names[p.ID()] = who
		ps = append(ps, p)
	}
	for _, p := range ps {
		if err := p.Rescan(ctx); err != nil {
			return nil, nil, nil, fmt.Errorf("peer %s: %w", d.names[p.ID()], err)
		}
		var names []string
		for _, f := range p.Shared() {
			names = append(names, f.Name)
		}
		if len(names) == 0 {
			names = []string{"nothing yet"}
		}
		d.note("%-5s (peer %s…) at %s shares: %s", d.names[p.ID()], p.ID()[:8], p.Addr(), strings.Join(names, ", "))
	}
	return ps[0], ps[1], ps[2], nil
}

func (d *demo) waitForUser(ctx context.Context, alice, bob *peer.Peer) error {
	m := strings.Join(d.addrs(), ",")
	tlsDir := d.masters.TLSDir()
	ca := "--trusted-ca-file " + shellQuote(filepath.Join(tlsDir, "ca.pem"))
	admin := fmt.Sprintf("--cert-file %s --key-file %s %s", shellQuote(filepath.Join(tlsDir, "admin.pem")), shellQuote(filepath.Join(tlsDir, "admin-key.pem")), ca)
	prog, where := selfCommand()
	d.out.println(`
The network keeps running until you press Ctrl-C. The masters speak only TLS;
their CA and an admin certificate are in %s. In another terminal%s, try:

  %s cluster status --masters %s %s
  %s search notes --masters %s %s
  %s get big.bin --masters %s %s --out /tmp/big.bin
  mkdir -p /tmp/dave-share && %s peer --masters %s %s --data-dir /tmp/dave --share /tmp/dave-share --listen 127.0.0.1:0

alice serves at %s and bob at %s; their shared folders are %s and %s.`,
		tlsDir, where, prog, m, admin, prog, m, ca, prog, m, ca, prog, m, ca, alice.Addr(), bob.Addr(), filepath.Join(d.dir, "alice-share"), filepath.Join(d.dir, "bob-share"))
	var dash []string
	for i := range d.masters.Len() {
		if mm := d.masters.Master(i); mm != nil && mm.HTTPAddr() != "" {
			dash = append(dash, "http://"+mm.HTTPAddr()+"/ui/")
		}
	}
	if len(dash) > 0 {
		d.out.println("\nWatch the cluster live in a browser: %s\n(each master serves its dashboard at /ui/ and Prometheus metrics at /metrics)", strings.Join(dash, "  "))
	}
	<-ctx.Done()
	d.out.println("\nShutting down: the peers leave the index, the masters stop.")
	d.shutdown()
	return nil
}

// selfCommand returns how a user types the program that is running, for
// the commands the demo prints: "fileshare" when that is what PATH finds,
// "go run ./cmd/fileshare" when the executable lives in Go's build cache
// or temporary build folder (the program was started with go run, which
// leaves nothing on PATH), else the executable's absolute path. where is
// a note on where to run it from ("" if anywhere).
func selfCommand() (prog, where string) {
	exe, err := os.Executable()
	if err != nil {
		return "fileshare", ""
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	if builtByGoRun(exe) {
		return "go run ./cmd/fileshare", ", in the same folder (the repository's root)"
	}
	if found, err := exec.LookPath(filepath.Base(exe)); err == nil {
		if real, err := filepath.EvalSymlinks(found); err == nil && real == exe {
			return filepath.Base(exe), ""
		}
	}
	return shellQuote(exe), ""
}

// builtByGoRun reports whether exe lies in a folder where go run (or go
// test) puts the executables it builds: $GOTMPDIR or the system's
// temporary folder under go-build*, or the build cache ($GOCACHE, by
// default go-build in the user's cache folder), where Go 1.24 and later
// keep go run's executables.
func builtByGoRun(exe string) bool {
	under := func(dir, prefix string) bool {
		if dir == "" {
			return false
		}
		if real, err := filepath.EvalSymlinks(dir); err == nil {
			dir = real
		}
		rel, err := filepath.Rel(dir, exe)
		return err == nil && !strings.HasPrefix(rel, "..") && strings.HasPrefix(rel, prefix)
	}
	cache := os.Getenv("GOCACHE")
	if cache == "" {
		if dir, err := os.UserCacheDir(); err == nil {
			cache = filepath.Join(dir, "go-build")
		}
	}
	return under(os.Getenv("GOTMPDIR"), "go-build") || under(os.TempDir(), "go-build") || under(cache, "")
}

// shellQuote returns s as one word for a POSIX shell: as is if it holds
// only characters no shell treats specially, else in single quotes.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:,=+@%", r))
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shutdown stops the peers (leaving the index) and then the masters
// (gracefully: a leader hands off first). Safe to call more than once.
func (d *demo) shutdown() {
	for _, p := range d.peers {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_ = p.Leave(ctx)
		cancel()
	}
	d.peers = nil
	if d.masters != nil {
		_ = d.masters.Close()
	}
}

func sha256Of(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
