#!/usr/bin/env bash
# Every action of the schema, with its contexts, asked of Cerbos (REST and
# gRPC) and of uncached PartnerGate: any different decision fails (exit 1).
# The workload check in scripts/perf.sh covers the workload's 10 actions on
# a large directory; this covers all 16 on a small one built to reach every
# partner rule (all_actions.py: ~13,000 questions, under a minute).
#
#   benches/peers/cerbos/check-all-actions.sh   # after a release build of
#   partnergate and the cerbos_feed example (CARGO_TARGET_DIR respected;
#   BENCH_PROFILE=debug for a debug build)
#
# Loopback only; both servers are stopped on exit. Output:
# target/cerbos-all-actions/.
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$(pwd)
OUT="$ROOT/target/cerbos-all-actions"
rm -rf "$OUT"
mkdir -p "$OUT"
BUILD="${CARGO_TARGET_DIR:-$ROOT/target}/${BENCH_PROFILE:-release}"
log() { printf '== %s\n' "$*" >&2; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
# shellcheck source=scripts/lib/cerbos.sh
. "$ROOT/scripts/lib/cerbos.sh"
for b in "$BUILD/partnergate" "$BUILD/examples/cerbos_feed"; do
  [ -x "$b" ] || die "$b is missing: cargo build --release --bin partnergate --example cerbos_feed"
done
cerbos_install
[ -z "$CERBOS_NOTE" ] || die "Cerbos: $CERBOS_NOTE"

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
wait_ready() { # URL PID NAME
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    [ -e "/proc/$2" ] || die "$3 exited; see $OUT/$3.log"
    sleep 0.1
  done
  die "$3 not ready after 60 s; see $OUT/$3.log"
}

python3 "$ROOT/benches/peers/cerbos/all_actions.py" "$OUT" >&2
"$BUILD/partnergate" import --data-dir "$OUT/data" --schema "$ROOT/schemas/partnergate.cedarschema" \
  "$OUT/entities.json" >"$OUT/import.log"
"$BUILD/partnergate" serve --policies "$ROOT/policies" --schema "$ROOT/schemas/partnergate.cedarschema" \
  --data-dir "$OUT/data" --bind 127.0.0.1:18604 --no-watch --decision-cache 0 >"$OUT/partnergate.log" 2>&1 &
PIDS+=($!)
wait_ready http://127.0.0.1:18604/readyz "$!" partnergate
cerbos_cmd 18601 18602 off
"${CERBOS_CMD[@]}" >"$OUT/cerbos.log" 2>&1 &
PIDS+=($!)
wait_ready http://127.0.0.1:18601/_cerbos/health "$!" cerbos

"$BUILD/examples/cerbos_feed" requests "$OUT/entities.json" "$OUT/questions.txt" "$OUT/cerbos.txt" >&2
"$BUILD/examples/cerbos_feed" check "$OUT/questions.txt" "$OUT/cerbos.txt" http://127.0.0.1:18604 \
  http://127.0.0.1:18601 grpc://127.0.0.1:18602
