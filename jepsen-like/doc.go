// Package jepsenlike is FileShare's fault-injection harness: it runs a real
// SwarmMaster cluster, hurts it on purpose, and checks that nothing the
// cluster acknowledged was lost and no read saw the past.
//
// It follows Jepsen (and Porcupine, Maelstrom, MIT 6.5840's labs): a test
// is a workload of concurrent clients, a nemesis that injects faults on a
// schedule, a history of every operation, and checkers that judge the
// history afterwards. Nothing is judged while the test runs; the history
// alone decides.
//
// # A run, step by step
//
// Run (and the CLI, `fileshare jepsen`) does this:
//
//  1. Start 3 or 5 master processes of the fileshare binary. Master i
//     listens on its own loopback address 127.0.0.(10+i) and dials from it
//     (transport.Mux binds outgoing connections to the listen IP), so an IP
//     names a master and a fault can target one direction of one link.
//     Each master has its own data dir and log file, and is controlled by
//     PID only: SIGKILL, SIGSTOP, SIGCONT, SIGTERM. It runs with a peer
//     lease longer than the test, so no client's holdings expire.
//  2. Start C clients (workload.go). Each acts as a peer: it joins before
//     its first write, then registers, unregisters, looks up and searches
//     K shared files, paced by one token bucket to --rate ops/s. Half the
//     clients use the whole master list with failover, as real peers do;
//     the other half are pinned to one master, as a Jepsen client is bound
//     to a node, so a partitioned minority's answers are tested too.
//     Every operation is recorded with its invocation and completion
//     times and its outcome: ok, fail (certainly not applied) or info
//     (unknown, e.g. it timed out). A client whose operation ends info
//     continues as a new process with a new peer ID: it cannot know what
//     its old peer holds. With --workload tracker (Config.Workloads)
//     every master also serves an HTTP BitTorrent tracker on its own IP,
//     and C clients each run a few simulated peers, with their own peer_ids and ports, that
//     announce started, re-announce, completed and stopped to a master
//     drawn at random per announce (tracker_workload.go); index,tracker
//     runs both workloads side by side, sharing --rate. The masters' peer
//     lifetime is the peer lease, longer than the run, so no swarm entry
//     may expire.
//  3. Meanwhile the nemesis (nemesis.go) starts a fault every --interval,
//     holds it for a drawn time, and heals it. The schedule is drawn from
//     --seed alone (PlanSchedule), so a seed replays the same faults;
//     schedule.json records the plan and what really happened when.
//  4. At the end: heal everything, wait until every master agrees on a
//     leader and has caught up, read every file once more at the
//     linearizable level (the final reads), compare the masters' index
//     digests, stop the masters, and check.
//
// # Faults
//
// kill and pause hit a random minority; kill-leader and isolate-leader
// find the leader when they start; partition cuts random halves; one-way
// cuts what one master sends or receives; ring is Jepsen's majorities
// ring; bridge joins two halves through one master; rolling-restart
// restarts every master in turn; membership removes a master with
// Cluster.Remove and later wipes it and adds it back with --join (a
// removed master must never restart from its old state); delay and loss
// slow or drop packets between masters.
//
// Five faults hurt the disk, the power and the clock:
//
//   - disk-full (root): every master's data dir lies on a 256 MiB tmpfs of
//     its own, mounted inside the harness's private mount namespace (the
//     same re-exec as the network namespace, so the host never sees it)
//     and unmounted at the end. The fault writes a filler file into one
//     master's filesystem until ENOSPC, holds, and deletes it. The
//     cluster must keep serving (a majority has room), lose nothing, and
//     the full master must not crash: it may stop only if its log says
//     the disk is full (a self-stop, restarted at the heal). Without root
//     the fault is skipped and the results say so (Results.Skipped).
//   - corrupt: SIGTERM one master, flip bytes in or truncate its raft.db
//     or a file of its newest snapshot (the fault asks the master for a
//     snapshot first), and start it. It must refuse to start with exit
//     status 4 (reported as "refused to start: damaged data dir", not a
//     crash; the heal removes it from the configuration, wipes it and
//     adds it back with --join) or start and recover without ever
//     serving a wrong index (heal-digests, digests, linearizable).
//   - power-loss and power-loss-all (root on Linux with /dev/fuse): every
//     master's data dir is a FUSE filesystem of the harness (powerFS,
//     go-fuse, mounted in the private mount namespace) that passes
//     everything through to a backing directory and records how to undo
//     each write, size change and directory operation until it is made
//     durable: a file's changes by its fsync or fdatasync, directory
//     operations in order by an fsync of the directory or of a file one
//     of them created (as a journaling filesystem commits them). The
//     fault SIGKILLs one master (or all at once), undoes what was not
//     durable (variant "torn": each file's last unsynced write keeps a
//     prefix cut at a 512-byte boundary) and, at the heal, starts it
//     again. Every acknowledged write must survive (each was fsynced on
//     a majority first), or the master refuses to start (exit status 4)
//     and is replaced; no master may serve a wrong index. The
//     self-test: masters run with FILESHARE_UNSAFE_NO_FSYNC=1 skip fsync,
//     and power-loss-all must make set-full report lost writes.
//   - clock: move one master's wall clock through its
//     FILESHARE_UNSAFE_CLOCK_FILE hook, a jump or a stepwise drift of 30 s
//     to 10 min either way, and hand it leadership (a master reads its
//     wall clock when it becomes leader; the leader runs the peer leases);
//     the heal sets it back to 0s. Runs with clock
//     faults use a peer lease of only the run's length plus 2 minutes, so
//     a master that lets a forward jump expire live peers loses their
//     registrations and set-full fails. Whether dead peers are ever
//     expired is not checked: the lease outlasts the run.
//
// Four faults act on the tracker workload's UDP announces (BEP 15):
// udp-loss, udp-dup, udp-reorder and udp-delay. With any of them (and
// the tracker workload) the masters also serve a UDP tracker, the harness
// runs a UDP proxy (udpProxy) in front of each, and half the workload's
// announces go over UDP through it, by btclient's UDPClient, which
// retransmits as BEP 15 says with the waits scaled down (opTimeout/8,
// doubling). The proxy drops, duplicates, holds back or delays datagrams
// in both directions, per datagram, and counts what it did (Window.UDP).
// A peer stays quiet for a second after a UDP announce, so no copy of it
// can arrive after the peer's next announce (a real client's announces
// are minutes apart, and BEP 15 has no sequence numbers to tell a late
// copy from a new announce). The tracker-once checker: every duplicated
// started or stopped had one effect (swarm counts match the peers listed;
// tracker-set finds nothing lost or resurrected).
//
// Any tracker under test: with Config.TrackerCmd (--tracker-cmd) the
// tracker workload runs against one tracker process started from a
// command template (opentracker, say), under kill and pause, and the
// same checkers say what it kept and lost; restart-recall adds what each
// kill cost (the swarm acknowledged at the kill against the count of the
// first membership change after the restart), which final lists alone
// hide because peers re-announce.
//
// Network faults drop packets rather than close connections, as a real
// network does. Two mechanisms:
//
//   - iptables (root): DROP rules on the masters' loopback addresses, in a
//     chain of our own (FILESHARE-JEPSEN-<pid>) jumped to from OUTPUT,
//     removed exactly at the end. The CLI runs them inside a private
//     network namespace (RunInPrivateNetns), so no rule ever touches the
//     host. Delay needs tc netem, used only if the kernel has it.
//   - proxy (no root, the default for other users): a TCP proxy in front
//     of every master, which advertises the proxy's address; from a
//     connection's source IP the proxy knows which link it carries, and a
//     cut direction's bytes are held back until the heal (see proxyNet).
//
// # Checkers
//
//   - linearizable: porcupine checks each file's history against a model
//     whose state is the set of peers holding the file (model.go). An info
//     write may take effect at any time after it was invoked, or never; an
//     unanswered read constrains nothing and is left out. A search that
//     does not finish in time gives Unknown, never a pass.
//   - set-full: every acknowledged registration that no unregistration
//     could have undone is in the final reads (lost = 0); no acknowledged
//     unregistration comes back (resurrected = 0); plus how long each
//     registration took to become visible to every later read.
//   - tracker-set (tracker workload): after the heal a watcher peer
//     joins every swarm; once every master has applied that, it reads
//     every swarm's peer list from every master (numwant 200, sampled
//     until whole), each read a pure renewal. Every started or completed
//     that was acknowledged, and that no stop could have followed, must be
//     in every master's list (lost = 0); no acknowledged stop that no
//     announce could have followed may be listed (resurrected = 0); no
//     list, during the run or after, may show a peer nobody announced.
//     A re-announce may insert a peer (the answering master's index may
//     be stale), so it excuses a listing but acknowledges nothing.
//   - tracker-agree: every master lists the same peers in every swarm.
//   - digests: every master ends with the same index digest.
//   - heal-digests: after every heal the nemesis holds the workload back
//     until no operation is in flight, and every master that serves
//     (running, in the configuration, ready) must report the same digest
//     within 15 s.
//   - logs: no "panic:", "fatal error:" or "DATA RACE" in any master's
//     log, and no master exited without being told to. Expected exits are
//     self-stops, listed but not failures: a removed master's status 3, a
//     damaged master's refusal (status 4), a full master that says so.
//   - availability (informational): the fraction of ok operations inside
//     and outside fault windows, and how soon writes succeeded again after
//     each fault started and healed.
//
// The verdict is invalid if any checker found a violation, else unknown
// if any could not decide, else valid. The CLI exits 0, 1 or 2
// accordingly.
//
// # Output
//
// The output directory holds report.html (start there: the verdict in
// plain words, with links to the rest), results.json, history.jsonl (one
// Op per line; ReadHistory reads it back), schedule.json,
// linearizability.html (porcupine's interactive view, the fault windows
// on a "nemesis" row), latency.svg (every operation's latency over time,
// fault windows shaded) and logs/ (every master's log, all incarnations).
//
// # Proving the harness works
//
// A checker that never fails proves nothing. Masters started with
// FILESHARE_UNSAFE_FAULT=stale-reads answer reads locally, so a
// partitioned master serves stale lookups; with ack-before-commit the
// leader acknowledges writes it has not committed, so isolating or
// killing it loses them, index writes and tracker announces alike. The
// tests run the harness against both and require the verdict invalid.
//
// # Using it from Go
//
//	res, err := jepsenlike.Run(ctx, jepsenlike.Config{
//		Binary: "/usr/local/bin/fileshare",
//		Nodes:  3,
//		Time:   30 * time.Second,
//		Kinds:  []jepsenlike.Kind{jepsenlike.KindKill, jepsenlike.KindPartition},
//		Seed:   42,
//		Out:    "/tmp/run",
//	})
//	if err != nil { ... }             // the run could not be carried out
//	if res.Verdict != jepsenlike.Valid { ... } // see /tmp/run/report.html
package jepsenlike
