package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"fileshare/peer"
)

const defaultMasters = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"

func newPeerCmd(g *globalFlags, stderr io.Writer) *cobra.Command {
	var cfg peer.Config
	var masters string
	var keep bool
	var httpAddr string
	var tf tlsFlags
	cmd := &cobra.Command{
		Use:   "peer --masters ADDR,... --data-dir DIR --share DIR --listen HOST:PORT",
		Short: "Run a peer that shares a folder with the swarm",
		Long: `Run a peer until SIGINT or SIGTERM.

The peer joins the index through any master, registers every regular file
under --share (recursively), serves their pieces to other peers on --listen,
and rescans the folder every --rescan to register new files and unregister
removed ones. Its identity (an Ed25519 key, from which its ID is derived, so
nobody else can act as this peer) and a cache of file hashes live in
--data-dir, so a restart keeps the ID and rehashes nothing. The data dir is
never shared, even inside --share. With --trusted-ca-file the peer talks to
masters only over TLS, presenting its key; pieces travel over TLS either way,
and a downloader checks that each holder proves the key its ID names.

Once every file is registered the peer logs "sharing: every file is
registered" with their count. While no master answers it logs a warning
within a few seconds, and again every 30 s, and keeps retrying. If the index
refuses the peer for good (not authorized, over a quota such as
--max-files-per-peer, an invalid request), the peer exits with status 1 and
says what was refused and what to do.

On SIGINT or SIGTERM the peer leaves the index, removing its registrations at
once; with --keep-registered it just stops, and the index drops it when its
lease expires (unless it is back first).`,
		Example: `  fileshare peer --masters 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 \
    --data-dir /tmp/alice --share ~/Public --listen 127.0.0.1:7101`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger(stderr)
			if err != nil {
				return err
			}
			if cfg.ShareDir == "" {
				return fmt.Errorf("--share is required: the folder whose files this peer shares")
			}
			if st, err := os.Stat(cfg.ShareDir); err != nil || !st.IsDir() {
				return fmt.Errorf("--share %s is not a folder; create it or choose another", cfg.ShareDir)
			}
			cfg.Masters = splitList(masters)
			cfg.Logger = logger
			if cfg.CA, err = tf.load(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			p, err := peer.New(cfg)
			if err != nil {
				return err
			}
			if httpAddr != "" {
				stopHTTP, err := servePeerHTTP(httpAddr, p, logger)
				if err != nil {
					_ = p.Close()
					return err
				}
				defer stopHTTP()
			}
			logger.Info("sharing", "folder", cfg.ShareDir, "peer", p.ID(), "addr", p.Addr())
			select {
			case <-ctx.Done():
				logger.Info("signal received; shutting down")
			case <-p.Done():
				// Refused for good: retrying cannot help. Leave (unless
				// told to keep the registrations) and exit 1 with why.
				refusal := p.Err()
				if keep {
					_ = p.Close()
					return refusal
				}
				lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := p.Leave(lctx); err != nil {
					logger.Warn("cannot leave the index; it drops this peer when its lease expires", "err", err)
				}
				return refusal
			}
			if keep {
				return p.Close()
			}
			lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := p.Leave(lctx); err != nil {
				return fmt.Errorf("%w; the index will drop this peer when its lease expires", err)
			}
			return nil
		},
	}
	bindPeerFlags(cmd.Flags(), &cfg, &masters, &httpAddr, &keep, &tf)
	return cmd
}

// bindPeerFlags binds the peer's flags to cfg and the options peer.New
// does not take, defaults from peer.DefaultConfig.
func bindPeerFlags(f *pflag.FlagSet, cfg *peer.Config, masters, httpAddr *string, keep *bool, tf *tlsFlags) {
	def := peer.DefaultConfig()
	f.StringVar(masters, "masters", defaultMasters, "cluster ports of the masters: HOST:PORT,...")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the peer's identity and hash cache (required)")
	f.StringVar(&cfg.ShareDir, "share", "", "folder to share, recursively (required)")
	f.StringVar(&cfg.Listen, "listen", "", "host:port where the peer serves pieces (default: any free port on all interfaces)")
	f.StringVar(&cfg.Advertise, "advertise", "", "address other peers dial (default: --listen, or the local IP routed to the first master)")
	f.DurationVar(&cfg.RescanInterval, "rescan", def.RescanInterval, "how often to rescan the share folder")
	f.IntVar(&cfg.MaxUploads, "max-uploads", def.MaxUploads, "most piece connections served at once")
	f.StringVar(httpAddr, "http", "", "host:port of an HTTP status port with /metrics (Prometheus) and /healthz (default: none)")
	f.BoolVar(keep, "keep-registered", false, "on exit, keep the registrations until the lease expires instead of leaving")
	f.BoolVar(&cfg.IncludeHidden, "include-hidden", false, "share dotfiles and dot-folders too (skipped by default: they often hold secrets)")
	tf.add(f, false, "")
	addPeerNATFlags(f, cfg, def)
}
