// Package buildinfo names the build of the running binary, for
// `fileshare --version`, fileshare_build_info, backups and the dashboard.
package buildinfo

import "runtime/debug"

// Version names this build: the module version of a released build, else
// the first 12 hex digits of the VCS revision (with "+dirty" for
// uncommitted changes), else "devel".
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	return Of(bi)
}

// Of is Version for the given build information.
func Of(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "+dirty"
	}
	return rev
}
