package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
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

// anyKeyFile matches what 'fileshare tls init' writes that no node may hold
// unless it is that node's own: the CA key, the admin key, and every
// master's key (<id>-key.pem).
var anyKeyFile = regexp.MustCompile(`([A-Za-z0-9_.-]*)-key\.pem`)

// keyLeaks returns, for one recipe file, every place that hands a node a
// private key that is not its own: ca-key.pem, admin-key.pem, another
// master's key, or a whole certificate directory. own is the node's ID
// ("" for a peer, which holds no certificate key at all).
func keyLeaksInPaths(where, own string, paths []string) []string {
	var bad []string
	for _, p := range paths {
		for _, m := range anyKeyFile.FindAllStringSubmatch(p, -1) {
			if own == "" || m[1] != own {
				bad = append(bad, fmt.Sprintf("%s hands %s (not its own key) to the node: %q", where, m[0], p))
			}
		}
	}
	return bad
}

// composeKeyLeaks checks a compose file: every service mounts, from the
// certificate directory, only ca.pem and its own certificate and key, one
// file at a time.
func composeKeyLeaks(data []byte) ([]string, error) {
	var doc struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
			Volumes     []any             `yaml:"volumes"`
			Secrets     []any             `yaml:"secrets"`
		} `yaml:"services"`
		Secrets map[string]struct {
			File string `yaml:"file"`
		} `yaml:"secrets"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if len(doc.Services) == 0 {
		return nil, errors.New("no services")
	}
	var bad []string
	for name, svc := range doc.Services {
		own := svc.Environment["FILESHARE_ID"]
		var sources []string
		for _, v := range svc.Volumes {
			switch v := v.(type) {
			case string:
				sources = append(sources, strings.SplitN(v, ":", 2)[0])
			case map[string]any:
				src, _ := v["source"].(string)
				sources = append(sources, src)
			}
		}
		for _, s := range svc.Secrets {
			src, _ := s.(string)
			if m, ok := s.(map[string]any); ok {
				src, _ = m["source"].(string)
			}
			sources = append(sources, doc.Secrets[src].File)
		}
		for _, src := range sources {
			clean := filepath.ToSlash(filepath.Clean(src))
			if strings.HasPrefix(clean, "tls") && !strings.HasSuffix(clean, ".pem") {
				bad = append(bad, fmt.Sprintf("compose service %s mounts the whole certificate directory %q (every key)", name, src))
			}
		}
		bad = append(bad, keyLeaksInPaths("compose service "+name, own, sources)...)
	}
	return bad, nil
}

// kubernetesKeyLeaks checks Kubernetes manifests: a pod template mounts
// exactly one Secret, fileshare-<its master ID>-tls, and no projected or
// other volume brings in another Secret; the commands in the comments
// that create the Secrets put no CA or admin key, nor a whole directory,
// into a Secret.
func kubernetesKeyLeaks(data []byte) ([]string, error) {
	type container struct {
		Env []struct {
			Name  string `yaml:"name"`
			Value string `yaml:"value"`
		} `yaml:"env"`
	}
	var bad []string
	dec := yaml.NewDecoder(bytes.NewReader(data))
	pods := 0
	for {
		var obj struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers     []container `yaml:"containers"`
						InitContainers []container `yaml:"initContainers"`
						Volumes        []struct {
							Name   string `yaml:"name"`
							Secret *struct {
								SecretName string `yaml:"secretName"`
							} `yaml:"secret"`
							Projected *struct {
								Sources []struct {
									Secret *struct {
										Name string `yaml:"name"`
									} `yaml:"secret"`
								} `yaml:"sources"`
							} `yaml:"projected"`
						} `yaml:"volumes"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		spec := obj.Spec.Template.Spec
		if len(spec.Containers) == 0 {
			continue
		}
		pods++
		where := obj.Kind + " " + obj.Metadata.Name
		own := ""
		for _, c := range append(spec.Containers, spec.InitContainers...) {
			for _, e := range c.Env {
				if e.Name == "FILESHARE_ID" {
					own = e.Value
				}
			}
		}
		var secrets []string
		for _, v := range spec.Volumes {
			if v.Secret != nil {
				secrets = append(secrets, v.Secret.SecretName)
			}
			if v.Projected != nil {
				for _, s := range v.Projected.Sources {
					if s.Secret != nil {
						secrets = append(secrets, s.Secret.Name)
					}
				}
			}
		}
		want := "fileshare-" + own + "-tls"
		if own == "" || strings.Contains(own, "$(") {
			bad = append(bad, fmt.Sprintf("%s: the master ID is not fixed in the pod template (%q), so its one Secret cannot be its own", where, own))
		}
		for _, s := range secrets {
			if s != want {
				bad = append(bad, fmt.Sprintf("%s mounts Secret %s; it may mount only its own, %s", where, s, want))
			}
		}
	}
	if pods == 0 {
		return nil, errors.New("no pod template")
	}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, "create secret") && !strings.Contains(line, "--from-file") {
			continue
		}
		for _, f := range regexp.MustCompile(`--from-file=(\S+)`).FindAllStringSubmatch(line, -1) {
			src := f[1][strings.LastIndex(f[1], "=")+1:]
			if !strings.HasSuffix(src, ".pem") || strings.Contains(src, "ca-key") || strings.Contains(src, "admin-key") {
				bad = append(bad, fmt.Sprintf("a Secret is made from %q: only ca.pem and one master's certificate and key belong in it", src))
			}
		}
	}
	return bad, nil
}

// plainKeyLeaks checks a systemd unit, an environment file or the
// Containerfile line by line (comments aside): the only key it names is
// own's.
func plainKeyLeaks(file string, data []byte, own string) []string {
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
			lines = append(lines, t)
		}
	}
	bad := keyLeaksInPaths(file, own, lines)
	for _, l := range lines {
		if (strings.HasPrefix(l, "COPY") || strings.HasPrefix(l, "ADD")) && strings.Contains(l, ".pem") {
			bad = append(bad, fmt.Sprintf("%s copies a certificate or key into the image: %q", file, l))
		}
	}
	return bad
}

// No deployment recipe hands a node the CA's private key, the admin key or
// another node's key: a master gets the CA certificate and its own
// certificate and key, a peer only the CA certificate.
func TestDeployRecipesHandEachNodeOnlyItsOwnKey(t *testing.T) {
	read := func(f string) []byte {
		data, err := os.ReadFile(filepath.Join("..", "..", "deploy", f))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	var bad []string
	got, err := composeKeyLeaks(read("compose/compose.yaml"))
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	bad = append(bad, got...)
	got, err = kubernetesKeyLeaks(read("kubernetes/fileshare.yaml"))
	if err != nil {
		t.Fatalf("fileshare.yaml: %v", err)
	}
	bad = append(bad, got...)
	masterEnv := read("systemd/master.env")
	own := regexp.MustCompile(`(?m)^FILESHARE_ID=(\S+)`).FindSubmatch(masterEnv)
	if own == nil {
		t.Fatal("systemd/master.env sets no FILESHARE_ID")
	}
	bad = append(bad, plainKeyLeaks("systemd/master.env", masterEnv, string(own[1]))...)
	for _, f := range []string{"systemd/peer.env", "systemd/fileshare-master.service", "systemd/fileshare-peer.service", "Containerfile"} {
		bad = append(bad, plainKeyLeaks(f, read(f), "")...)
	}
	for _, b := range bad {
		t.Error(b)
	}
}

// The checks above could fail: the recipes as they were (every key in
// every container, one Secret of every key for all pods) are refused.
func TestDeployKeyChecksRejectSharedKeys(t *testing.T) {
	compose := []byte(`
services:
  m1:
    environment: {FILESHARE_ID: m1}
    volumes: ["./tls:/tls:ro", "m1-data:/data"]
  m2:
    environment: {FILESHARE_ID: m2}
    volumes: ["./tls/ca.pem:/tls/ca.pem:ro", "./tls/m1-key.pem:/tls/m1-key.pem:ro"]
  peer1:
    volumes: ["./tls/ca-key.pem:/tls/ca-key.pem:ro"]
`)
	bad, err := composeKeyLeaks(compose)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 3 {
		t.Errorf("compose: got %d findings, want 3 (directory, another master's key, CA key): %q", len(bad), bad)
	}
	k8s := []byte(`# kubectl create secret generic fileshare-tls --from-file=tls/
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: fileshare}
spec:
  template:
    spec:
      containers:
        - name: master
          env:
            - {name: FILESHARE_ID, value: $(POD_NAME)}
      volumes:
        - name: tls
          secret: {secretName: fileshare-tls}
`)
	bad, err = kubernetesKeyLeaks(k8s)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 3 {
		t.Errorf("kubernetes: got %d findings, want 3 (ID not fixed, shared Secret, Secret from a directory): %q", len(bad), bad)
	}
	if bad := plainKeyLeaks("master.env", []byte("FILESHARE_KEY_FILE=/etc/fileshare/tls/m2-key.pem\n"), "m1"); len(bad) != 1 {
		t.Errorf("master.env naming another master's key: got %q, want one finding", bad)
	}
	if bad := plainKeyLeaks("Containerfile", []byte("COPY tls/ca.pem /tls/ca.pem\n"), ""); len(bad) != 1 {
		t.Errorf("Containerfile copying a certificate: got %q, want one finding", bad)
	}
}
