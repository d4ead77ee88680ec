// Package netlab builds small private networks out of Linux network
// namespaces for tests: one hub namespace holding a bridge, and one host
// namespace per program under test, each joined to the bridge by a veth
// pair. Programs run inside a namespace through `ip netns exec`, which
// execs the program itself, so the PID a test holds is the program's.
//
// Everything is created inside the new namespaces (`ip -n NS ...`, and
// the veth pairs are born in the hub); the root network namespace is never
// touched, so a lab cannot disturb the machine's own network, and a
// program inside a host namespace reaches nothing but the hub and the
// other hosts. The addresses (10.77.X.0/24, X random per lab) cannot clash
// with the machine's because they exist only inside the lab; X differs per
// lab only so that logs of concurrent runs are told apart.
//
// A lab needs root and the ip(8) tool: [Available] says whether this
// process has them. [New] builds a lab, [Lab.Close] SIGKILLs every process
// still inside its namespaces (by PID, from `ip netns pids`) and deletes
// them. A [Layout] (the names and addresses) is plain data, so a test can
// hand it to a child process, for example a copy of itself re-executed in
// the hub, which then starts programs with [NS.Command].
//
// # NAT labs
//
// [NewNAT] builds the Internet in miniature: a public network (the hub's
// bridge on 203.0.113.0/24, where masters and public hosts live) and
// homes, each a host on a private /28 of 192.0.2.0/24 behind a router
// namespace that forwards, masquerades (iptables MASQUERADE, port
// preserving or --random-fully) and drops unsolicited inbound packets.
// [NATLab.FlushMappings] makes a router forget its mappings. The
// documentation ranges exist only inside the lab's namespaces.
package netlab
