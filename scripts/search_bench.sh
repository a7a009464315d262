#!/usr/bin/env bash
# Issue #16's benchmark: resource search "the users of account A that partner
# P may dismiss" vs the brute-force loop (every stored user asked with the
# full decision), with 100,000 and 1,000,000 users over 1,000 accounts, in
# one run (examples/search_bench.rs): time to the first page, to the whole
# result, the loop, and the 1M / 100k ratio for a fixed result size.
# Usage: scripts/search_bench.sh [SIZES] [ROUNDS] [BRUTE_ROUNDS]
#   e.g. scripts/search_bench.sh 100000,1000000 31 2   (the defaults; ~8 min, ~6 GiB)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release --example search_bench -- "${1:-100000,1000000}" "${2:-31}" "${3:-2}"
