#!/usr/bin/env bash
# CPU per request of the sidecar's threads, decision log off vs on: where
# the log's cost lands (its writer thread, or the request threads).
#
#   scripts/audit_cpu.sh [ROUNDS] [-- extra serve flags for the "on" server]
#   scripts/audit_cpu.sh 8 -- --audit-sync batch --audit-linger-ms 20
#
# Both servers are pinned to core 0 (so that all their CPU is theirs to
# account) and wrk to core 1; the load alternates between them, 3 s each,
# ROUNDS times (default 8). For each thread name, the CPU time it used
# (/proc/PID/task/*/stat utime+stime) divided by the requests served; the
# median over the rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-8}
shift || true
[ "${1:-}" = "--" ] && shift
on_flags=("$@")
[ ${#on_flags[@]} -eq 0 ] && on_flags=(--audit-sync batch)
# shellcheck source=scripts/lib/sidecar_load.sh
. scripts/lib/sidecar_load.sh
pin_server=(taskset -c 0)
snap() { # per thread name: CPU ticks
  for t in /proc/"$(cat "$work/pid$1")"/task/*; do echo "$(cat "$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done \
    | awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort
}
start_sidecar 18601 "$work/d18601" --audit-log off
echo "$sidecar_pid" > "$work/pid18601"
start_sidecar 18602 "$work/d18602" "${on_flags[@]}"
echo "$sidecar_pid" > "$work/pid18602"
hz=$(getconf CLK_TCK)
reloads_18601=$(reload_count 18601) reloads_18602=$(reload_count 18602)
for r in $(seq 1 "$rounds"); do
  for port in 18601 18602; do
    s0=$(snap $port)
    n=$(taskset -c 1 wrk -t1 -c16 -d3s -s "$work/body.lua" "http://127.0.0.1:$port/v1/is_authorized" | awk '/requests in/ {print $1}')
    s1=$(snap $port)
    mode=off; [ $port = 18602 ] && mode=on
    join <(echo "$s0") <(echo "$s1") | awk -v n="$n" -v hz="$hz" -v m=$mode \
      '{t += $3-$2; if ($1 != "partnergate") printf "%s %s %.2f\n", m, $1, ($3-$2)/hz*1e6/n} END {printf "%s all-threads %.2f\n", m, t/hz*1e6/n}'
  done
done > "$work/samples"
reloads_flat off 18601 "$reloads_18601"
reloads_flat on 18602 "$reloads_18602"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%FT%TZ); $rounds rounds of 3 s; on: ${on_flags[*]}"
echo "CPU µs per request (median of $rounds rounds):"
sort -k1,1 -k2,2 -k3,3g "$work/samples" | awk '
  { k = $1 " " $2; v[k, ++c[k]] = $3 }
  END { for (k in c) { n = c[k]; m = (n % 2) ? v[k, (n+1)/2] : (v[k, n/2] + v[k, n/2+1]) / 2; printf "  %-28s %8.2f\n", k, m } }' | sort
