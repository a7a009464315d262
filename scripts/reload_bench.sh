#!/usr/bin/env bash
# Policy reload with many policies: incremental reloads (the default) and
# full reloads (`serve --full-reload`) side by side, in alternating rounds.
#
#   scripts/reload_bench.sh       # prints a table; results in target/reload-bench/
#
# The pack is the shipped one plus RELOAD_BENCH_POLICIES (default 10,000)
# generated policies, 1,000 a file (as scripts/bench.sh's scale rows). Each
# round starts one sidecar of each mode (the start-to-ready time), then makes
# RELOAD_BENCH_EDITS (default 5) edits on each with `reload_probe edits`: the
# time from a file write (temp + rename) to the first decision served under the
# new policy version, for two kinds of edit: a new one-policy file, and one
# policy added to a file of 1,000. Medians over all rounds.
#
# Knobs: RELOAD_BENCH_ROUNDS (default 3), RELOAD_BENCH_POLICIES,
# RELOAD_BENCH_EDITS, PARTNERGATE_BIN and PROBE_BIN (prebuilt binaries: then
# nothing is built). Needs curl, awk; taskset where there are two cores (the
# sidecars on core 1, the probe on core 0). Loopback only; every loop is
# bounded; every sidecar started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/target/reload-bench"
rm -rf "$OUT"
mkdir -p "$OUT"
ROUNDS=${RELOAD_BENCH_ROUNDS:-3}
N=${RELOAD_BENCH_POLICIES:-10000}
EDITS=${RELOAD_BENCH_EDITS:-5}
GOAL_MS=500
SCHEMA="$ROOT/schemas/partnergate.cedarschema"
export RUST_LOG=${RUST_LOG:-warn}

if [ -z "${PARTNERGATE_BIN:-}" ] || [ -z "${PROBE_BIN:-}" ]; then
  cargo build --release --quiet --bin partnergate --example reload_probe
  TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  PARTNERGATE_BIN="$TARGET/release/partnergate"
  PROBE_BIN="$TARGET/release/examples/reload_probe"
fi
BIN=$PARTNERGATE_BIN
PROBE=$PROBE_BIN
if [ "$(nproc)" -ge 2 ]; then SERVER_CPU="taskset -c 1"; LOAD_CPU="taskset -c 0"; else SERVER_CPU=""; LOAD_CPU=""; fi

PIDS=()
# stop PID and gen_policies DIR N.
# shellcheck source=scripts/lib/pack_gen.sh
. "$ROOT/scripts/lib/pack_gen.sh"
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && stop "$p"; done; }
trap cleanup EXIT INT TERM
log() { printf '== %s\n' "$*" >&2; }
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$2"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print ((v + 0 == v && v <= t) ? "met" : "MISSED") }'; }
# shellcheck source=scripts/lib/reloads.sh
. "$ROOT/scripts/lib/reloads.sh"

DATA="$OUT/data"
"$BIN" import --data-dir "$DATA" --schema "$SCHEMA" demo/entities.json >/dev/null
BIG=$(printf '50-generated-%03d.cedar' $(( (N - 1) / 1000 )))

# serve MODE PORT FLAGS...: a fresh copy of the pack and the data, served;
# prints the start-to-ready milliseconds.
serve() {
  local mode=$1 port=$2; shift 2
  gen_policies "$OUT/$mode/policies" "$N"
  rm -rf "$OUT/$mode/data"; cp -r "$DATA" "$OUT/$mode/data"
  local started; started=$(date +%s.%N)
  # shellcheck disable=SC2086
  $SERVER_CPU "$BIN" serve --policies "$OUT/$mode/policies" --schema "$SCHEMA" \
    --data-dir "$OUT/$mode/data" --bind "127.0.0.1:$port" --decision-cache 0 \
    --max-policies $((N + 1000)) "$@" >>"$OUT/$mode.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$mode=$!"
  local deadline=$((SECONDS + 120))
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "sidecar $mode did not become ready; see $OUT/$mode.log" >&2; exit 1; }
    sleep 0.02
  done
  awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f\n", (e - s) * 1000 }'
}

# edits MODE PORT KIND: EDITS edits of KIND (small: a new one-policy file;
# big: one policy added to a file of 1,000), each time from write to served
# appended to $OUT/MODE-KIND.ms; each edit must make exactly one reload.
edits() {
  local mode=$1 port=$2 kind=$3 dir="$OUT/$1/policies" line before after
  before=$(reload_count "$port")
  if [ "$kind" = small ]; then
    line=$(timeout 600 $LOAD_CPU "$PROBE" edits "http://127.0.0.1:$port" "$dir/99-bench-probe.cedar" "$EDITS" 200 || true)
  else
    cp "$dir/$BIG" "$OUT/$mode/base.cedar"
    line=$(timeout 600 $LOAD_CPU "$PROBE" edits "http://127.0.0.1:$port" "$dir/$BIG" "$EDITS" 200 "$OUT/$mode/base.cedar" || true)
  fi
  after=$(reload_count "$port")
  echo "$mode $kind: $line; reloads $before -> $after" >>"$OUT/probe.txt"
  [ "$(field missed "$line")" = 0 ] || { echo "FAIL: $mode $kind: an edit was not served: $line" >&2; exit 1; }
  [ $((after - before)) -eq "$EDITS" ] || echo "note: $mode $kind: $((after - before)) reloads for $EDITS edits" >&2
  field times_ms "$line" | tr ',' '\n' >>"$OUT/$mode-$kind.ms"
}

for r in $(seq 1 "$ROUNDS"); do
  for mode in incremental full; do
    flag=""
    [ "$mode" = full ] && flag="--full-reload"
    port=18470
    log "round $r/$ROUNDS: $mode ($N generated policies)"
    # shellcheck disable=SC2086
    serve "$mode" "$port" $flag >>"$OUT/$mode-start.ms"
    edits "$mode" "$port" small
    # The probe file goes (its id would clash with the next edit's), and
    # that reload is waited for.
    n=$(reload_count "$port")
    rm "$OUT/$mode/policies/99-bench-probe.cedar"
    deadline=$((SECONDS + 120))
    until [ "$(reload_count "$port")" -gt "$n" ]; do
      [ $SECONDS -lt $deadline ] || { echo "FAIL: $mode: removing the probe file did not reload" >&2; exit 1; }
      sleep 0.05
    done
    edits "$mode" "$port" big
    eval "stop \$PID_$mode"
  done
done

m() { median <"$OUT/$1.ms"; }
{
  echo
  echo "Policy reload, $N generated policies (+$(ls "$ROOT"/policies/*.cedar | wc -l) shipped files) — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "$ROUNDS alternating rounds, $EDITS edits of each kind per round and mode; medians"
  echo
  echo "| measurement | incremental | full (--full-reload) | full / incremental | goal | verdict |"
  echo "| --- | --- | --- | --- | --- | --- |"
  for kind in small big; do
    case $kind in
      small) what="edit: a new one-policy file, write -> served" ;;
      big) what="edit: one policy added to a file of 1,000, write -> served" ;;
    esac
    i=$(m "incremental-$kind"); f=$(m "full-$kind")
    echo "| $what | $i ms | $f ms | $(awk -v a="$f" -v b="$i" 'BEGIN { printf "%.1fx", a / b }') | <= $GOAL_MS ms | $(verdict "$i" "$GOAL_MS") |"
  done
  i=$(m incremental-start); f=$(m full-start)
  echo "| start to /readyz (the first load is a full load in both modes) | $i ms | $f ms | $(awk -v a="$f" -v b="$i" 'BEGIN { printf "%.2fx", a / b }') | - | - |"
} | tee "$OUT/table.md"
