#!/usr/bin/env bash
# Partner invitations per second through one and through two `partnergate
# serve` replicas on one PostgreSQL (PARTNERGATE_TEST_PG), accounts that
# share no partner company, in alternating rounds (1, 2, 1, 2, ...): prints
# each round, the medians, their ratio and whether the goal (>= 1.8x) is met
# or MISSED; then the propagation of a change from replica A to B.
# Usage: scripts/replica_writes.sh [ACCOUNTS] [ROUNDS] [PROPAGATION_SAMPLES]
# PROFILE=debug measures a debug build (quicker to build, slower to run).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
flag=--release
[ "$profile" = debug ] && flag=
target=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
cargo build $flag --quiet --bin partnergate
PARTNERGATE_BIN="$target/$profile/partnergate" \
  exec cargo run --quiet $flag --example replica_bench -- "${1:-100}" "${3:-200}" "${2:-3}"
