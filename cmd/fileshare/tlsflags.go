package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"fileshare/transport"
)

// tlsFlags are the TLS flags of every command that talks to masters:
// --cert-file and --key-file name this node's certificate (a master's, or
// the admin's for 'cluster' commands), --trusted-ca-file the cluster CA
// that every master's certificate must chain to.
type tlsFlags struct {
	cert, key, ca string
}

// add registers the flags; withCert also registers --cert-file and
// --key-file (peers have a key of their own in their data dir instead).
func (t *tlsFlags) add(f *pflag.FlagSet, withCert bool, certWhat string) {
	if withCert {
		f.StringVar(&t.cert, "cert-file", "", "PEM certificate "+certWhat+" (see 'fileshare tls init')")
		f.StringVar(&t.key, "key-file", "", "PEM key of --cert-file")
	}
	f.StringVar(&t.ca, "trusted-ca-file", "", "PEM cluster CA: talk to masters over TLS and only to those it signed")
}

// load returns the credentials the flags name, or nil if none were given
// (a cluster run with --insecure).
func (t *tlsFlags) load() (*transport.TLS, error) {
	if t.cert == "" && t.key == "" && t.ca == "" {
		return nil, nil
	}
	if (t.cert == "") != (t.key == "") {
		return nil, fmt.Errorf("give both --cert-file and --key-file")
	}
	if t.ca == "" {
		return nil, fmt.Errorf("--cert-file and --key-file need --trusted-ca-file, the CA that signed the masters' certificates")
	}
	return transport.LoadTLS(t.cert, t.key, t.ca)
}

// certFlagHint explains a refused --cert-file or --key-file on a peer-side
// command (peer, search, get, peers, holders): those commands prove who
// they are with the peer's own key, not with a certificate, so the flags
// do not exist there.
func certFlagHint(err error) string {
	msg := err.Error()
	if !strings.HasPrefix(msg, "unknown flag: --cert-file") && !strings.HasPrefix(msg, "unknown flag: --key-file") {
		return ""
	}
	return "\npeer-side commands present the peer's own key (kept in its --data-dir), not a certificate: drop --cert-file and --key-file and keep --trusted-ca-file"
}
