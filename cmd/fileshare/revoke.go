package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"fileshare/client"
	"fileshare/master"
	"fileshare/transport"
)

// revokeFlags are the flags of 'fileshare cluster revoke'.
type revokeFlags struct {
	serials []string
	certs   []string
	undo    bool
	list    bool
}

func newRevokeCmd(f *clusterFlags, stdout io.Writer) *cobra.Command {
	r := &revokeFlags{}
	cmd := &cobra.Command{
		Use:   "revoke (--serial SERIAL | --cert FILE)... | --list",
		Short: "Refuse a master or admin certificate cluster-wide (deny list of serial numbers)",
		Long: `Put certificates on the cluster's deny list: every master refuses them at
the TLS handshake from the moment the change commits, and closes the
connections that presented them. Give each certificate by its serial
number (as 'openssl x509 -noout -serial -in FILE' prints it) or by its
PEM file. Needs an admin certificate (or a member master's).

--undo takes serials off the list; --list prints it. A master's own
certificate cannot be revoked through that master: remove the master from
the cluster first ('fileshare cluster remove'), then revoke its
certificate, then mint it a new one if it is to join again.`,
		Args: cobra.NoArgs,
		RunE: f.run(func(ctx context.Context, c *client.Client, _ []string) error {
			return runRevoke(ctx, c, r, f.output, stdout)
		}),
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&r.serials, "serial", nil, "serial number of a certificate to revoke, in hex (repeatable)")
	fl.StringArrayVar(&r.certs, "cert", nil, "PEM file of a certificate to revoke (repeatable)")
	fl.BoolVar(&r.undo, "undo", false, "take the certificates off the deny list instead")
	fl.BoolVar(&r.list, "list", false, "print the deny list and change nothing")
	return cmd
}

// runRevoke changes or prints the deny list.
func runRevoke(ctx context.Context, c *client.Client, r *revokeFlags, output string, stdout io.Writer) error {
	var reply master.RevokeReply
	if r.list {
		if len(r.serials)+len(r.certs) > 0 || r.undo {
			return fmt.Errorf("--list changes nothing: give it without --serial, --cert or --undo")
		}
		req := &master.RevocationsRequest{ReadHeader: client.ReadHeader{Level: client.ReadLeader}}
		if err := c.Call(ctx, master.MethodRevocations, req, &reply); err != nil {
			return fmt.Errorf("read the deny list: %w", err)
		}
		return printRevocations(stdout, output, reply)
	}
	serials, err := revokeSerials(r)
	if err != nil {
		return err
	}
	if err := c.Call(ctx, master.MethodRevoke, &master.RevokeRequest{Serials: serials, Unrevoke: r.undo}, &reply); err != nil {
		verb := "revoke"
		if r.undo {
			verb = "unrevoke"
		}
		return fmt.Errorf("%s %s: %w", verb, strings.Join(serials, ", "), err)
	}
	return printRevocations(stdout, output, reply)
}

// revokeSerials gathers the serials of --serial and --cert, normalised.
func revokeSerials(r *revokeFlags) ([]string, error) {
	var out []string
	for _, s := range r.serials {
		n, err := master.NormalizeSerial(s)
		if err != nil {
			return nil, fmt.Errorf("--serial %s: %w", s, err)
		}
		out = append(out, n)
	}
	for _, file := range r.certs {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--cert: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("--cert %s: no PEM CERTIFICATE block in it", file)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("--cert %s: %w", file, err)
		}
		out = append(out, transport.SerialOf(cert))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("give the certificates to revoke with --serial or --cert (or --list to see the deny list)")
	}
	return out, nil
}

func printRevocations(w io.Writer, output string, reply master.RevokeReply) error {
	type entry struct {
		Serial  string    `json:"serial"`
		Revoked time.Time `json:"revoked_at"`
	}
	v := struct {
		Index   uint64  `json:"index"`
		Revoked []entry `json:"revoked"`
	}{Index: reply.Index, Revoked: []entry{}}
	var text strings.Builder
	if len(reply.Revoked) == 0 {
		text.WriteString("the deny list is empty\n")
	}
	for _, r := range reply.Revoked {
		at := time.Unix(0, r.Time).UTC()
		v.Revoked = append(v.Revoked, entry{Serial: r.Serial, Revoked: at})
		fmt.Fprintf(&text, "%s\trevoked %s\n", r.Serial, at.Format(time.RFC3339))
	}
	return emit(w, output, v, text.String())
}
