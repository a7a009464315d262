#!/usr/bin/env bash
# PartnerGate benchmarks (issue 6): one command, release build, loopback only.
#
#   scripts/bench.sh            # everything; prints a table of ratios at the end
#
# Knobs (environment): BENCH_DURATION (seconds per wrk run, default 10),
# BENCH_CONNECTIONS (default 32), BENCH_USERS (large directory, default
# 1000000), BENCH_SKIP_AGENT=1 (skip cedar-agent), BENCH_ONLY=a,b (run only
# some sections: criterion, http, policies, users, reload).
#
# Needs: wrk (apt-get install -y wrk), taskset (util-linux), awk, curl.
# The server is pinned to one core and wrk to the other where there are two.
# Every loop is bounded in count and time; every server started here is
# stopped on exit. Results and logs go to target/bench-run/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/target/bench-run"
rm -rf "$OUT"
mkdir -p "$OUT"
DURATION=${BENCH_DURATION:-10}
CONNS=${BENCH_CONNECTIONS:-32}
USERS=${BENCH_USERS:-1000000}
SCHEMA="$ROOT/schemas/partnergate.cedarschema"
export RUST_LOG=${RUST_LOG:-warn}

PIDS=()
# stop PID and gen_policies DIR N.
# shellcheck source=scripts/lib/pack_gen.sh
. "$ROOT/scripts/lib/pack_gen.sh"
cleanup() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && stop "$p"
  done
}
trap cleanup EXIT INT TERM

want() { [ -z "${BENCH_ONLY:-}" ] || [[ ",$BENCH_ONLY," == *",$1,"* ]]; }
log() { printf '== %s\n' "$*" >&2; }
# Result rows: name|value|target|verdict
ROWS="$OUT/rows.txt"
: >"$ROWS"
row() { printf '%s|%s|%s|%s\n' "$1" "$2" "$3" "$4" >>"$ROWS"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { # value op target -> met/MISSED
  awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN {
    ok = (op == "<=") ? (v <= t) : (v >= t); print (ok ? "met" : "MISSED") }'
}

if [ "$(nproc)" -ge 2 ]; then SERVER_CPU="taskset -c 1"; LOAD_CPU="taskset -c 0"; else SERVER_CPU=""; LOAD_CPU=""; fi
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }

log "build (release)"
cargo build --release --quiet --bin partnergate --example minimal_axum --example reload_probe --example cedar_agent_feed
BIN="$ROOT/target/release/partnergate"
EX="$ROOT/target/release/examples"

AGENT="$ROOT/target/bench-tools/bin/cedar-agent"
AGENT_NOTE=""
if [ "${BENCH_SKIP_AGENT:-0}" = 1 ]; then
  AGENT_NOTE="skipped (BENCH_SKIP_AGENT=1)"
elif ! want http; then
  AGENT_NOTE="not run (BENCH_ONLY=$BENCH_ONLY)"
elif [ ! -x "$AGENT" ]; then
  log "install cedar-agent into target/bench-tools (once)"
  if ! cargo install cedar-agent --locked --root "$ROOT/target/bench-tools" >"$OUT/cedar-agent-install.log" 2>&1; then
    AGENT_NOTE="cedar-agent could not be installed (see target/bench-run/cedar-agent-install.log)"
  fi
fi

# --- helpers -----------------------------------------------------------------
# wait_http URL SECONDS: poll until 2xx, bounded.
wait_http() {
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.02
  done
}
# start NAME CMD...: start pinned to the server core, remember the pid.
start() {
  local name=$1; shift
  $SERVER_CPU "$@" >"$OUT/$name.log" 2>&1 &
  PIDS+=($!)
  LAST_PID=$!
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# wrk_lua FILE PATH BODYFILE: a wrk script POSTing the body and printing exact numbers.
wrk_lua() {
  local body
  body=$(sed 's/\\/\\\\/g; s/"/\\"/g' "$3" | tr -d '\n')
  cat >"$1" <<EOF
wrk.method = "POST"
wrk.path = "$2"
wrk.body = "$body"
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format("WRK rps=%.1f p50_us=%d p99_us=%d non2xx=%d sockerr=%d requests=%d\n",
    summary.requests / secs, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.requests))
end
EOF
}
# shellcheck source=scripts/lib/reloads.sh
. "$ROOT/scripts/lib/reloads.sh"
# port_of URL: the port of an http://127.0.0.1:PORT/... URL.
port_of() { sed -E 's#^http://[^:/]+:([0-9]+).*#\1#' <<<"$1"; }
# run_wrk NAME URL LUA [DURATION]: prints the WRK line, saved to $OUT/NAME.wrk.
# A PartnerGate run (CHECK_RELOADS=1, the default; 0 for other servers)
# fails if the policy reload counter moved during it.
run_wrk() {
  local before=""
  [ "${CHECK_RELOADS:-1}" = 1 ] && before=$(reload_count "$(port_of "$2")")
  timeout $((${4:-$DURATION} + 30)) $LOAD_CPU wrk -t1 -c"$CONNS" -d"${4:-$DURATION}s" --timeout 5s -s "$3" "$2" >"$OUT/$1.wrk" 2>&1 || true
  [ -n "$before" ] && reloads_flat "$1" "$(port_of "$2")" "$before"
  grep '^WRK' "$OUT/$1.wrk" || { echo "WRK rps=0 p50_us=0 p99_us=0 non2xx=0 sockerr=0 requests=0"; }
}
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$2"; }

# The question every HTTP benchmark asks (an Allow through member-view-account).
printf '%s' '{"principal":"User::\"owner\"","action":"Action::\"view_account\"","resource":"Account::\"acme\""}' >"$OUT/single.json"
{
  printf '{"requests":['
  for i in $(seq 1 100); do
    [ "$i" -gt 1 ] && printf ','
    cat "$OUT/single.json"
  done
  printf ']}'
} >"$OUT/batch.json"
wrk_lua "$OUT/single.lua" /v1/is_authorized "$OUT/single.json"
wrk_lua "$OUT/batch.lua" /v1/is_authorized/batch "$OUT/batch.json"

# A data directory with the demo entities.
DEMO_DATA="$OUT/demo-data"
"$BIN" import --data-dir "$DEMO_DATA" --schema "$SCHEMA" demo/entities.json >/dev/null
# serve_pg NAME POLICIES_DIR DATA_DIR PORT: start the sidecar, wait for /readyz (bounded).
serve_pg() {
  # shellcheck disable=SC2086 # PG_EXTRA: extra flags, split on spaces
  start "$1" "$BIN" serve --policies "$2" --schema "$SCHEMA" --data-dir "$3" --bind "127.0.0.1:$4" ${PG_EXTRA:-}
  PG_PID=$LAST_PID
  wait_http "http://127.0.0.1:$4/readyz" "${5:-60}" || { echo "sidecar $1 did not become ready; see $OUT/$1.log" >&2; exit 1; }
}

# --- 1. in-process (criterion) ---------------------------------------------
if want criterion; then
  log "criterion: in-process decision, $USERS users (building the large directory takes a while)"
  PARTNERGATE_BENCH_USERS=$USERS cargo bench --quiet --bench decision -- \
    --warm-up-time 1 --measurement-time 3 --noplot 2>&1 | tee "$OUT/criterion.txt" >&2
  r=$(awk '/^RATIO in_process_vs_cedar/ {print $3}' "$OUT/criterion.txt")
  d=$(awk '/^RATIO in_process_vs_cedar/ {$1=$2=$3=$4=""; print}' "$OUT/criterion.txt")
  row "in-process: PartnerGate / direct Cedar Authorizer (time)${d}" "${r}x" "<= 1.15x" "$(verdict "$r" '<=' 1.15)"
  r=$(awk '/^RATIO users_/ {print $3}' "$OUT/criterion.txt")
  d=$(awk '/^RATIO users_/ {$1=$2=$3=$4=""; print}' "$OUT/criterion.txt")
  row "scale: decision time, $USERS / 1000 users${d}" "${r}x" "<= 1.2x" "$(verdict "$r" '<=' 1.2)"
fi

# --- 2. HTTP: minimal axum, PartnerGate, cedar-agent -------------------------
if want http; then
log "HTTP: minimal axum handler"
start axum "$EX/minimal_axum" 127.0.0.1:18381
AXUM_PID=$LAST_PID
wait_http "http://127.0.0.1:18381/" 30 || true
curl -fsS -X POST --json '{}' http://127.0.0.1:18381/v1/is_authorized >/dev/null
AXUM=$(CHECK_RELOADS=0 run_wrk axum http://127.0.0.1:18381/v1/is_authorized "$OUT/single.lua")
stop "$AXUM_PID"

log "HTTP: PartnerGate single and batch"
serve_pg pg "$ROOT/policies" "$DEMO_DATA" 18380
PG=$(run_wrk pg http://127.0.0.1:18380/v1/is_authorized "$OUT/single.lua")
BATCH=$(run_wrk pg-batch http://127.0.0.1:18380/v1/is_authorized/batch "$OUT/batch.lua")
PG_RSS=$(rss_kb "$PG_PID")

AGENT_LINE=""
if [ -z "$AGENT_NOTE" ]; then
  log "HTTP: cedar-agent"
  start cedar-agent "$AGENT" --addr 127.0.0.1 --port 18180 --log-level error
  AGENT_PID=$LAST_PID
  if wait_http http://127.0.0.1:18180/v1/ 30 && "$EX/cedar_agent_feed" http://127.0.0.1:18180 http://127.0.0.1:18380 \
      "$ROOT/policies" "$SCHEMA" demo/entities.json >"$OUT/cedar-agent-feed.log" 2>&1; then
    AGENT_LINE=$(CHECK_RELOADS=0 run_wrk cedar-agent http://127.0.0.1:18180/v1/is_authorized "$OUT/single.lua")
  else
    AGENT_NOTE="cedar-agent did not start or could not be loaded (see target/bench-run/cedar-agent*.log)"
  fi
  stop "$AGENT_PID"
fi
stop "$PG_PID"

pg_rps=$(field rps "$PG"); axum_rps=$(field rps "$AXUM")
r=$(ratio "$pg_rps" "$axum_rps")
row "HTTP: PartnerGate / minimal axum (req/s; PG $pg_rps p50 $(field p50_us "$PG")us p99 $(field p99_us "$PG")us; axum $axum_rps p50 $(field p50_us "$AXUM")us p99 $(field p99_us "$AXUM")us)" "${r}x" ">= 0.7x" "$(verdict "$r" '>=' 0.7)"
if [ -n "$AGENT_LINE" ]; then
  a_rps=$(field rps "$AGENT_LINE")
  r=$(ratio "$pg_rps" "$a_rps")
  row "HTTP: PartnerGate / cedar-agent (req/s; cedar-agent $a_rps p50 $(field p50_us "$AGENT_LINE")us p99 $(field p99_us "$AGENT_LINE")us non-2xx $(field non2xx "$AGENT_LINE"))" "${r}x" ">= 3x" "$(verdict "$r" '>=' 3)"
else
  row "HTTP: PartnerGate / cedar-agent: $AGENT_NOTE" "not measured" ">= 3x" "not measured"
fi
b_dps=$(awk -v r="$(field rps "$BATCH")" 'BEGIN { printf "%.0f", r * 100 }')
r=$(ratio "$b_dps" "$pg_rps")
row "batch: decisions/s, 100 per call / single calls ($b_dps vs $pg_rps)" "${r}x" ">= 10x" "$(verdict "$r" '>=' 10)"
row "HTTP: PartnerGate non-2xx answers (single + batch runs)" "$(( $(field non2xx "$PG") + $(field non2xx "$BATCH") ))" "0" "$([ $(( $(field non2xx "$PG") + $(field non2xx "$BATCH") )) -eq 0 ] && echo met || echo MISSED)"
row "memory: PartnerGate RSS after the HTTP runs (demo entities)" "$((PG_RSS / 1024)) MiB" "-" "-"
fi

# --- 4. scale: policies --------------------------------------------------------
for n in $(want policies && echo 10 100 1000 10000); do
  log "scale: $n generated policies"
  gen_policies "$OUT/policies-$n" "$n"
  started=$(date +%s.%N)
  # The decision cache off: every decision is evaluated (the index is what is measured).
  # More than the default --max-policies (10,000) with the shipped ones.
  PG_EXTRA="--decision-cache 0 --max-policies 20000" serve_pg "pol-$n" "$OUT/policies-$n" "$DEMO_DATA" 18390 120
  ready=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", (e - s) * 1000 }')
  rss=$(rss_kb "$PG_PID")
  before=$(reload_count 18390)
  lat=$(timeout 120 "$EX/reload_probe" latency http://127.0.0.1:18390 2000 || true)
  reloads_flat "pol-$n latency" 18390 "$before"
  rel=$(timeout 120 "$EX/reload_probe" edits http://127.0.0.1:18390 "$OUT/policies-$n/99-bench-probe.cedar" 5 100 || true)
  rss_after=$(rss_kb "$PG_PID")
  stop "$PG_PID"
  row "scale: $n policies (+$(ls "$ROOT"/policies/*.cedar | wc -l) shipped files): start-to-ready ${ready} ms, reload write->served p50 $(field p50_ms "$rel") ms, decision p50 $(field p50_us "$lat") us (HTTP, sequential), RSS $((rss / 1024))->$((rss_after / 1024)) MiB" \
    "$(field p50_us "$lat") us" "-" "-"
  eval "POLICY_P50_$n=\$(field p50_us \"\$lat\")"
done
if want policies; then
  r=$(ratio "${POLICY_P50_10000:-0}" "${POLICY_P50_10:-0}")
  row "policy count: decision p50 with 10,000 / with 10 generated policies on the action (cache off; ${POLICY_P50_10000:-?} vs ${POLICY_P50_10:-?} us)" "${r}x" "<= 2x" "$(verdict "$r" '<=' 2)"
fi

# --- 4. scale: start-up with many users ----------------------------------------
if want users; then
log "scale: import $USERS users, then start the sidecar"
awk -v n="$USERS" 'BEGIN {
  printf "[\n"
  accounts = int((n + 99) / 100)
  for (a = 0; a < accounts; a++) printf "{\"uid\":{\"type\":\"Account\",\"id\":\"a%d\"},\"attrs\":{\"name\":\"Account %d\"},\"parents\":[]},\n", a, a
  for (i = 0; i < n; i++) {
    printf "{\"uid\":{\"type\":\"User\",\"id\":\"u%d\"},\"parents\":[{\"type\":\"Account\",\"id\":\"a%d\"}],\"attrs\":{\"email\":\"u%d@example.com\",\"account\":{\"__entity\":{\"type\":\"Account\",\"id\":\"a%d\"}},\"is_admin\":%s,\"status\":\"active\",\"two_factor\":true}}%s\n", i, int(i / 100), i, int(i / 100), (i % 100 == 0 ? "true" : "false"), (i + 1 < n ? "," : "")
  }
  printf "]\n"
}' >"$OUT/users.json"
BIG_DATA="$OUT/big-data"
"$BIN" import --data-dir "$BIG_DATA" --schema "$SCHEMA" demo/entities.json >/dev/null
t0=$(date +%s.%N)
timeout 600 "$BIN" import --data-dir "$BIG_DATA" --schema "$SCHEMA" "$OUT/users.json" | tee "$OUT/import.log" >&2
import_s=$(awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
rm -f "$OUT/users.json"
t0=$(date +%s.%N)
serve_pg big "$ROOT/policies" "$BIG_DATA" 18391 600
startup_s=$(awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
big_rss=$(rss_kb "$PG_PID")
before=$(reload_count 18391)
lat_big=$(timeout 120 "$EX/reload_probe" latency http://127.0.0.1:18391 2000 || true)
reloads_flat big 18391 "$before"
stop "$PG_PID"
serve_pg small "$ROOT/policies" "$DEMO_DATA" 18392
before=$(reload_count 18392)
lat_small=$(timeout 120 "$EX/reload_probe" latency http://127.0.0.1:18392 2000 || true)
reloads_flat small 18392 "$before"
stop "$PG_PID"
row "scale: import $USERS users (partnergate import)" "${import_s} s" "well under 60 s" "$(verdict "$import_s" '<=' 60)"
row "scale: start-up with $USERS users until /readyz" "${startup_s} s" "<= 10 s" "$(verdict "$startup_s" '<=' 10)"
row "memory: RSS when ready with $USERS users" "$((big_rss / 1024)) MiB" "<= 1536 MiB" "$(verdict $((big_rss / 1024)) '<=' 1536)"
r=$(ratio "$(field p50_us "$lat_big")" "$(field p50_us "$lat_small")")
row "scale: HTTP decision p50, $USERS users / demo (5 entities) ($(field p50_us "$lat_big") vs $(field p50_us "$lat_small") us)" "${r}x" "<= 1.2x" "$(verdict "$r" '<=' 1.2)"
fi

# --- 5. reload under load --------------------------------------------------------
if want reload; then
log "reload under load: 100 edits during a wrk run"
RL="$OUT/policies-reload"
gen_policies "$RL" 0
serve_pg reload "$RL" "$DEMO_DATA" 18393
LOAD_SECS=120
$LOAD_CPU wrk -t1 -c"$CONNS" -d"${LOAD_SECS}s" --timeout 5s -s "$OUT/single.lua" http://127.0.0.1:18393/v1/is_authorized >"$OUT/reload-load.wrk" 2>&1 &
WRK_PID=$!
PIDS+=($WRK_PID)
sleep 1
PROBE=$(timeout 100 "$EX/reload_probe" edits http://127.0.0.1:18393 "$RL/99-bench-probe.cedar" 100 100 || true)
kill -INT "$WRK_PID" 2>/dev/null || true
wait "$WRK_PID" 2>/dev/null || true
LOAD=$(grep '^WRK' "$OUT/reload-load.wrk" || echo "WRK non2xx=? sockerr=? rps=0")
stop "$PG_PID"
echo "$PROBE" >"$OUT/reload-probe.txt"
non2xx=$(( $(field non2xx "$LOAD") + $(field non_2xx "$PROBE") ))
row "reload under load: edits served $(field served "$PROBE")/100 (missed $(field missed "$PROBE")); load $(field rps "$LOAD") req/s, $(field requests "$LOAD") requests, socket errors $(field sockerr "$LOAD")" "non-2xx: $non2xx" "0" "$([ "$non2xx" -eq 0 ] && echo met || echo MISSED)"
p99=$(field p99_ms "$PROBE")
row "reload under load: file write -> first answer under the new version (p50 $(field p50_ms "$PROBE") ms, max $(field max_ms "$PROBE") ms)" "p99 ${p99} ms" "<= 250 ms" "$(verdict "$p99" '<=' 250)"
fi

# --- table --------------------------------------------------------------------------
{
  echo
  echo "PartnerGate benchmarks — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "wrk: 1 thread, $CONNS connections, ${DURATION}s per run; server on core 1, wrk on core 0 (when 2 cores)"
  echo
  echo "| measurement | result | target | verdict |"
  echo "| --- | --- | --- | --- |"
  awk -F'|' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$ROWS"
} | tee "$OUT/table.md"
