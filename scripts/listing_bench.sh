#!/usr/bin/env bash
# Account listings with 50,000 users in other accounts vs an empty store,
# side by side (issue #12 defect 8): prints both medians and their ratio.
# Usage: scripts/listing_bench.sh [OTHERS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release --example listing_bench -- "${1:-50000}" "${2:-2000}"
