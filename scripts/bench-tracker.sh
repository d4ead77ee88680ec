#!/usr/bin/env bash
# bench-tracker.sh: the FileShare tracker cluster side by side with Debian's
# opentracker, under one load generator (`fileshare bench announce`).
#
# It builds fileshare (or uses $FILESHARE), starts /usr/bin/opentracker on
# 127.0.0.1:$OT_PORT (TCP and UDP; default 16969) with a whitelist of the
# benchmark's swarms (Debian builds opentracker whitelist-only), and, for
# UDP and then HTTP, measures opentracker and a 3-master cluster (TLS
# between the masters) that `fileshare bench announce` starts itself,
# spread over all three masters' URLs. Each tracker gets one `bench
# announce` per protocol: one warm-up (3 peers in every swarm), then
#
#   closed loop   CLIENTS workers, each waiting for its answer, DURATION,
#                 the steady mix (10 % new peers, 85 % re-announces, 5 %
#                 stops); with the CPU (user+system, from /proc) of
#                 opentracker or of every master per answered announce
#   open loop     --find-max: the highest offered rate held with p99 ≤ 50 ms
#                 and < 0.1 % unanswered, starting at the closed-loop rate,
#                 steps of STEP, within FIND_MAX_TIME
#   flash crowd   every announce a new peer on 16 hot swarms, closed loop,
#                 FLASH_DURATION
#
# and one master (`--nodes 1`, a durable, fsyncing tracker) closed loop on
# UDP. It prints each run's output and at the end one table with every
# figure and the ratio fileshare / opentracker (for CPU per announce,
# lower is better). Without opentracker it measures the cluster alone and
# says so.
#
# Usage: scripts/bench-tracker.sh [extra `bench announce` flags...]
#   DURATION=10s FLASH_DURATION=5s STEP=2s FIND_MAX_TIME=16s CLIENTS=64 \
#   SWARMS=10000 OT_PORT=16969 ONE_MASTER=1 scripts/bench-tracker.sh
# Extra flags go to every `bench announce` (a --mix shapes the closed loop
# and the search; the flash crowd replaces it). With the defaults a run
# takes three to four minutes.
#
# PRIVATE=N measures the private tracker's cost instead: the 3-master
# cluster over HTTP, closed loop, open mode then private mode (N members,
# every announce with a passkey; --private-members), twice each in
# alternation, and prints announces/s and the ratio private / open.
#   PRIVATE=16 DURATION=10s scripts/bench-tracker.sh
#
# Everything runs on loopback. Whatever it starts (opentracker, the bench
# process and through it the masters) is stopped by PID on exit, also on
# Ctrl-C. Needs bash, awk, go (unless $FILESHARE is set) and opentracker
# (apt-get install opentracker).
set -euo pipefail

DURATION=${DURATION:-10s}
FLASH_DURATION=${FLASH_DURATION:-5s}
STEP=${STEP:-2s}
FIND_MAX_TIME=${FIND_MAX_TIME:-16s}
CLIENTS=${CLIENTS:-64}
SWARMS=${SWARMS:-10000}
OT_PORT=${OT_PORT:-16969}
ONE_MASTER=${ONE_MASTER:-1}
OPENTRACKER=${OPENTRACKER:-/usr/bin/opentracker}
PRIVATE=${PRIVATE:-0}

have_ot=1
if ((PRIVATE)); then
	have_ot=0 # the private comparison is the cluster against itself
elif [[ ! -x $OPENTRACKER ]]; then
	echo "bench-tracker: $OPENTRACKER not found: measuring the cluster alone, with no opentracker to compare with (install it with: apt-get install opentracker, or set OPENTRACKER)" >&2
	have_ot=0
fi

work=$(mktemp -d -t fileshare-bench-tracker.XXXXXX)
ot_pid=""
bench_pid=""
cleanup() {
	if [[ -n $bench_pid ]] && kill -0 "$bench_pid" 2>/dev/null; then
		kill -TERM "$bench_pid" 2>/dev/null || true # it stops its masters
		wait "$bench_pid" 2>/dev/null || true
	fi
	if [[ -n $ot_pid ]] && kill -0 "$ot_pid" 2>/dev/null; then
		kill -TERM "$ot_pid" 2>/dev/null || true
		wait "$ot_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

began=$SECONDS
if [[ -z ${FILESHARE:-} ]]; then
	here=$(cd "$(dirname "$0")/.." && pwd)
	echo "bench-tracker: building fileshare" >&2
	(cd "$here" && go build -o "$work/fileshare" ./cmd/fileshare)
	FILESHARE=$work/fileshare
fi

if ((have_ot)); then
	# opentracker drops to user nobody before it reads the whitelist.
	chmod 755 "$work"
	"$FILESHARE" bench announce --swarms "$SWARMS" --write-swarms "$work/whitelist.txt"
	chmod 644 "$work/whitelist.txt"
	printf 'access.whitelist %s\n' "$work/whitelist.txt" >"$work/opentracker.conf"
	(cd "$work" && exec "$OPENTRACKER" -i 127.0.0.1 -p "$OT_PORT" -P "$OT_PORT" -f "$work/opentracker.conf") >"$work/opentracker.log" 2>&1 &
	ot_pid=$!
	# Wait (bounded) until opentracker answers an announce of the last
	# whitelisted swarm: it loads the whitelist on a thread of its own.
	last=$(tail -1 "$work/whitelist.txt" | sed 's/../%&/g')
	ready() {
		local reply
		exec 3<>"/dev/tcp/127.0.0.1/$OT_PORT" || return 1
		printf 'GET /announce?info_hash=%s&peer_id=-FB0001-readycheck00&port=1&left=0&compact=1&event=stopped&numwant=0 HTTP/1.0\r\n\r\n' "$last" >&3
		reply=$(cat <&3)
		exec 3<&-
		[[ $reply == *interval* ]]
	}
	for ((i = 0; ; i++)); do
		if ready 2>/dev/null; then
			break
		fi
		if ! kill -0 "$ot_pid" 2>/dev/null || ((i >= 100)); then
			echo "bench-tracker: opentracker did not start on 127.0.0.1:$OT_PORT (port taken? set OT_PORT):" >&2
			cat "$work/opentracker.log" >&2
			exit 1
		fi
		sleep 0.1
	done
fi

# run KEY LABEL ARGS...: runs one `bench announce` (by PID, so the trap can
# stop it), echoes its output prefixed with LABEL and records its figures:
# fig[KEY.rate] and fig[KEY.cpu] (closed loop: announces/s, CPU µs per
# announce), fig[KEY.max] (the highest open-loop rate held) and
# fig[KEY.flash] (flash crowd: announces/s).
declare -A fig
run() {
	local key=$1 label=$2
	shift 2
	"$FILESHARE" bench announce --clients "$CLIENTS" --swarms "$SWARMS" --duration "$DURATION" "$@" >"$work/out" 2>&1 &
	bench_pid=$!
	local rc=0
	wait "$bench_pid" || rc=$?
	bench_pid=""
	sed "s/^/$label: /" "$work/out"
	if ((rc != 0)); then
		echo "bench-tracker: $label failed (exit $rc)" >&2
		exit 1
	fi
	local steady=$work/out.steady flash=$work/out.flash
	grep 'announces/s,' "$work/out" | grep -v 'mix=flash-crowd' >"$steady" || true
	grep 'announces/s,.*mix=flash-crowd' "$work/out" >"$flash" || true
	fig[$key.rate]=$(awk '{ for (i = 1; i < NF; i++) if ($(i+1) == "announces/s,") print $i }' "$steady" | tail -1)
	fig[$key.cpu]=$(sed -n 's/.*cpu_us\/announce=\([0-9.]*\).*/\1/p' "$steady" | tail -1)
	fig[$key.flash]=$(awk '{ for (i = 1; i < NF; i++) if ($(i+1) == "announces/s,") print $i }' "$flash" | tail -1)
	fig[$key.max]=$(sed -n 's/.* max sustained: \([0-9]*\) announces\/s.*/\1/p' "$work/out" | tail -1)
	if [[ -z ${fig[$key.rate]}${fig[$key.max]} ]]; then
		echo "bench-tracker: no announces/s figure in the $label output" >&2
		exit 1
	fi
}

if ((PRIVATE)); then
	for round in 1 2; do
		run "open.$round" "open round $round" --proto http "$@"
		run "priv.$round" "private round $round" --proto http --private-members "$PRIVATE" "$@"
	done
	echo
	echo "bench-tracker: private mode ($PRIVATE members, a passkey on every announce) against open mode, 3 masters, HTTP closed loop, clients=$CLIENTS swarms=$SWARMS $DURATION each; extra flags: ${*:-none}; took $((SECONDS - began)) s"
	printf '| %-8s | %13s | %13s | %13s |\n' round "open ann/s" "private ann/s" "private/open"
	for round in 1 2; do
		awk -v r="$round" -v o="${fig[open.$round.rate]}" -v p="${fig[priv.$round.rate]}" 'BEGIN { printf "| %-8s | %13s | %13s | %13.2f |\n", r, o, p, p / o }'
	done
	exit 0
fi

# One warm-up per tracker and protocol, then the closed loop, the search
# (from the closed-loop rate) and the flash crowd.
measurements=(--measure closed,find-max,flash-crowd --flash-duration "$FLASH_DURATION" --step "$STEP" --find-max-time "$FIND_MAX_TIME")
for proto in udp http; do
	if ((have_ot)); then
		run "ot.$proto" "opentracker $proto" --proto "$proto" --target "$proto://127.0.0.1:$OT_PORT/announce" --cpu-pids "$ot_pid" "${measurements[@]}" "$@"
	fi
	run "cl.$proto" "cluster $proto" --proto "$proto" "${measurements[@]}" "$@"
done
if ((ONE_MASTER)); then
	run "one.udp" "1 master udp" --proto udp --nodes 1 "$@"
fi

# row LABEL OT FS: one table row; the ratio is FS / OT.
row() {
	awk -v l="$1" -v o="${2:-}" -v c="${3:-}" 'BEGIN {
		r = (o != "" && c != "" && o > 0) ? sprintf("%.2f", c / o) : "-"
		printf "| %-38s | %11s | %11s | %5s |\n", l, (o == "" ? "-" : o), (c == "" ? "-" : c), r
	}'
}
echo
echo "bench-tracker: clients=$CLIENTS swarms=$SWARMS closed loop $DURATION, flash crowd $FLASH_DURATION, find-max steps of $STEP within $FIND_MAX_TIME; extra flags: ${*:-none}; took $((SECONDS - began)) s"
if ((!have_ot)); then
	echo "bench-tracker: no opentracker at $OPENTRACKER: the cluster's figures alone"
fi
echo "fileshare: 3 masters (TLS between them) unless the row says 1 master; ratio = fileshare / opentracker (for CPU per announce, lower is better)"
printf '| %-38s | %11s | %11s | %5s |\n' "" opentracker fileshare ratio
printf '|%s|%s|%s|%s|\n' "----------------------------------------" "-------------" "-------------" "-------"
for proto in udp http; do
	P=${proto^^}
	row "$P closed loop, announces/s" "${fig[ot.$proto.rate]:-}" "${fig[cl.$proto.rate]:-}"
	row "$P CPU us per announce" "${fig[ot.$proto.cpu]:-}" "${fig[cl.$proto.cpu]:-}"
	row "$P open-loop max, announces/s" "${fig[ot.$proto.max]:-}" "${fig[cl.$proto.max]:-}"
	row "$P flash crowd, announces/s" "${fig[ot.$proto.flash]:-}" "${fig[cl.$proto.flash]:-}"
	if [[ $proto == udp ]] && ((ONE_MASTER)); then
		row "UDP closed loop, announces/s, 1 master" "${fig[ot.udp.rate]:-}" "${fig[one.udp.rate]:-}"
		row "UDP CPU us per announce, 1 master" "${fig[ot.udp.cpu]:-}" "${fig[one.udp.cpu]:-}"
	fi
done
