package main

import (
	"errors"
	"strings"

	"fileshare/internal/cfgerr"
	jepsenlike "fileshare/jepsen-like"
	"fileshare/transport"
)

// configFlags is the one table from library config fields to the flags
// that set them. The libraries (master, peer, jepsenlike, client) name
// fields in their errors (a *cfgerr.Error, e.g. master.ConfigError), never
// flags; errorMessage spells each field as its flag here.
// TestConfigFlagsMatchTheBindings checks every entry against the flag
// bound to that field, so the table cannot drift from the flags.
var configFlags = map[string]string{
	// master.Config
	"ID": "--id", "DataDir": "--data-dir", "Listen": "--listen", "Advertise": "--advertise", "HTTP": "--http",
	"InitialCluster": "--initial-cluster", "Join": "--join", "Restore": "--restore", "JoinTimeout": "--join-timeout",
	"PeerLease": "--peer-lease", "HeartbeatTimeout": "--raft-heartbeat-timeout", "ElectionTimeout": "--raft-election-timeout",
	"LeaderLeaseTimeout": "--raft-leader-lease", "SnapshotThreshold": "--snapshot-threshold",
	"TLS":      "--cert-file, --key-file and --trusted-ca-file",
	"Insecure": "--insecure", "EnablePprof": "--enable-pprof", "Metrics": "--metrics",
	"MaxFilesPerPeer": "--max-files-per-peer", "MaxPeersPerIP": "--max-peers-per-ip", "MaxCommandBytes": "--max-entry-bytes",
	"ClusterPort.MaxConns": "--max-conns", "ClusterPort.MaxConnsPerIP": "--max-conns-per-ip", "ClusterPort.MaxMemberConns": "--max-member-conns",
	"ClusterPort.Calls.MaxCallsPerIP": "--max-calls-per-ip", "ClusterPort.Calls.MaxReplyBytesPerConn": "--max-reply-bytes-per-conn",
	"ClusterPort.Calls.WriteTimeout": "--write-timeout", "CleanupDeadMasters": "--cleanup-dead-masters", "MinQuorum": "--min-quorum",
	"DeadMasterTimeout": "--dead-master-timeout", "ServerStabilizationTime": "--server-stabilization-time", "ReadyMaxLag": "--ready-max-lag",
	"Tracker.HTTP": "--tracker-http", "Tracker.UDP": "--tracker-udp", "Tracker.Interval": "--tracker-interval",
	"Tracker.PeerLifetime": "--tracker-peer-lifetime", "Tracker.MaxConnsPerIP": "--tracker-http-max-conns-per-ip",
	"Tracker.MaxNumWant": "--tracker-max-numwant", "Tracker.MaxPeers": "--tracker-max-peers", "Tracker.MaxSwarms": "--tracker-max-swarms",
	"Tracker.MaxPeersPerIP": "--tracker-max-peers-per-ip", "Tracker.MaxPeersPer64": "--tracker-max-peers-per-64",
	"Tracker.MaxPeersPer48": "--tracker-max-peers-per-48", "Tracker.EmptySwarmLifetime": "--tracker-empty-swarm-lifetime",
	"Tracker.MaxRate": "--tracker-max-rate", "RelayBudget": "--relay-budget",
	// master.RecoveryOptions ('fileshare cluster recover')
	"RecoveryOptions.ForceSplitBrainRisk": "'fileshare cluster recover --force-split-brain-risk'",
	// peer.Config (and client.Config's Masters)
	"Masters": "--masters", "CA": "--trusted-ca-file", "ShareDir": "--share", "RescanInterval": "--rescan",
	"MaxUploads": "--max-uploads", "IncludeHidden": "--include-hidden", "Relay": "--relay", "NATInterval": "--nat-interval",
	// jepsenlike.Config
	"Nodes": "--nodes", "Time": "--time", "Interval": "--interval", "Kinds": "--nemesis", "Seed": "--seed", "Workloads": "--workload",
	"Torrents": "--torrents", "Rate": "--rate", "Concurrency": "--concurrency", "Files": "--files", "OpTimeout": "--op-timeout",
	"Out": "--out", "Net": "--net", "KeepData": "--keep-data", "CheckTimeout": "--check-timeout", "TrackerCmd": "--tracker-cmd",
}

// errorMessage is err's message as the CLI prints it: a config field a
// library names is spelled as its flag (configFlags), and errors whose
// remedy is a flag get it named.
func errorMessage(err error) string {
	msg := err.Error()
	// Every *cfgerr.Error in the chain, outermost first.
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if ce, ok := e.(*cfgerr.Error); ok {
			msg = strings.Replace(msg, ce.Error(), ce.Format(func(f string) string { return configFlags[f] }), 1)
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return msg + flagHint(err)
}

// flagHint names the flag that fixes an error of the transport, which
// speaks of ports and certificates, not of flags.
func flagHint(err error) string {
	var nf *transport.NotFileShareError
	switch {
	case errors.As(err, &nf) && nf.Answer == transport.AnswerHTTP:
		return " (give --masters the masters' --listen ports, not their --http ports)"
	case errors.As(err, &nf) && errors.Is(err, transport.ErrTLSMismatch) && nf.LocalTLS:
		return " (the cluster runs with --insecure: leave out --trusted-ca-file, --cert-file and --key-file)"
	case errors.As(err, &nf) && errors.Is(err, transport.ErrTLSMismatch):
		return " (pass --trusted-ca-file with the cluster CA)"
	case errors.As(err, &nf):
		return " (give --masters the masters' --listen ports)"
	case errors.Is(err, jepsenlike.ErrNeedsRoot):
		return " (or run with --net=proxy)"
	}
	return ""
}
