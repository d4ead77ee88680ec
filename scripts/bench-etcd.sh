#!/usr/bin/env bash
# Side-by-side with etcd, in one run on this machine: 3 members of Debian's
# etcd-server (fsync on, as by default) on loopback against a 3-master
# FileShare cluster (TLS, as in production), both driven at the same
# concurrency, one after the other, PAIRS times. Prints each pair's ratio
# and the median ratio.
#
#   bash scripts/bench-etcd.sh                 # 256 clients, 10 s per phase, 3 pairs
#   CLIENTS=64 DURATION=5s PAIRS=1 bash scripts/bench-etcd.sh
#
# Writes: etcd puts of 200-byte values vs `fileshare bench register`
# (single-file registrations, each committed on a majority with fsync).
# Reads: etcd serializable gets vs stale lookups (served by every master),
# and etcd linearizable gets vs linearizable lookups.
# Needs: etcd (apt-get install etcd-server), Go. Everything it starts it
# stops, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-256}
DURATION=${DURATION:-10s}
PAIRS=${PAIRS:-3}
command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/fileshare" ./cmd/fileshare
(cd scripts/etcd-driver && go build -o "$work/etcd-driver" .)

start_etcd() {
  local cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
  rm -rf "$work"/e?
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$work/e$i" \
      --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
      --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token bench \
      >"$work/e$i.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 100); do
    if ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:23791 endpoint health >/dev/null 2>&1; then return; fi
    sleep 0.2
  done
  echo "etcd did not become healthy; its log:" >&2; tail -20 "$work/e1.log" >&2; exit 1
}
stop_etcd() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
rate() { sed -n 's/.*[: ] \([0-9][0-9]*\) \(ops\|acknowledged registrations\|lookups\)\/s.*/\1/p' | head -1; }
ETCD=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793

declare -a wr rs rl
for pair in $(seq "$PAIRS"); do
  start_etcd
  e_put=$("$work/etcd-driver" --endpoints $ETCD --op put --clients "$CLIENTS" --duration "$DURATION"); echo "$e_put"
  e_ser=$("$work/etcd-driver" --endpoints $ETCD --op get-serializable --clients "$CLIENTS" --duration "$DURATION"); echo "$e_ser"
  e_lin=$("$work/etcd-driver" --endpoints $ETCD --op get-linearizable --clients "$CLIENTS" --duration "$DURATION"); echo "$e_lin"
  stop_etcd
  f_reg=$("$work/fileshare" bench register --clients "$CLIENTS" --duration "$DURATION"); echo "$f_reg"
  f_look=$("$work/fileshare" bench lookup --clients "$CLIENTS" --duration "$DURATION"); echo "$f_look"
  ep=$(echo "$e_put" | rate); es=$(echo "$e_ser" | rate); el=$(echo "$e_lin" | rate)
  fr=$(echo "$f_reg" | grep '^register:' | rate)
  fs=$(echo "$f_look" | grep 'lookup stale:' | rate); fl=$(echo "$f_look" | grep 'lookup linearizable:' | rate)
  wr+=("$(awk -v a="$fr" -v b="$ep" 'BEGIN{printf "%.2f", a/b}')")
  rs+=("$(awk -v a="$fs" -v b="$es" 'BEGIN{printf "%.2f", a/b}')")
  rl+=("$(awk -v a="$fl" -v b="$el" 'BEGIN{printf "%.2f", a/b}')")
  echo "pair $pair: register/put ${wr[-1]}x  stale/serializable ${rs[-1]}x  linearizable ${rl[-1]}x"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo "median over $PAIRS pairs: registrations $(median "${wr[@]}")x etcd puts; stale lookups $(median "${rs[@]}")x serializable gets; linearizable lookups $(median "${rl[@]}")x linearizable gets"
