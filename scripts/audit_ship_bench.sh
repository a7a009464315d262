#!/usr/bin/env bash
# Shipping the decision log into PostgreSQL (PARTNERGATE_TEST_PG, default the
# local `test` database; a schema of its own, dropped after), release build:
#
# 1. at the sidecar's full decision rate: one `serve` replica on the
#    PostgreSQL store, POST /v1/is_authorized with wrk for SECONDS (wrk
#    pinned to core 1 where taskset exists), /readyz sampled every 0.25 s:
#    decisions/s, records shipped/s while loaded, the lag in records and in
#    seconds (median and max of the samples), and how long the shipper takes
#    to catch up once the load stops;
# 2. a backlog: RECORDS synthetic records written to a file first
#    (`audit stress`), then copied by `audit ship` (records/s into PostgreSQL
#    with nothing else running).
#
#   scripts/audit_ship_bench.sh [SECONDS] [CONNECTIONS] [RECORDS]
#
# Prints the numbers; asserts nothing (the machine may be busy: say so with
# the numbers).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
conns=${2:-16}
backlog=${3:-200000}
pin_server=() pin_load=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin_load=(taskset -c 1)
fi
# shellcheck source=scripts/lib/sidecar_load.sh
. scripts/lib/sidecar_load.sh

base_url=${PARTNERGATE_TEST_PG:-postgres://postgres@127.0.0.1:5432/test}
schema="audit_ship_bench_$$"
psql -q "$base_url" -c "CREATE SCHEMA $schema"
drop_schema() { psql -q "$base_url" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true; }
trap 'cleanup; drop_schema' EXIT
sep='?'; case "$base_url" in *\?*) sep='&';; esac
url="${base_url}${sep}options=-csearch_path%3D${schema}"

port=18490
start_sidecar "$port" "$work/data" --store "$url" --replica-id bench --audit-ship-interval-ms 100
ship() { curl -fsS "http://127.0.0.1:$port/readyz" | python3 -c 'import json,sys; s=json.load(sys.stdin)["audit"]["ship"]; print(s["shipped"], s["lag_records"], s["lag_seconds"], s["head_seq"])'; }

read -r shipped0 _ _ _ < <(ship)
samples="$work/lag.txt"
: >"$samples"
(
  while :; do ship >>"$samples" 2>/dev/null || true; sleep 0.25; done
) &
sampler=$!
pids+=("$sampler")
t0=$(date +%s.%N)
rate=$("${pin_load[@]}" wrk -t1 -c"$conns" -d"${secs}s" -s "$work/body.lua" \
  "http://127.0.0.1:$port/v1/is_authorized" | awk '/Requests\/sec/ {print $2}')
t1=$(date +%s.%N)
read -r shipped1 lag1 _ _ < <(ship)
# Catch-up: until the database holds the whole file.
while :; do
  read -r _ lag _ _ < <(ship)
  [ "$lag" = 0 ] && break
  sleep 0.05
done
t2=$(date +%s.%N)
kill "$sampler" 2>/dev/null || true
read -r shipped2 _ _ head < <(ship)
"$bin" audit verify --pg "$url" >&2

# The backlog: a file written first, then shipped by `audit ship`.
"$bin" audit stress --count "$backlog" --audit-log "$work/backlog.jsonl" --audit-replica backlog >/dev/null
b0=$(date +%s.%N)
shipped_backlog=$("$bin" audit ship --log "$work/backlog.jsonl" --pg "$url" | awk '{print $2}')
b1=$(date +%s.%N)

stats() { # column of $samples -> "median max"
  awk -v c="$1" '{print $c}' "$samples" | sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "0 0"} else {print a[int((NR+1)/2)], a[NR]}}'
}
read -r lag_rec_med lag_rec_max < <(stats 2)
read -r lag_s_med lag_s_max < <(stats 3)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%FT%TZ); load ${secs} s, ${conns} connections, wrk $([ ${#pin_load[@]} -gt 0 ] && echo 'pinned to core 1' || echo 'not pinned'); ship interval 100 ms, batch 1000"
awk -v r="$rate" -v s0="$shipped0" -v s1="$shipped1" -v t0="$t0" -v t1="$t1" -v l1="$lag1" \
  'BEGIN { printf "decisions: %.0f req/s; shipped while loaded: %.0f records/s (%d records; %d left when the load stopped)\n", r, (s1-s0)/(t1-t0), s1-s0, l1 }'
printf 'lag while loaded: records median %s, max %s; seconds median %s, max %s (sampled every 0.25 s)\n' \
  "$lag_rec_med" "$lag_rec_max" "$lag_s_med" "$lag_s_max"
awk -v t1="$t1" -v t2="$t2" -v s1="$shipped1" -v s2="$shipped2" -v h="$head" \
  'BEGIN { printf "caught up %.2f s after the load stopped (%d records then); the database holds the log up to seq %d\n", t2-t1, s2-s1, h }'
awk -v n="$shipped_backlog" -v b0="$b0" -v b1="$b1" \
  'BEGIN { printf "backlog: %d records shipped by audit ship in %.2f s: %.0f records/s\n", n, b1-b0, n/(b1-b0) }'
