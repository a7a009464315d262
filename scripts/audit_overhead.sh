#!/usr/bin/env bash
# Sidecar throughput with the decision log on (--audit-sync batch) vs off,
# same machine, same run: POST /v1/is_authorized with wrk on loopback, wrk
# pinned to core 1 where taskset exists, the servers scheduled by the OS as
# a deployed sidecar is. PIN_SERVER=1 pins the servers to core 0: the stress
# case where the log's writer thread has no spare core at all.
#
#   scripts/audit_overhead.sh [SECONDS] [CONNECTIONS] [ROUNDS]
#   AUDIT_FLAGS="--audit-sync never" PIN_SERVER=1 scripts/audit_overhead.sh
#
# Both servers run side by side (the idle one costs nothing) and the load
# alternates between them, ROUNDS times (default 15, of 3 s each), so that
# drift in the machine's speed (a shared VM: ±10% between runs seconds
# apart) hits both modes alike. Each round pairs an off run with an on run
# right before or after it (the order alternates); the result is the median of the rounds' on/off ratios
# (target >= 0.9), with the quartiles and the ratio of the median rates.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
conns=${2:-16}
rounds=${3:-15}
pin_server=() pin_load=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin_load=(taskset -c 1)
  [ "${PIN_SERVER:-0}" = 1 ] && pin_server=(taskset -c 0)
fi
# shellcheck source=scripts/lib/sidecar_load.sh
. scripts/lib/sidecar_load.sh

load() { # $1 = port, $2 = seconds; prints requests/s
  "${pin_load[@]}" wrk -t1 -c"$conns" -d"$2s" -s "$work/body.lua" \
    "http://127.0.0.1:$1/v1/is_authorized" | awk '/Requests\/sec/ {print $2}'
}
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; } # $1 = pid: CPU ticks used so far

start_sidecar 18480 "$work/data-off" --audit-log off
# shellcheck disable=SC2086
start_sidecar 18481 "$work/data-on" ${AUDIT_FLAGS:---audit-sync batch}
load 18480 2 >/dev/null; load 18481 2 >/dev/null # warm-up
reloads_off=$(reload_count 18480) reloads_on=$(reload_count 18481)
# CPU the servers use while loaded (their share of a core): with the servers
# pinned, a share well under 100% means the load generator (or another
# process on the core) set the rate, not the server, and the ratio says
# little about the log's cost.
pid_off=${pids[0]} pid_on=${pids[1]} busy_off=0 busy_on=0
offs=() ons=()
for r in $(seq 1 "$rounds"); do
  # Which mode goes first alternates, so that neither always follows the other.
  c_off=$(ticks "$pid_off") c_on=$(ticks "$pid_on")
  if [ $((r % 2)) = 1 ]; then
    off=$(load 18480 "$secs"); on=$(load 18481 "$secs")
  else
    on=$(load 18481 "$secs"); off=$(load 18480 "$secs")
  fi
  busy_off=$((busy_off + $(ticks "$pid_off") - c_off)) busy_on=$((busy_on + $(ticks "$pid_on") - c_on))
  offs+=("$off"); ons+=("$on")
  awk -v r="$r" -v on="$on" -v off="$off" 'BEGIN { printf "round %d: off %10.0f  on %10.0f req/s  (%.2f)\n", r, off, on, on/off }'
done
reloads_flat off 18480 "$reloads_off"
reloads_flat on 18481 "$reloads_on"
for p in "${pids[@]}"; do kill "$p"; done
wait 2>/dev/null || true
pids=()
"$bin" audit verify "$work/data-on/decisions.jsonl" >&2
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
quartiles() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%.2f .. %.2f", a[int((NR+3)/4)], a[int((3*NR+1)/4)]}'; }
ratios=()
for i in "${!offs[@]}"; do ratios+=("$(awk -v on="${ons[$i]}" -v off="${offs[$i]}" 'BEGIN {print on/off}')"); done
moff=$(median "${offs[@]}"); mon=$(median "${ons[@]}")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%FT%TZ); ${rounds} rounds of ${secs} s, ${conns} connections; servers $([ ${#pin_server[@]} -gt 0 ] && echo 'pinned to core 0' || echo 'not pinned')"
printf 'decision log off: %.0f req/s, on (%s): %.0f req/s (medians)\n' "$moff" "${AUDIT_FLAGS:---audit-sync batch}" "$mon"
hz=$(getconf CLK_TCK)
printf 'server CPU while loaded: off %.0f%%, on %.0f%% of a core (near 100%% with PIN_SERVER=1: the server set the rate)\n' \
  "$(awk -v t="$busy_off" -v hz="$hz" -v s="$secs" -v n="$rounds" 'BEGIN {print 100*t/hz/(s*n)}')" \
  "$(awk -v t="$busy_on" -v hz="$hz" -v s="$secs" -v n="$rounds" 'BEGIN {print 100*t/hz/(s*n)}')"
printf 'ratio of the medians: %.2f\n' "$(awk -v on="$mon" -v off="$moff" 'BEGIN {print on/off}')"
printf 'ratio on/off, median of %d paired rounds: %.2f (quartiles %s; target >= 0.90)\n' \
  "$rounds" "$(median "${ratios[@]}")" "$(quartiles "${ratios[@]}")"
