// Package testenv decides, once for every test in the tree, what a test
// does when the machine lacks what it needs (root, a command, a kernel
// feature): it skips on a developer's machine and fails where
// FILESHARE_REQUIRE_ROOT_TESTS=1 (CI runs as root with every tool
// installed and sets it, so a path that needs root cannot silently stop
// being tested there).
//
//	func TestKernelFaults(t *testing.T) {
//		testenv.NeedRoot(t, "dropping packets with iptables")
//		ipt := testenv.NeedTool(t, "iptables", "iptables")
//		…
//	}
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// RequireVar is the environment variable that turns every skip of this
// package into a failure when set to 1.
const RequireVar = "FILESHARE_REQUIRE_ROOT_TESTS"

// Required reports whether RequireVar=1: a missing privilege or tool is
// then a failure, not a skip.
func Required() bool { return os.Getenv(RequireVar) == "1" }

// Unavailable ends t because why (what is missing, and how to get it):
// a skip, or a failure when Required.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if Required() {
		t.Fatal(why + "; failing because " + RequireVar + "=1")
	}
	t.Skip(why + "; set " + RequireVar + "=1 to make this a failure")
}

// NeedRoot ends t (Unavailable) unless the process runs as root; what
// says what needs it ("mounting a tmpfs").
func NeedRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, what+" needs root")
	}
}

// NeedTool returns the path of the command name, or ends t (Unavailable)
// naming the Debian package pkg that installs it.
func NeedTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, fmt.Sprintf("needs the %s command (apt-get install %s)", name, pkg))
	}
	return p
}
