// Command fileshare is FileShare's one binary: it runs a SwarmMaster
// (fileshare master), administers a cluster (fileshare cluster …), and more.
// It is thin: flags, signals and output; the logic lives in the packages.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the CLI and returns the exit code: 0 success, 1 any error
// (a clear message on stderr, never a panic).
func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		var ec *exitCode
		if errors.As(err, &ec) {
			if ec.msg != "" {
				fmt.Fprintln(stderr, "fileshare:", ec.msg)
			}
			return ec.code
		}
		fmt.Fprintln(stderr, "fileshare:", errorMessage(err))
		return 1
	}
	return 0
}

// exitCode carries a specific exit status out of a command.
type exitCode struct {
	code int
	msg  string
}

func (e *exitCode) Error() string { return e.msg }

type globalFlags struct {
	logFormat string
	logLevel  string
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "fileshare",
		Short:         "FileShare: peer-to-peer file sharing with a fault-tolerant Raft index",
		Long:          "FileShare: peer-to-peer file sharing with a fault-tolerant Raft index.\n\n" + envHelp,
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
		// Runs for every command (none defines its own), after cobra
		// has parsed the command line, so a flag given there wins.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd, os.LookupEnv)
		},
	}
	root.SetVersionTemplate("fileshare {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w%s\nRun '%s --help' for usage.", err, certFlagHint(err), c.CommandPath())
	})
	root.AddCommand(newMasterCmd(g, stderr), newClusterCmd(g, stdout), newBenchCmd(stdout), newJepsenCmd(g, stdout, stderr), newPeerCmd(g, stderr), newSearchCmd(g, stdout), newPeersCmd(stdout), newHoldersCmd(stdout, stderr), newGetCmd(g, stdout, stderr), newDemoCmd(g, stdout, stderr), newTLSCmd(stdout), newTrackerCmd(stdout), newSnapshotCmd(stdout))
	return root
}

func (g *globalFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(g.logFormat) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", g.logFormat)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
