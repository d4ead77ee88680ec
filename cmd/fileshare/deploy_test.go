package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/spf13/pflag"
)

// flagEnvNames returns the FILESHARE_<FLAG> variable of every flag of the
// command at path (its own and inherited), from the real command tree.
func flagEnvNames(t *testing.T, path ...string) map[string]bool {
	t.Helper()
	root := newRoot(io.Discard, io.Discard)
	cmd, _, err := root.Find(path)
	if err != nil || cmd.Name() != path[len(path)-1] {
		t.Fatalf("no command %v: %v", path, err)
	}
	out := map[string]bool{}
	add := func(f *pflag.Flag) { out[envName(f.Name)] = true }
	cmd.Flags().VisitAll(add)
	cmd.InheritedFlags().VisitAll(add)
	return out
}

// composeOnly are variables the compose file reads itself (the user the
// containers run as), not flags.
var composeOnly = []string{"FILESHARE_UID", "FILESHARE_GID"}

var envRef = regexp.MustCompile(`FILESHARE_[A-Z0-9_]+`)

// Every FILESHARE_* variable the deployment files set is a real flag of
// the command that reads it, so a renamed flag cannot silently turn a
// deployment setting into a no-op.
func TestDeployFilesNameRealFlags(t *testing.T) {
	masterVars := flagEnvNames(t, "master")
	peerVars := flagEnvNames(t, "peer")
	clusterVars := flagEnvNames(t, "cluster", "wait")
	for _, c := range []struct {
		file    string
		allowed []map[string]bool
		extra   []string
	}{
		{"systemd/fileshare-master.service", []map[string]bool{masterVars}, nil},
		{"systemd/master.env", []map[string]bool{masterVars}, nil},
		{"systemd/fileshare-peer.service", []map[string]bool{peerVars}, nil},
		{"systemd/peer.env", []map[string]bool{peerVars}, nil},
		{"kubernetes/fileshare.yaml", []map[string]bool{masterVars}, nil},
		{"compose/compose.yaml", []map[string]bool{masterVars, peerVars, clusterVars}, composeOnly},
		{"Containerfile", []map[string]bool{masterVars}, nil},
		{"README.md", []map[string]bool{masterVars, peerVars, clusterVars}, composeOnly},
	} {
		data, err := os.ReadFile(filepath.Join("..", "..", "deploy", c.file))
		if err != nil {
			t.Fatal(err)
		}
		refs := envRef.FindAllString(string(data), -1)
		if len(refs) == 0 && c.file != "Containerfile" {
			t.Errorf("%s sets no FILESHARE_* variable; is it configured another way?", c.file)
		}
		for _, v := range refs {
			known := slices.Contains(c.extra, v)
			for _, set := range c.allowed {
				known = known || set[v]
			}
			if !known {
				t.Errorf("deploy/%s uses %s, which is no flag of the command it configures", c.file, v)
			}
		}
	}
}

// The check above could fail: a made-up variable is not a flag.
func TestFlagEnvNamesRejectMadeUpVariables(t *testing.T) {
	vars := flagEnvNames(t, "master")
	for _, want := range []string{"FILESHARE_DATA_DIR", "FILESHARE_CLEANUP_DEAD_MASTERS", "FILESHARE_MIN_QUORUM", "FILESHARE_SERVER_STABILIZATION_TIME", "FILESHARE_LOG_LEVEL"} {
		if !vars[want] {
			t.Errorf("%s is not a master flag variable", want)
		}
	}
	if vars["FILESHARE_DATADIR"] || vars["FILESHARE_MASTERS"] {
		t.Error("a variable that is no master flag was accepted")
	}
}
