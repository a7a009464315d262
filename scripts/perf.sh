#!/usr/bin/env bash
# Issue #14 in one command: every ratio of its goals, measured side by side
# on a realistic workload, printed as a table with each goal and met/MISSED.
#
#   scripts/perf.sh                    # full run (~5 min, plus the 1M-user start)
#   BENCH_ROUND=3 BENCH_BIG_USERS=200000 scripts/perf.sh   # shorter
#
# What it does: release build; `workload gen` (examples/workload.rs: 100,000
# users over 3,000 accounts, a Zipf (s=1.0) stream of single decisions with
# 1% entity writes, the same stream in batches of 100); starts, each pinned
# to core 1 (wrk on core 0): the bare axum handler (examples/minimal_axum.rs,
# "the limit"), PartnerGate three times (default: decision cache on and the
# decision log on; `--audit-log off`; `--decision-cache 0`, when the binary
# has that flag: "cache flag missing" otherwise), the naive axum+Cedar
# handler (examples/naive_cedar.rs), cedar-agent (loaded by
# examples/cedar_agent_feed.rs) and the Cerbos PDP twice, its decision log
# on and off (scripts/lib/cerbos.sh: npm's @cerbos/cerbos-linux-x64 0.55,
# the partner rules as Cerbos policies in benches/peers/cerbos/, whose test
# suites must pass; examples/cerbos_feed/ turns each question into a
# CheckResources request carrying the directory's attributes, as a Cerbos
# user would send them, asked over REST (wrk) and over gRPC (its own
# closed-loop client, `cerbos_feed grpc-load`, on core 0 like wrk, with as
# many connections)). Before any timing, every distinct question
# of the stream is asked to every peer and to uncached PartnerGate: any
# different decision fails the run (exit 1); the cached PartnerGates are then
# restarted so that the check does not warm their caches. Then BENCH_ROUNDS
# rounds (default 5) of BENCH_ROUND seconds (default 5) per system, the
# order reversed every other round; wrk -t1 -cBENCH_CONNECTIONS (default 16)
# replays the stream (scripts/lib/replay.lua) from a different offset each
# round. Ratios are medians of the per-round ratios; server CPU per decision
# comes from /proc/PID/stat (utime+stime) deltas over each run; the cache hit
# rate from PartnerGate's /metrics (partnergate_decision_cache_{hits,misses}_total;
# n/a when absent). Last, `scripts/bench.sh`'s users section measures the
# start of a BENCH_BIG_USERS-user directory (default 1,000,000):
# time to /readyz and RSS.
#
# Knobs: BENCH_ROUND, BENCH_ROUNDS, BENCH_CONNECTIONS, BENCH_USERS (100000),
# BENCH_REQUESTS (stream length, 200000), BENCH_WRITES (0.01),
# BENCH_BIG_USERS (1000000; 0 skips it), BENCH_SKIP_AGENT=1,
# BENCH_SKIP_CERBOS=1, BENCH_CERBOS_VERSION (0.55; Cerbos is skipped, with
# the reason in the table, when npm is missing),
# BENCH_BASELINE=PATH: another partnergate binary (an earlier commit's
# release build) run beside this one, cache on and off, checked to answer
# alike and timed in the same rounds: the table gains "this build /
# baseline" rows (a change's effect measured side by side, not across runs).
# cedar-agent (Cedar 2.4) has no entity-write endpoint, and the naive
# handler's write (Cedar's upsert_entities: a copy of the set and the
# transitive closure of all of it) takes ~1.5 s at 100,000 users, so both
# replay the stream without its writes (reads.txt): that favours them.
# Cerbos holds no data: its requests (cerbos.txt, line for line beside
# reads.txt) carry the initial directory's attributes, looked up by the
# feeder before the run, not by the server: that favours it too.
# Builds go to CARGO_TARGET_DIR when it is set (default target/).
# Every other system (PartnerGate, the bare handler) gets the writes.
# Loopback only; every loop is bounded in count and time; every server is
# stopped on exit. Results and logs: target/perf-run/ (table.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/target/perf-run"
rm -rf "$OUT"
mkdir -p "$OUT"
ROUND=${BENCH_ROUND:-5}
ROUNDS=${BENCH_ROUNDS:-5}
CONNS=${BENCH_CONNECTIONS:-16}
USERS=${BENCH_USERS:-100000}
REQUESTS=${BENCH_REQUESTS:-200000}
WRITES=${BENCH_WRITES:-0.01}
BIG_USERS=${BENCH_BIG_USERS:-1000000}
SCHEMA="$ROOT/schemas/partnergate.cedarschema"
POLICIES="$ROOT/policies"
TICK=$(getconf CLK_TCK)
export RUST_LOG=${RUST_LOG:-warn}
# shellcheck source=scripts/lib/reloads.sh
. "$ROOT/scripts/lib/reloads.sh"
# shellcheck source=scripts/lib/cerbos.sh
. "$ROOT/scripts/lib/cerbos.sh"

PIDS=()
stop() { # stop PID: SIGTERM, up to 15 s, then SIGKILL.
  kill "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
  for _ in $(seq 1 150); do
    [ -e "/proc/$1" ] && [ "$(awk '/^State/ {print $2}' "/proc/$1/status" 2>/dev/null)" != Z ] || break
    sleep 0.1
  done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && stop "$p"; done; }
trap cleanup EXIT INT TERM
log() { printf '== %s\n' "$*" >&2; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

if [ "$(nproc)" -ge 2 ]; then SERVER_CPU=(taskset -c 1); LOAD_CPU=(taskset -c 0); else SERVER_CPU=(); LOAD_CPU=(); fi
command -v wrk >/dev/null || die "wrk is missing: apt-get install -y wrk"

log "build (release)"
cargo build --release --quiet --bin partnergate --example minimal_axum --example naive_cedar \
  --example workload --example cedar_agent_feed --example cerbos_feed
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/partnergate"
EX="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples"

AGENT="$ROOT/target/bench-tools/bin/cedar-agent"
AGENT_NOTE=""
if [ "${BENCH_SKIP_AGENT:-0}" = 1 ]; then
  AGENT_NOTE="skipped (BENCH_SKIP_AGENT=1)"
elif [ ! -x "$AGENT" ]; then
  log "install cedar-agent into target/bench-tools (once)"
  cargo install cedar-agent --locked --root "$ROOT/target/bench-tools" >"$OUT/cedar-agent-install.log" 2>&1 ||
    AGENT_NOTE="cedar-agent could not be installed (target/perf-run/cedar-agent-install.log)"
fi

cerbos_install

CACHE_FLAG=()
CACHE_NOTE=""
if "$BIN" serve --help | grep -q -- --decision-cache; then
  CACHE_FLAG=(--decision-cache 0)
else
  CACHE_NOTE="cache flag missing: no --decision-cache, so 'uncached' is plain serve"
  log "$CACHE_NOTE"
fi

log "workload: $USERS users, $REQUESTS requests, writes $WRITES"
WL="$OUT/workload"
"$EX/workload" gen "$WL" --users "$USERS" --requests "$REQUESTS" --writes "$WRITES" | tee "$OUT/workload.txt" >&2
wl() { sed -n "s/.*[ ]$1=\([^ ]*\).*/\1/p" "$OUT/workload.txt"; }
READ_FRAC=$(awk -v r="$(wl reads)" -v n="$(wl requests)" 'BEGIN { print r / n }')
BATCH_PER_LINE=$(awk -v d="$(wl batch_decisions)" -v n="$(wl batch_lines)" 'BEGIN { print d / n }')
if [ -z "$CERBOS_NOTE" ]; then
  "$EX/cerbos_feed" requests "$WL/entities.json" "$WL/reads.txt" "$WL/cerbos.txt" | tee "$OUT/cerbos-requests.txt" >&2
fi
SEED_DATA="$OUT/seed-data"
"$BIN" import --data-dir "$SEED_DATA" --schema "$SCHEMA" "$WL/entities.json" >"$OUT/import.log"
# One token for every PartnerGate (each gets a copy of this data directory).
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SEED_DATA/token")
TOKEN=$(cat "$SEED_DATA/token")

wait_ready() { # URL SECONDS PID NAME [any]: until 2xx (any: until any HTTP answer)
  local deadline=$((SECONDS + $2)) f=-f
  [ "${5:-}" = any ] && f=""
  until curl $f -sS -o /dev/null "$1" 2>/dev/null; do
    [ -e "/proc/$3" ] || die "$4 exited; see $OUT/$4.log"
    [ $SECONDS -lt $deadline ] || die "$4 not ready after $2 s; see $OUT/$4.log"
    sleep 0.05
  done
}
declare -A PID_OF PORT_OF FILE_OF PER_LINE_OF
start() { # NAME PORT READY_PATH CMD... (READY_PATH "": any HTTP answer on /)
  local name=$1 port=$2 ready=$3 pid; shift 3
  "${SERVER_CPU[@]}" "$@" >"$OUT/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  PID_OF[$name]=$pid
  PORT_OF[$name]=$port
  if [ -n "$ready" ]; then wait_ready "http://127.0.0.1:$port$ready" 300 "$pid" "$name"
  else wait_ready "http://127.0.0.1:$port/" 60 "$pid" "$name" any; fi
}
serve_pg() { # NAME PORT [flags...] (pg_base*: the BENCH_BASELINE binary)
  local name=$1 port=$2 bin=$BIN; shift 2
  case $name in pg_base*) bin=$BASELINE ;; esac
  [ -d "$OUT/data-$name" ] || cp -a "$SEED_DATA" "$OUT/data-$name"
  start "$name" "$port" /readyz "$bin" serve --policies "$POLICIES" --schema "$SCHEMA" \
    --data-dir "$OUT/data-$name" --bind "127.0.0.1:$port" --no-watch "$@"
}
BASELINE=${BENCH_BASELINE:-}
if [ -n "$BASELINE" ]; then
  [ -x "$BASELINE" ] || die "BENCH_BASELINE=$BASELINE is not an executable"
  "$BASELINE" serve --help | grep -q -- --decision-cache || die "the baseline has no --decision-cache"
fi
PG_LOG_OFF=(--audit-log off)
log "start the systems (pinned: ${SERVER_CPU[*]:-none})"
start axum 18501 "" "$EX/minimal_axum" 127.0.0.1:18501
serve_pg pg 18502
serve_pg pg_nolog 18503 "${PG_LOG_OFF[@]}"
serve_pg pg_uncached 18504 "${CACHE_FLAG[@]}"
if [ -n "$BASELINE" ]; then
  serve_pg pg_base 18507
  serve_pg pg_base_uncached 18508 --decision-cache 0
fi
start naive 18505 /readyz "$EX/naive_cedar" 127.0.0.1:18505 "$POLICIES" "$SCHEMA" "$WL/entities.json"
if [ -z "$AGENT_NOTE" ]; then
  # Rocket's default JSON limit (1 MiB) is smaller than the directory.
  start agent 18506 /v1/ env ROCKET_LIMITS='{json="512MiB"}' "$AGENT" --addr 127.0.0.1 --port 18506 --log-level error
  first=$(sed -n '1s/^POST\t[^\t]*\t//p' "$WL/reads.txt")
  "$EX/cedar_agent_feed" http://127.0.0.1:18506 http://127.0.0.1:18504 "$POLICIES" "$SCHEMA" \
    "$WL/entities.json" "$first" 2>&1 | tee "$OUT/cedar-agent-feed.log" >&2 ||
    die "cedar-agent could not be loaded (target/perf-run/cedar-agent-feed.log)"
fi
cerbos_serve() { # NAME HTTP_PORT GRPC_PORT on|off [free]: one PDP (free: on any core)
  local pinned=("${SERVER_CPU[@]}")
  [ "${5:-}" = free ] && SERVER_CPU=()
  cerbos_cmd "$2" "$3" "$4"
  start "$1" "$2" /_cerbos/health "${CERBOS_CMD[@]}"
  SERVER_CPU=("${pinned[@]}")
}
# Checked on both cores (~3 ms of CPU per question over four peers), then
# restarted pinned for the timing, as the cached PartnerGates are.
if [ -z "$CERBOS_NOTE" ]; then
  cerbos_serve cerbos 18509 18510 on free
  cerbos_serve cerbos_nolog 18511 18512 off free
fi

log "check: every distinct question of the stream, every peer against uncached PartnerGate"
peers=(http://127.0.0.1:18505 http://127.0.0.1:18502 http://127.0.0.1:18503)
[ -z "$AGENT_NOTE" ] && peers+=(http://127.0.0.1:18506)
[ -n "$BASELINE" ] && peers+=(http://127.0.0.1:18507 http://127.0.0.1:18508)
timeout 1800 "$EX/workload" check "$WL/reads.txt" http://127.0.0.1:18504 "${peers[@]}" 2>&1 | tee "$OUT/check.txt" >&2 ||
  die "the peers do not all answer as PartnerGate (target/perf-run/check.txt)"
if [ -z "$CERBOS_NOTE" ]; then
  log "check: every distinct question of the stream, Cerbos (REST and gRPC, log on and off) against uncached PartnerGate"
  timeout 1800 "$EX/cerbos_feed" check "$WL/reads.txt" "$WL/cerbos.txt" http://127.0.0.1:18504 \
    http://127.0.0.1:18509 http://127.0.0.1:18511 grpc://127.0.0.1:18510 grpc://127.0.0.1:18512 2>&1 |
    tee "$OUT/check-cerbos.txt" >&2 ||
    die "Cerbos does not answer as PartnerGate (target/perf-run/check-cerbos.txt)"
  for n in cerbos cerbos_nolog; do stop "${PID_OF[$n]}"; done
  cerbos_serve cerbos 18509 18510 on
  cerbos_serve cerbos_nolog 18511 18512 off
fi
log "restart the cached PartnerGates (the check filled their caches)"
for n in pg pg_nolog; do stop "${PID_OF[$n]}"; done
serve_pg pg 18502
serve_pg pg_nolog 18503 "${PG_LOG_OFF[@]}"
if [ -n "$BASELINE" ]; then
  stop "${PID_OF[pg_base]}"
  serve_pg pg_base 18507
fi

# What each system replays, and decisions per request line of that file.
SYSTEMS=(axum pg pg_nolog pg_uncached naive pg_batch)
[ -z "$AGENT_NOTE" ] && SYSTEMS+=(agent)
[ -z "$CERBOS_NOTE" ] && SYSTEMS+=(cerbos cerbos_nolog cerbos_grpc cerbos_grpc_nolog)
[ -n "$BASELINE" ] && SYSTEMS+=(pg_base pg_base_uncached)
for s in "${SYSTEMS[@]}"; do FILE_OF[$s]="$WL/stream.txt"; PER_LINE_OF[$s]=$READ_FRAC; done
FILE_OF[agent]="$WL/reads.txt"; PER_LINE_OF[agent]=1
FILE_OF[naive]="$WL/reads.txt"; PER_LINE_OF[naive]=1
for s in cerbos cerbos_nolog cerbos_grpc cerbos_grpc_nolog; do FILE_OF[$s]="$WL/cerbos.txt"; PER_LINE_OF[$s]=1; done
# The gRPC rows ask the same two PDPs on their gRPC ports.
PID_OF[cerbos_grpc]=${PID_OF[cerbos]:-}; PORT_OF[cerbos_grpc]=18510
PID_OF[cerbos_grpc_nolog]=${PID_OF[cerbos_nolog]:-}; PORT_OF[cerbos_grpc_nolog]=18512
FILE_OF[pg_batch]="$WL/batch.txt"; PER_LINE_OF[pg_batch]=$BATCH_PER_LINE
PID_OF[pg_batch]=${PID_OF[pg]}; PORT_OF[pg_batch]=${PORT_OF[pg]}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
cache_count() { # PORT hits|misses: the counter, or empty when absent
  curl -fsS "http://127.0.0.1:$1/metrics" | awk -v m="partnergate_decision_cache_$2_total" '
    index($1, m) == 1 && (length($1) == length(m) || substr($1, length(m) + 1, 1) == "{") { s += $NF; f = 1 }
    END { if (f) printf "%d\n", s }'
}
HITS=0 MISSES=0 CACHE_SEEN=0
# measure SYSTEM SECONDS OFFSET: one wrk run; appends "rps cpu_us_per_decision" to $OUT/SYSTEM.runs.
measure() {
  local s=$1 port=${PORT_OF[$1]} pid=${PID_OF[$1]} before t0 h0="" m0="" line
  case $s in pg*) before=$(reload_count "$port") ;; esac
  [ "$s" = pg ] && { h0=$(cache_count "$port" hits); m0=$(cache_count "$port" misses); }
  t0=$(cpu_ticks "$pid")
  case $s in
    cerbos_grpc*) timeout $(($2 + 120)) "${LOAD_CPU[@]}" "$EX/cerbos_feed" grpc-load "127.0.0.1:$port" \
      "${FILE_OF[$s]}" "$CONNS" "$2" "$3" >"$OUT/$s.wrk" 2>&1 || true ;;
    *) timeout $(($2 + 60)) "${LOAD_CPU[@]}" wrk -t1 -c"$CONNS" -d"$2s" --timeout 5s -s "$ROOT/scripts/lib/replay.lua" \
      "http://127.0.0.1:$port/" -- "${FILE_OF[$s]}" "$TOKEN" "$3" >"$OUT/$s.wrk" 2>&1 || true ;;
  esac
  line=$(grep '^WRK' "$OUT/$s.wrk") || die "wrk failed on $s: $(cat "$OUT/$s.wrk")"
  case $s in pg*) reloads_flat "$s" "$port" "$before" ;; esac
  if [ -n "$h0" ] && [ -n "$m0" ]; then
    HITS=$((HITS + $(cache_count "$port" hits) - h0)); MISSES=$((MISSES + $(cache_count "$port" misses) - m0)); CACHE_SEEN=1
  fi
  awk -v l="$line" -v t="$(($(cpu_ticks "$pid") - t0))" -v hz="$TICK" -v per="${PER_LINE_OF[$s]}" -v s="$s" 'BEGIN {
    n = split(l, f, /[ =]/); for (i = 2; i < n; i += 2) v[f[i]] = f[i + 1]
    dec = v["requests"] * per
    printf "%s %.1f %.2f %d %d\n", s, v["rps"], (dec > 0 ? t * 1e6 / hz / dec : 0), v["non2xx"], v["sockerr"] }' >>"$OUT/$s.runs"
}

log "warm-up: 2 s each"
for s in "${SYSTEMS[@]}"; do measure "$s" 2 0; done
for s in "${SYSTEMS[@]}"; do : >"$OUT/$s.runs"; done
HITS=0 MISSES=0 CACHE_SEEN=0
for r in $(seq 1 "$ROUNDS"); do
  order=("${SYSTEMS[@]}")
  if [ $((r % 2)) = 0 ]; then
    order=(); for ((i = ${#SYSTEMS[@]} - 1; i >= 0; i--)); do order+=("${SYSTEMS[$i]}"); done
  fi
  offset=$(( (r * 7919 * 13) % $(wl requests) ))
  log "round $r/$ROUNDS (${order[*]}), from line $offset"
  for s in "${order[@]}"; do measure "$s" "$ROUND" "$offset"; done
done
for s in "${SYSTEMS[@]}"; do stop "${PID_OF[$s]}" 2>/dev/null || true; done

# --- results -------------------------------------------------------------------
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print 0; else print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
col() { awk -v c="$2" '{ print $c }' "$OUT/$1.runs"; }
rate() { col "$1" 2 | median; }                 # median req/s
dps() { awk -v r="$(rate "$1")" -v p="${PER_LINE_OF[$1]}" 'BEGIN { printf "%.0f", r * p }'; }
cpu() { col "$1" 3 | median; }
# round_ratio A B [decisions]: median over rounds of A's rate / B's rate (per decision when 3rd arg).
round_ratio() {
  paste -d' ' "$OUT/$1.runs" "$OUT/$2.runs" | awk -v pa="${PER_LINE_OF[$1]}" -v pb="${PER_LINE_OF[$2]}" -v d="${3:-}" \
    '{ if (d == "") print $2 / $7; else print ($2 * pa) / ($7 * pb) }' | median
}
verdict() { awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN { ok = (op == "<=") ? (v <= t) : (v >= t); print (ok ? "met" : "MISSED") }'; }
ROWS="$OUT/rows.txt"; : >"$ROWS"
row() { printf '%s|%s|%s|%s\n' "$1" "$2" "$3" "$4" >>"$ROWS"; }
fmt() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }

r=$(fmt "$(round_ratio pg axum)")
row "single decisions, PartnerGate (cache on, log on) / bare axum (req/s: $(rate pg) vs $(rate axum))" "${r}x" ">= 0.5x" "$(verdict "$r" '>=' 0.5)"
r=$(fmt "$(round_ratio pg_uncached naive d)")
row "uncached PartnerGate / naive axum+Cedar (decisions/s: $(dps pg_uncached) vs $(dps naive); the naive handler replays the reads only)${CACHE_NOTE:+; $CACHE_NOTE}" "${r}x" ">= 1.5x" "$(verdict "$r" '>=' 1.5)"
r=$(fmt "$(round_ratio pg_batch pg d)")
row "batch(100) / single calls, PartnerGate (decisions/s: $(dps pg_batch) vs $(dps pg))" "${r}x" ">= 5x" "$(verdict "$r" '>=' 5)"
r=$(fmt "$(round_ratio pg pg_nolog)")
row "decision log on / off, cache on (req/s: $(rate pg) vs $(rate pg_nolog))" "${r}x" ">= 0.9x" "$(verdict "$r" '>=' 0.9)"
if [ -z "$AGENT_NOTE" ]; then
  r=$(fmt "$(round_ratio pg agent d)")
  row "PartnerGate / cedar-agent (decisions/s: $(dps pg) vs $(dps agent); cedar-agent replays the reads only)" "${r}x" "-" "informational"
else
  row "PartnerGate / cedar-agent: $AGENT_NOTE" "not measured" "-" "informational"
fi
if [ -z "$CERBOS_NOTE" ]; then
  r=$(fmt "$(round_ratio pg_uncached cerbos d)")
  row "PartnerGate (cache off, log on) / Cerbos $CERBOS_VERSION REST, decision log on (decisions/s per core: $(dps pg_uncached) vs $(dps cerbos); Cerbos replays the reads only)" "${r}x" ">= 2x" "$(verdict "$r" '>=' 2)"
  r=$(fmt "$(round_ratio pg_uncached cerbos_grpc d)")
  row "PartnerGate (cache off, log on) / Cerbos $CERBOS_VERSION gRPC, decision log on (decisions/s per core: $(dps pg_uncached) vs $(dps cerbos_grpc))" "${r}x" ">= 2x" "$(verdict "$r" '>=' 2)"
  r=$(fmt "$(round_ratio pg_uncached cerbos_nolog d)")
  row "PartnerGate (cache off, log on) / Cerbos $CERBOS_VERSION REST, decision log off (decisions/s per core: $(dps pg_uncached) vs $(dps cerbos_nolog))" "${r}x" "-" "informational"
  r=$(fmt "$(round_ratio pg_uncached cerbos_grpc_nolog d)")
  row "PartnerGate (cache off, log on) / Cerbos $CERBOS_VERSION gRPC, decision log off (decisions/s per core: $(dps pg_uncached) vs $(dps cerbos_grpc_nolog))" "${r}x" "-" "informational"
  r=$(fmt "$(round_ratio cerbos cerbos_nolog)")
  row "Cerbos decision log on / off, REST (req/s: $(rate cerbos) vs $(rate cerbos_nolog))" "${r}x" "-" "informational"
  r=$(fmt "$(round_ratio cerbos_grpc cerbos_grpc_nolog)")
  row "Cerbos decision log on / off, gRPC (req/s: $(rate cerbos_grpc) vs $(rate cerbos_grpc_nolog))" "${r}x" "-" "informational"
else
  row "PartnerGate (cache off, log on) / Cerbos: $CERBOS_NOTE" "not measured" ">= 2x" "not measured"
fi
if [ -n "$BASELINE" ]; then
  r=$(fmt "$(round_ratio pg pg_base)")
  row "this build / BENCH_BASELINE, cache on, log on (req/s: $(rate pg) vs $(rate pg_base))" "${r}x" "-" "informational"
  r=$(fmt "$(round_ratio pg_uncached pg_base_uncached)")
  row "this build / BENCH_BASELINE, uncached, log on (req/s: $(rate pg_uncached) vs $(rate pg_base_uncached))" "${r}x" "-" "informational"
fi
if [ "$CACHE_SEEN" = 1 ] && [ $((HITS + MISSES)) -gt 0 ]; then
  row "decision cache hit rate, PartnerGate (cache on), timed rounds ($HITS hits, $MISSES misses)" "$(awk -v h="$HITS" -v m="$MISSES" 'BEGIN { printf "%.1f%%", 100 * h / (h + m) }')" "-" "-"
else
  row "decision cache hit rate: n/a (no partnergate_decision_cache_*_total in /metrics)" "n/a" "-" "-"
fi
for s in "${SYSTEMS[@]}"; do
  bad=$(awk '{ s += $4 + $5 } END { print s + 0 }' "$OUT/$s.runs")
  row "server CPU per decision, $s (median req/s $(rate "$s"); non-2xx + socket errors $bad)" "$(fmt "$(cpu "$s")") µs" "-" "-"
done

if [ "$BIG_USERS" -gt 0 ]; then
  log "start-up with $BIG_USERS users (scripts/bench.sh, users section)"
  BENCH_ONLY=users BENCH_USERS=$BIG_USERS "$ROOT/scripts/bench.sh" >"$OUT/big-users.txt" 2>&1 ||
    die "scripts/bench.sh users failed (target/perf-run/big-users.txt)"
  grep -E '^scale: start-up|^memory: RSS' "$ROOT/target/bench-run/rows.txt" >>"$ROWS" ||
    die "no start-up rows in target/bench-run/rows.txt"
fi

{
  echo
  echo "PartnerGate issue #14 — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "workload: $(sed 's/^WORKLOAD //' "$OUT/workload.txt")"
  echo "$(sed 's/^CHECK //' "$OUT/check.txt" | grep questions) (checked before timing)"
  [ -z "$CERBOS_NOTE" ] && echo "Cerbos: $(sed 's/^CHECK_CERBOS //' "$OUT/check-cerbos.txt" | grep questions) (checked before timing)"
  echo "wrk -t1 -c$CONNS, $ROUNDS rounds of ${ROUND}s per system, order reversed every other round; servers on core 1, wrk on core 0"
  echo
  echo "| measurement | result | goal | verdict |"
  echo "| --- | --- | --- | --- |"
  awk -F'|' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$ROWS"
} | tee "$OUT/table.md"
