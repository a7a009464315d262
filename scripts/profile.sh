#!/usr/bin/env bash
# Where a sidecar decision's CPU goes: a sampling profile of `serve` under
# the issue #14 workload, printed as the inclusive share of each stage of
# the decision path (ARCHITECTURE.md, "Data flow of a request").
#
#   scripts/profile.sh                          # uncached, decision log on
#   scripts/profile.sh --audit-log off          # extra flags go to `serve`
#   PROFILE_CACHE=10000 scripts/profile.sh      # with the decision cache
#
# It builds the binary and examples/workload.rs with frame pointers into
# target/fp (its own target dir, so the normal build is untouched), makes a
# PROFILE_USERS-user workload (default 100,000; examples/workload.rs gen),
# starts the sidecar pinned to core 1, warms it with PROFILE_WARM seconds of
# wrk replay (scripts/lib/replay.lua, reads only) on core 0, then samples it
# with `perf record -e cpu-clock -g` for PROFILE_SECONDS (default 8) while
# wrk replays the stream from another offset. Output: server CPU per
# request (from /proc/PID/stat) and the table of stages; the raw profile is
# target/profile-run/perf.data (`perf report -i ...`).
# Shares are of the sidecar's whole CPU time, kernel (TCP) included, and
# overlap (a stage contains its callees). cpu-clock sampling works where
# hardware counters are "not supported" (this VM).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/target/profile-run"
USERS=${PROFILE_USERS:-100000}
SECS=${PROFILE_SECONDS:-8}
WARM=${PROFILE_WARM:-5}
CACHE=${PROFILE_CACHE:-0}
PORT=${PROFILE_PORT:-18604}
command -v perf >/dev/null || { echo "FAIL: perf is missing: apt-get install -y linux-perf" >&2; exit 1; }
command -v wrk >/dev/null || { echo "FAIL: wrk is missing: apt-get install -y wrk" >&2; exit 1; }
if [ "$(nproc)" -ge 2 ]; then SERVER_CPU=(taskset -c 1); LOAD_CPU=(taskset -c 0); else SERVER_CPU=(); LOAD_CPU=(); fi
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== build with frame pointers (target/fp)" >&2
RUSTFLAGS="-Cforce-frame-pointers=yes" CARGO_TARGET_DIR="$ROOT/target/fp" \
  cargo build --release --quiet --bin partnergate --example workload
BIN="$ROOT/target/fp/release/partnergate"

echo "== workload: $USERS users" >&2
"$ROOT/target/fp/release/examples/workload" gen "$OUT/wl" --users "$USERS" --requests 200000 --writes 0.01 >&2
"$BIN" import --data-dir "$OUT/data" --schema schemas/partnergate.cedarschema "$OUT/wl/entities.json" >"$OUT/import.log"
(umask 077 && head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$OUT/data/token")
TOKEN=$(cat "$OUT/data/token")

RUST_LOG=warn "${SERVER_CPU[@]}" "$BIN" serve --policies policies --schema schemas/partnergate.cedarschema \
  --data-dir "$OUT/data" --bind "127.0.0.1:$PORT" --no-watch --decision-cache "$CACHE" "$@" >"$OUT/serve.log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 600); do
  curl -fs -o /dev/null "http://127.0.0.1:$PORT/readyz" && break
  [ -e "/proc/$PID" ] || { echo "FAIL: serve exited; see $OUT/serve.log" >&2; exit 1; }
  sleep 0.1
done
replay() { # SECONDS OFFSET
  timeout $(($1 + 30)) "${LOAD_CPU[@]}" wrk -t1 -c16 -d"$1s" --timeout 5s -s scripts/lib/replay.lua \
    "http://127.0.0.1:$PORT/" -- "$OUT/wl/reads.txt" "$TOKEN" "$2" | grep '^WRK'
}
echo "== warm ($WARM s)" >&2
replay "$WARM" 0 >/dev/null
echo "== profile ($SECS s)" >&2
t0=$(awk '{ print $14 + $15 }' "/proc/$PID/stat")
perf record -q -e cpu-clock -F 2000 -g -p "$PID" -o "$OUT/perf.data" -- sleep "$SECS" >/dev/null 2>&1 &
PERF=$!
line=$(replay "$SECS" 100000)
wait "$PERF" || true
t1=$(awk '{ print $14 + $15 }' "/proc/$PID/stat")
awk -v l="$line" -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v cache="$CACHE" 'BEGIN {
  n = split(l, f, /[ =]/); for (i = 2; i < n; i += 2) v[f[i]] = f[i + 1]
  printf "requests/s %.0f, server CPU per request %.1f us (%d requests, decision cache %s)\n",
    v["rps"], t * 1e6 / hz / v["requests"], v["requests"], cache }'

# Inclusive share of each stage (symbol substrings, first match per stage).
perf report -i "$OUT/perf.data" --children --sort symbol --stdio -g none 2>/dev/null >"$OUT/report.txt"
stage() { # LABEL SYMBOL-SUBSTRING
  awk -v s="$2" -v label="$1" 'index($0, s) && /%/ { printf "%7s  %s\n", $1, label; found = 1; exit }
    END { if (!found) printf "%7s  %s\n", "-", label }' "$OUT/report.txt"
}
printf '%7s  %s\n' share stage
stage "HTTP connection (hyper + axum + middleware)" "hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_catch"
stage "kernel: socket writes (writev)" "__GI___writev"
stage "the decision (Authz::is_authorized_with)" "partnergate_core::authz::Authz::is_authorized_with"
stage "  Cedar's authorizer" "cedar_policy_core::authorizer::Authorizer::is_authorized_core"
stage "  policy index candidates" "partnergate_policy::index::PolicyIndex::candidates"
stage "  request build + schema check (Query::request)" "partnergate_core::authz::Query::request"
stage "  directory slice (slice_versioned)" "partnergate_core::directory::Directory::slice_versioned"
stage "  Entities build + transitive closure (entities_for)" "partnergate_core::directory::entities_for"
stage "  log slice from the stored JSON (stored_slice)" "partnergate_core::authz::stored_slice"
stage "request body -> Query (api::to_query)" "partnergate_server::api::to_query"
stage "response body (api::response_body)" "partnergate_server::api::response_body"
stage "decision log writer thread (Writer::run)" "partnergate_audit::writer::Writer::run"
echo "raw profile: $OUT/perf.data; full report: $OUT/report.txt" >&2
