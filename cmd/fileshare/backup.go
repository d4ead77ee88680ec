package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"fileshare/client"
	"fileshare/master"
	"fileshare/transport"
)

// defaultBackupTimeout is `cluster backup`'s --timeout unless one is
// given: a 1M-file index is a few hundred MB.
const defaultBackupTimeout = 10 * time.Minute

// newBackupCmd is `fileshare cluster backup`.
func newBackupCmd(f *clusterFlags, stdout io.Writer) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Save a consistent snapshot of the index, taken at the leader, to FILE",
		Long: `Save a consistent snapshot of the index to FILE. The leader takes a Raft
snapshot after a barrier, so the backup holds every write acknowledged
before the command started, and streams it in chunks. FILE is written
to a temporary file beside it, verified, and renamed only then: it is
either complete and verified or not there at all.

The archive is: "FSBACKUP", a format version, JSON metadata (raft
index and term, time, fileshare version, snapshot size, leader, members),
the FSM snapshot, the leader's signature over the metadata and snapshot
(made with its master certificate's key, on a TLS cluster), and a SHA-256
over all of it. The SHA-256 shows the file is undamaged; only the
signature shows a master of the cluster made it. 'fileshare snapshot
inspect FILE --trusted-ca-file ca.pem' checks both; 'fileshare master
--restore FILE' starts a new cluster from it, and on a TLS master
requires the signature to verify against the master's CA. Needs the
admin certificate on a TLS cluster.`,
		Example: `  fileshare cluster backup --out /backups/index-$(date +%F).fsbackup --masters 10.0.0.1:7001,10.0.0.2:7001 \
    --cert-file admin.pem --key-file admin-key.pem --trusted-ca-file ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("give --out FILE, where to write the backup")
			}
			if !cmd.Flags().Changed("timeout") {
				f.timeout = defaultBackupTimeout
			}
			return f.run(func(ctx context.Context, c *client.Client, _ []string) error {
				start := time.Now()
				meta, err := master.SaveBackup(ctx, c, out)
				if err != nil {
					return fmt.Errorf("backup: %w", err)
				}
				v := struct {
					File      string `json:"file"`
					RaftIndex uint64 `json:"raft_index"`
					RaftTerm  uint64 `json:"raft_term"`
					Bytes     int64  `json:"snapshot_bytes"`
					LeaderID  string `json:"leader_id"`
					Millis    int64  `json:"duration_ms"`
				}{out, meta.RaftIndex, meta.RaftTerm, meta.SnapshotSize, meta.LeaderID, time.Since(start).Milliseconds()}
				return emit(stdout, f.output, v, fmt.Sprintf("wrote %s: index %d, term %d, %s of snapshot from leader %s in %v\n",
					out, meta.RaftIndex, meta.RaftTerm, humanBytes(meta.SnapshotSize), meta.LeaderID, time.Since(start).Round(time.Millisecond)))
			})(cmd, args)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write the backup to")
	return cmd
}

// newRecoverCmd is `fileshare cluster recover`: it writes the recovery
// file (master.RecoveryFile) that a stopped master applies at its next
// start.
func newRecoverCmd(stdout io.Writer) *cobra.Command {
	var dataDir, members string
	var force bool
	cmd := &cobra.Command{
		Use:   "recover --data-dir DIR --members ID=HOST:PORT,...",
		Short: "Prepare a stopped master to recover from the loss of a majority (writes DIR/peers.json)",
		Long: `Recover a cluster that lost a majority of its masters for good.

1. Stop every surviving master.
2. On each survivor run this command with its --data-dir and the same
   --members: the survivors (one survivor alone lists only itself).
3. Start the survivors with their usual flags. Each first checks that the
   old majority is gone, and refuses to start, changing nothing, when
   - a member of its old configuration reports a leader,
   - an old member not in --members answers at all (stop it first), or
   - enough old members not in --members for a quorum cannot be reached
     and do not refuse connections: they may be a working cluster behind
     a network partition, and recovering would leave two clusters for good.
   Then it rewrites its Raft membership to --members, renames peers.json
   to peers.json.applied, and starts; the survivors elect a leader.
4. Add new masters with 'fileshare master --join'.

When the lost masters' hosts are down for good (powered off, destroyed),
nothing answers for them and step 3 refuses. Only then give
--force-split-brain-risk: it recovers although they cannot be shown gone.
If they are in fact alive behind a partition, there are then two clusters
that each accept writes, and they can never be merged. A lost master must
never be started again with its old data dir: wipe it and --join.

Every entry the survivors hold is kept; if they differ, recover from the
one with the highest last index ('cluster status' shows it). This
command only writes the file; it does not talk to any master.`,
		Example: `  fileshare cluster recover --data-dir /var/lib/fileshare/m1 --members m1=10.0.0.1:7001`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" || members == "" {
				return fmt.Errorf("give --data-dir (the stopped master's) and --members (the surviving masters, ID=HOST:PORT,...)")
			}
			list, err := master.ParseInitialCluster(members)
			if err != nil {
				return fmt.Errorf("--members: %w", err)
			}
			if err := master.WriteRecoveryFile(dataDir, list, master.RecoveryOptions{ForceSplitBrainRisk: force}); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote %s/%s: at its next start this master recovers with members %s\n", strings.TrimRight(dataDir, "/"), master.RecoveryFile, members)
			if force {
				fmt.Fprintf(stdout, "WARNING: --force-split-brain-risk: this master will recover even if old masters it cannot reach are alive; if they are, two clusters result and cannot be merged\n")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "data dir of the stopped surviving master")
	cmd.Flags().StringVar(&members, "members", "", "the surviving masters: ID=HOST:PORT,... (the same on every survivor)")
	cmd.Flags().BoolVar(&force, "force-split-brain-risk", false, "recover even when unreachable old masters cannot be shown gone (they may be alive behind a partition: two clusters would result)")
	return cmd
}

// safeText returns s for a terminal: printable characters as they are,
// anything else (escape sequences, other control characters, invalid
// UTF-8) escaped as in a Go string literal.
func safeText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) }) {
		return s
	}
	return strconv.QuoteToGraphic(s)
}

// newSnapshotCmd is `fileshare snapshot`, which works on backup files.
func newSnapshotCmd(stdout io.Writer) *cobra.Command {
	var output, caFile string
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Work with backup files ('fileshare cluster backup')",
	}
	inspect := &cobra.Command{
		Use:   "inspect FILE",
		Short: "Verify a backup file and print its metadata and what it holds",
		Long: `Verify FILE's checksum and signature, print its metadata, and restore
its snapshot into memory to count the peers, files and holdings it holds.
A damaged file is an error naming what is wrong; the exit status is then 1.

The checksum proves only that the file is undamaged: anyone who changes
the file can recompute it. The signature, made by the leader that took
the backup with its master certificate's key, proves that a master of
the cluster made it: give the cluster CA with --trusted-ca-file to check
it (a signature that does not verify is an error). Without the CA the
signature is reported as not checked; a backup of a cluster without TLS
is unsigned. Text taken from the file is printed with control characters
escaped.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("-o %q: use text or json", output)
			}
			fh, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer fh.Close()
			c, err := master.InspectArchive(fh)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			signature := "none (made on a cluster without TLS, or by an older fileshare): nothing shows who made this file"
			signer := ""
			if c.Signature != nil {
				signature = "present, NOT CHECKED: give --trusted-ca-file to check it"
			}
			if caFile != "" {
				ca, err := transport.LoadTLS("", "", caFile)
				if err != nil {
					return fmt.Errorf("--trusted-ca-file: %w", err)
				}
				if c.Signature != nil {
					if signer, err = c.Signature.Verify(ca, c.Meta); err != nil {
						return fmt.Errorf("%s: %w", args[0], err)
					}
					signature = "OK: signed by master " + signer + " with a certificate from the cluster CA"
				}
			}
			v := struct {
				File         string                `json:"file"`
				SHA256       string                `json:"sha256"`
				RaftIndex    uint64                `json:"raft_index"`
				RaftTerm     uint64                `json:"raft_term"`
				Time         time.Time             `json:"time"`
				Version      string                `json:"fileshare_version"`
				Bytes        int64                 `json:"snapshot_bytes"`
				LeaderID     string                `json:"leader_id"`
				LeaderAddr   string                `json:"leader_addr"`
				Members      []client.BackupMember `json:"members"`
				AppliedIndex uint64                `json:"applied_index"`
				Peers        int                   `json:"peers"`
				Files        int                   `json:"files"`
				Holdings     int                   `json:"holdings"`
				Digest       string                `json:"digest"`
				Signed       bool                  `json:"signed"`
				Signer       string                `json:"verified_signer,omitempty"` // set only when checked against --trusted-ca-file
			}{args[0], hex.EncodeToString(c.SHA256[:]), c.Meta.RaftIndex, c.Meta.RaftTerm, c.Meta.Time, c.Meta.Version,
				c.Meta.SnapshotSize, c.Meta.LeaderID, c.Meta.LeaderAddr, c.Meta.Members, c.AppliedIndex,
				c.Counts.Peers, c.Counts.Files, c.Counts.Holdings, c.Digest, c.Signature != nil, signer}
			// Everything taken from the file is escaped (safeText): a
			// crafted archive must not drive the operator's terminal.
			var text strings.Builder
			fmt.Fprintf(&text, "file:        %s\n", safeText(v.File))
			fmt.Fprintf(&text, "checksum:    OK, sha256 %s (proves the file is undamaged, not who made it)\n", v.SHA256)
			fmt.Fprintf(&text, "signature:   %s\n", signature)
			fmt.Fprintf(&text, "raft index:  %d (term %d)\n", v.RaftIndex, v.RaftTerm)
			fmt.Fprintf(&text, "taken:       %s by %s at %s, fileshare %s\n", v.Time.Format(time.RFC3339), safeText(v.LeaderID), safeText(v.LeaderAddr), safeText(v.Version))
			var mem []string
			for _, m := range v.Members {
				mem = append(mem, safeText(m.ID)+"="+safeText(m.Addr))
			}
			fmt.Fprintf(&text, "members:     %s\n", strings.Join(mem, ","))
			fmt.Fprintf(&text, "snapshot:    %s\n", humanBytes(v.Bytes))
			fmt.Fprintf(&text, "peers:       %d\nfiles:       %d\nholdings:    %d\ndigest:      %s\n", v.Peers, v.Files, v.Holdings, v.Digest)
			return emit(stdout, output, v, text.String())
		},
	}
	inspect.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	inspect.Flags().StringVar(&caFile, "trusted-ca-file", "", "cluster CA certificate (PEM) to check the backup's signature against")
	cmd.AddCommand(inspect)
	return cmd
}
