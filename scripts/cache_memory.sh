#!/usr/bin/env bash
# What one decision-cache entry costs in memory, on the issue #14 workload
# (the number `serve --decision-cache`'s default is chosen by).
#
#   scripts/cache_memory.sh                    # cache sizes 0 and 100000
#   CACHE_SIZES="0 20000 100000" scripts/cache_memory.sh
#   BIN=/tmp/other/partnergate scripts/cache_memory.sh   # another build
#
# For each size, in turn: a fresh sidecar over the same 100,000-user
# workload (examples/workload.rs gen, imported once), decision log on,
# replays the stream's reads (scripts/lib/replay.lua, wrk -t1 -c16) for
# CACHE_SECONDS (default 40: the 89k distinct questions are all asked), then
# reads the RSS (/proc/PID/status VmRSS) and the cache's entries and hit
# count (/metrics). Prints per size: entries, RSS, hit rate over the replay,
# and (RSS - RSS at size 0) / entries = bytes per entry. The first size
# should be 0 (the baseline). Loopback only; each sidecar is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/target/cache-memory"
SIZES=${CACHE_SIZES:-0 100000}
SECS=${CACHE_SECONDS:-40}
PORT=${CACHE_PORT:-18607}
BIN=${BIN:-}
command -v wrk >/dev/null || { echo "FAIL: wrk is missing: apt-get install -y wrk" >&2; exit 1; }
if [ -z "$BIN" ]; then
  cargo build --release --quiet --bin partnergate --example workload
  BIN="$ROOT/target/release/partnergate"
else
  cargo build --release --quiet --example workload
fi
rm -rf "$OUT"
mkdir -p "$OUT"
"$ROOT/target/release/examples/workload" gen "$OUT/wl" --users 100000 --requests 200000 --writes 0.01 >&2
"$BIN" import --data-dir "$OUT/seed" --schema schemas/partnergate.cedarschema "$OUT/wl/entities.json" >"$OUT/import.log"

PID=
trap '[ -n "$PID" ] && { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }; true' EXIT INT TERM
metric() { curl -fs "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
base=
printf '%-8s %9s %9s %8s %14s\n' size entries rss_mib hit_rate bytes_per_entry
for size in $SIZES; do
  rm -rf "$OUT/data" && cp -r "$OUT/seed" "$OUT/data"
  RUST_LOG=warn "$BIN" serve --policies policies --schema schemas/partnergate.cedarschema \
    --data-dir "$OUT/data" --bind "127.0.0.1:$PORT" --no-watch --decision-cache "$size" \
    >"$OUT/serve-$size.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do
    curl -fs -o /dev/null "http://127.0.0.1:$PORT/readyz" && break
    [ -e "/proc/$PID" ] || { echo "FAIL: serve exited; see $OUT/serve-$size.log" >&2; exit 1; }
    sleep 0.1
  done
  timeout $((SECS + 30)) wrk -t1 -c16 -d"${SECS}s" --timeout 5s -s scripts/lib/replay.lua \
    "http://127.0.0.1:$PORT/" -- "$OUT/wl/reads.txt" "" 0 >"$OUT/wrk-$size.txt"
  rss_kb=$(awk '/^VmRSS/ { print $2 }' "/proc/$PID/status")
  entries=$(metric partnergate_decision_cache_entries); entries=${entries:-0}
  hits=$(metric partnergate_decision_cache_hits_total); hits=${hits:-0}
  misses=$(metric partnergate_decision_cache_misses_total); misses=${misses:-0}
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  [ -z "$base" ] && base=$rss_kb
  awk -v s="$size" -v e="$entries" -v r="$rss_kb" -v b="$base" -v h="$hits" -v m="$misses" 'BEGIN {
    rate = (h + m) > 0 ? sprintf("%.1f%%", 100 * h / (h + m)) : "-"
    per = e > 0 ? sprintf("%.0f", (r - b) * 1024 / e) : "-"
    printf "%-8s %9d %9.0f %8s %14s\n", s, e, r / 1024, rate, per }'
done
