#!/usr/bin/env bash
# bench-tracker.sh: the FileShare tracker cluster side by side with Debian's
# opentracker, under one load generator (`fileshare bench announce`).
#
# It builds fileshare (or uses $FILESHARE), starts /usr/bin/opentracker on
# 127.0.0.1:$OT_PORT (TCP and UDP; default 16969) with a whitelist of the
# benchmark's swarms (Debian builds opentracker whitelist-only), and runs,
# for HTTP and then UDP, the same announce load against opentracker and
# against a 3-master cluster that `fileshare bench announce` starts itself
# (spread over all three masters' URLs). It prints each summary line and,
# per protocol, both rates and their ratio (cluster / opentracker).
#
# Usage: scripts/bench-tracker.sh [extra `bench announce` flags...]
#   DURATION=10s CLIENTS=64 SWARMS=10000 OT_PORT=16969 scripts/bench-tracker.sh --mix changes=10,renew=85,stopped=5
#
# Everything runs on loopback. Whatever it starts (opentracker, the bench
# process and through it the masters) is stopped by PID on exit, also on
# Ctrl-C. Needs bash, go (unless $FILESHARE is set) and opentracker
# (apt-get install opentracker).
set -euo pipefail

DURATION=${DURATION:-10s}
CLIENTS=${CLIENTS:-64}
SWARMS=${SWARMS:-10000}
OT_PORT=${OT_PORT:-16969}
OPENTRACKER=${OPENTRACKER:-/usr/bin/opentracker}

if [[ ! -x $OPENTRACKER ]]; then
	echo "bench-tracker: $OPENTRACKER not found; install it with: apt-get install opentracker (or set OPENTRACKER)" >&2
	exit 2
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

if [[ -z ${FILESHARE:-} ]]; then
	here=$(cd "$(dirname "$0")/.." && pwd)
	echo "bench-tracker: building fileshare" >&2
	(cd "$here" && go build -o "$work/fileshare" ./cmd/fileshare)
	FILESHARE=$work/fileshare
fi

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

# run LABEL ARGS...: runs one `bench announce` (by PID, so the trap can
# stop it), echoes its output and sets $rate to its announces/s.
run() {
	local label=$1
	shift
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
	rate=$(awk '/announces\/s/ { for (i = 1; i < NF; i++) if ($(i+1) == "announces/s,") print $i }' "$work/out" | tail -1)
	if [[ -z $rate ]]; then
		echo "bench-tracker: no announces/s figure in the $label output" >&2
		exit 1
	fi
}

summary=()
for proto in http udp; do
	run "opentracker $proto" --proto "$proto" --target "$proto://127.0.0.1:$OT_PORT/announce" "$@"
	ot=$rate
	run "cluster $proto" --proto "$proto" "$@"
	cl=$rate
	summary+=("$(awk -v p="$proto" -v o="$ot" -v c="$cl" 'BEGIN { printf "%-4s opentracker %8.0f announces/s   fileshare 3-master cluster %8.0f announces/s   ratio %.2f", p, o, c, (o > 0 ? c / o : 0) }')")
done
echo
echo "bench-tracker: clients=$CLIENTS swarms=$SWARMS duration=$DURATION (each run) $*"
printf '%s\n' "${summary[@]}"
