package proccluster

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Voter is one entry of a master's --initial-cluster: a master's ID and
// the address the others reach it at.
type Voter struct {
	ID   string
	Addr string
}

// Spec describes one `fileshare master` process. A zero field is left out
// of the argv, so the master's own default applies.
type Spec struct {
	// ID is the master's --id. Required.
	ID string
	// DataDir is the master's --data-dir. Required.
	DataDir string
	// Listen is the master's cluster --listen address. Required.
	Listen string
	// Advertise is the master's --advertise address; "" (or Listen
	// itself) leaves the flag out.
	Advertise string
	// HTTP is the master's --http status address. The default status
	// poll needs it.
	HTTP string
	// InitialCluster is the master's --initial-cluster, used when Join is
	// empty.
	InitialCluster []Voter
	// Join, if not empty, makes the master join through these masters
	// (--join) instead of bootstrapping with InitialCluster.
	Join []string
	// JoinTimeout is the master's --join-timeout, used with Join.
	JoinTimeout time.Duration
	// Flags are further master flags, appended after the ones above.
	Flags []string
	// Env is the process's whole environment; nil means this process's.
	Env []string
	// LogPath is the file the process's stdout and stderr are appended
	// to. Required; its directory must exist.
	LogPath string
}

// Args returns the process's argv after the binary's name:
//
//	master --id ID --data-dir DIR --listen ADDR [--advertise ADDR] [--http ADDR]
//	       [--initial-cluster ID=ADDR,... | --join ADDR,... [--join-timeout D]] [Flags...]
func (s Spec) Args() []string {
	args := []string{"master", "--id", s.ID, "--data-dir", s.DataDir, "--listen", s.Listen}
	if s.Advertise != "" && s.Advertise != s.Listen {
		args = append(args, "--advertise", s.Advertise)
	}
	if s.HTTP != "" {
		args = append(args, "--http", s.HTTP)
	}
	switch {
	case len(s.Join) > 0:
		args = append(args, "--join", strings.Join(s.Join, ","))
		if s.JoinTimeout > 0 {
			args = append(args, "--join-timeout", s.JoinTimeout.String())
		}
	case len(s.InitialCluster) > 0:
		vs := make([]string, len(s.InitialCluster))
		for i, v := range s.InitialCluster {
			vs[i] = v.ID + "=" + v.Addr
		}
		args = append(args, "--initial-cluster", strings.Join(vs, ","))
	}
	return append(args, s.Flags...)
}

// clone returns a copy of s that shares no slice with it.
func (s Spec) clone() Spec {
	s.InitialCluster = slices.Clone(s.InitialCluster)
	s.Join = slices.Clone(s.Join)
	s.Flags = slices.Clone(s.Flags)
	s.Env = slices.Clone(s.Env)
	return s
}

// check rejects a Spec that cannot start a master.
func (s Spec) check() error {
	var missing []string
	for _, f := range []struct{ name, v string }{{"ID", s.ID}, {"DataDir", s.DataDir}, {"Listen", s.Listen}, {"LogPath", s.LogPath}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: master %q has no %s", ErrBadSpec, s.ID, strings.Join(missing, ", "))
	}
	return nil
}

// ErrBadSpec means a Spec lacks a required field.
var ErrBadSpec = errors.New("proccluster: incomplete master spec")
