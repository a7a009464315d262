#!/usr/bin/env bash
# Partner invitations per second through one and through two `partnergate
# serve` replicas on one PostgreSQL (PARTNERGATE_TEST_PG), accounts that
# share no partner company, in alternating rounds (1, 2, 1, 2, ...): prints
# each round with the CPU milliseconds per invitation of each replica and of
# PostgreSQL, the medians, their ratio and whether the goal (>= 1.8x) is met
# or MISSED; the propagation of an invitation from one replica to the other
# while both take writes (goal p99 <= 50 ms), and of an entity change from
# A to an idle B.
# Usage: scripts/replica_writes.sh [ACCOUNTS] [ROUNDS] [PROPAGATION_SAMPLES]
# PROFILE=debug measures a debug build (quicker to build, slower to run);
# BUILD_LOCK=FILE takes that lock (flock) for the build only, not the run.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
flag=--release
[ "$profile" = debug ] && flag=
target=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
build=(cargo build $flag --quiet --bin partnergate --example replica_bench)
if [ -n "${BUILD_LOCK:-}" ]; then
  flock "$BUILD_LOCK" "${build[@]}"
else
  "${build[@]}"
fi
PARTNERGATE_BIN="$target/$profile/partnergate" \
  exec "$target/$profile/examples/replica_bench" "${1:-200}" "${3:-200}" "${2:-3}"
