package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fileshare/internal/poll"
	"fileshare/transport"
)

// mintInto issues a certificate from the CA in p.dir and writes it there
// as name.pem and name-key.pem; it returns the TLS flags that present it
// and its serial.
func mintInto(t *testing.T, p pki, r transport.Role, name string) ([]string, string) {
	t.Helper()
	ca, err := transport.LoadCA(filepath.Join(p.dir, "ca.pem"), filepath.Join(p.dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(r, name, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, name+".pem"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, name+"-key.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return p.master(name), transport.SerialOf(leaf)
}

// Three TLS master processes: a spare master certificate from the
// cluster's CA (as 'tls init' mints for a master not yet started) gives no
// admin rights; 'cluster revoke --cert' takes an admin certificate's
// rights away on every master, and '--list' shows it.
func TestClusterRevokeAndASpareMasterCertificate(t *testing.T) {
	dir := t.TempDir()
	_, mlist, certs := tlsMasters(t, dir, []string{"m1", "m2", "m3"})
	as := func(tlsFlags []string, args ...string) []string {
		return append(append(args, "--masters", mlist), tlsFlags...)
	}
	if out, stderr, code := fileshare(t, 90*time.Second, as(certs.admin(), "cluster", "wait", "--ready", "--timeout", "60s")...); code != 0 {
		t.Fatalf("cluster wait --ready: exit %d\n%s\n%s", code, out, stderr)
	}
	spare, _ := mintInto(t, certs, transport.RoleMaster, "m9")
	if _, stderr, code := fileshare(t, 30*time.Second, as(spare, "cluster", "remove", "m3", "--timeout", "5s")...); code == 0 || !strings.Contains(stderr, "not a member") {
		t.Fatalf("cluster remove with a spare master's certificate: exit %d, want a refusal saying it is not a member; stderr:\n%s", code, stderr)
	}
	ops, serial := mintInto(t, certs, transport.RoleAdmin, "ops")
	if out, stderr, code := fileshare(t, 30*time.Second, as(ops, "cluster", "snapshot")...); code != 0 {
		t.Fatalf("cluster snapshot as ops before revocation: exit %d\n%s\n%s", code, out, stderr)
	}
	out, stderr, code := fileshare(t, 30*time.Second, as(certs.admin(), "cluster", "revoke", "--cert", filepath.Join(certs.dir, "ops.pem"))...)
	if code != 0 || !strings.Contains(out, serial) {
		t.Fatalf("cluster revoke --cert ops.pem: exit %d, want its serial %s listed; stdout:\n%s\nstderr:\n%s", code, serial, out, stderr)
	}
	poll.Until(t, 20*time.Second, "every master refuses the revoked certificate", func() bool {
		_, _, code := fileshare(t, 30*time.Second, as(ops, "cluster", "snapshot", "--timeout", "3s")...)
		return code != 0
	})
	out, stderr, code = fileshare(t, 30*time.Second, as(certs.admin(), "cluster", "revoke", "--list", "-o", "json")...)
	var list struct {
		Revoked []struct {
			Serial string `json:"serial"`
		} `json:"revoked"`
	}
	decodeJSON(t, "cluster revoke --list -o json", out, &list)
	if code != 0 || len(list.Revoked) != 1 || list.Revoked[0].Serial != serial {
		t.Fatalf("cluster revoke --list: exit %d, %+v, want %s alone; stderr:\n%s", code, list.Revoked, serial, stderr)
	}
}
