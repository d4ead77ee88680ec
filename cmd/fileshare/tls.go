package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"fileshare/transport"
)

func newTLSCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Make the certificates a cluster authenticates with",
	}
	var dir, masters, hosts string
	var validity time.Duration
	initCmd := &cobra.Command{
		Use:   "init --dir DIR --masters m1,m2,m3 [--hosts 127.0.0.1,...]",
		Short: "Write a cluster CA, a certificate per master and an admin certificate",
		Long: `Write, into --dir, a new cluster CA (ca.pem, ca-key.pem), a certificate and
key for every master named in --masters (m1.pem, m1-key.pem, ...) valid for
the --hosts addresses, and an admin client certificate (admin.pem,
admin-key.pem) for 'fileshare cluster' commands. Keys are mode 0600. Nothing
is ever overwritten.

Start each master with --cert-file DIR/m1.pem --key-file DIR/m1-key.pem
--trusted-ca-file DIR/ca.pem; give peers and 'fileshare search|get' the
--trusted-ca-file so they can tell a real master from an impostor; give
'fileshare cluster' the admin certificate. Keep ca-key.pem offline: whoever
holds it can mint masters.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("--dir is required: the folder to write the certificates into")
			}
			ms := splitList(masters)
			if len(ms) == 0 {
				return fmt.Errorf("--masters is required: the IDs of the masters, e.g. --masters m1,m2,m3")
			}
			written, err := transport.InitFiles(dir, ms, splitList(hosts), validity)
			if err != nil {
				return err
			}
			for _, p := range written {
				fmt.Fprintln(stdout, "wrote", p)
			}
			return nil
		},
	}
	f := initCmd.Flags()
	f.StringVar(&dir, "dir", "", "folder to write into (created if missing; must not hold certificates already)")
	f.StringVar(&masters, "masters", "", "comma-separated master IDs, one certificate each")
	f.StringVar(&hosts, "hosts", "127.0.0.1,localhost", "comma-separated IPs and DNS names the masters are reached at")
	f.DurationVar(&validity, "validity", 5*365*24*time.Hour, "how long the certificates are valid")
	cmd.AddCommand(initCmd)
	return cmd
}
