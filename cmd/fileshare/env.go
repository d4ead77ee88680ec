package main

import (
	"fileshare/internal/buildinfo"
	"fmt"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envPrefix starts the environment variable of every flag: --data-dir is
// FILESHARE_DATA_DIR, --log-level FILESHARE_LOG_LEVEL.
const envPrefix = "FILESHARE_"

// envName returns the environment variable that sets flag name.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// envHelp is the paragraph the help of every command ends with.
const envHelp = `Every flag can also be set in the environment as FILESHARE_<FLAG>: upper
case, '-' becomes '_' (--data-dir is FILESHARE_DATA_DIR, --log-level is
FILESHARE_LOG_LEVEL; a boolean flag takes true or false). A flag given on
the command line wins over its variable.`

// applyEnv sets each flag of cmd (its own and those it inherits) that the
// command line did not set from its FILESHARE_<FLAG> variable, if lookup
// finds one. It runs after cobra has parsed the command line, so a flag
// given there wins. --help and --version are not read from the
// environment. An unusable value is an error naming the variable.
func applyEnv(cmd *cobra.Command, lookup func(string) (string, bool)) error {
	var errs []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" || f.Name == "version" {
			return
		}
		v, ok := lookup(envName(f.Name))
		if !ok {
			return
		}
		if err := cmd.Flags().Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Sprintf("%s=%q (for --%s): %v", envName(f.Name), v, f.Name, err))
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("%s; fix or unset the variable", strings.Join(errs, "; "))
	}
	return nil
}

// version describes this build (buildinfo.Version) and the Go version
// that built it.
func version() string {
	return buildinfo.Version() + " (" + runtime.Version() + ")"
}
