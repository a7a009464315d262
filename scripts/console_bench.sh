#!/usr/bin/env bash
# Issue #18's benchmark: the console's Decisions page on a large decision log
# (1 GiB by default, written by examples/console_log_gen.rs: 1,000 principals,
# 10 actions, one decision in four a Deny, rotated at 256 MiB as `serve`
# does). Starts the release sidecar on that log and times, with curl, each
# page ROUNDS times (median, and the slowest): the first page unfiltered
# (the whole HTML page, and its data fragment alone), a common filter, a
# 1-in-1000 principal, the next (older) page through the cursor, a filter
# that matches nothing (it stops at the page's byte budget), one record
# opened (its slice looked up in its file), and the histogram. Prints the
# sidecar's RSS before and its peak after (memory is bounded by the page,
# not the log).
# Usage: scripts/console_bench.sh            (env: BENCH_LOG_BYTES, BENCH_ROUNDS)
set -euo pipefail
cd "$(dirname "$0")/.."
BYTES=${BENCH_LOG_BYTES:-1073741824}
ROUNDS=${BENCH_ROUNDS:-9}
DIR=target/console-bench
DATA=$DIR/data
LOG=$DATA/decisions.jsonl
cargo build --release --quiet --bin partnergate --example console_log_gen
mkdir -p "$DATA"
have=$(cat "$LOG" "$LOG".* 2>/dev/null | wc -c || true)
if [ "${have:-0}" -lt "$BYTES" ]; then
  echo "writing a $BYTES-byte decision log to $LOG (once; kept for later runs)" >&2
  target/release/examples/console_log_gen "$LOG" "$BYTES" >&2
fi
files=$(ls "$LOG" "$LOG".* 2>/dev/null | wc -l)
size=$(cat "$LOG" "$LOG".* | wc -c)

OUT=$(mktemp)
started=$(date +%s%N)
target/release/partnergate serve --data-dir "$DATA" --bind 127.0.0.1:0 --no-watch >"$OUT" 2>"$DIR/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -f "$OUT"' EXIT
for _ in $(seq 1 600); do grep -q "listening on" "$OUT" 2>/dev/null && break; sleep 0.1; done
BASE=$(sed -n 's/^partnergate listening on //p' "$OUT" | head -n1)
[ -n "$BASE" ] || { echo "the sidecar did not start:" >&2; cat "$DIR/serve.log" >&2; exit 1; }
start_ms=$(( ($(date +%s%N) - started) / 1000000 ))
rss() { awk "/^$1:/ {print \$2}" /proc/$PID/status; }
rss_before=$(rss VmRSS)

# One URL ROUNDS times: "median_ms max_ms".
time_url() {
  local url=$1 t=()
  for _ in $(seq 1 "$ROUNDS"); do
    read -r code secs < <(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$BASE$url")
    [ "$code" = 200 ] || { echo "$url answered $code" >&2; exit 1; }
    t+=("$secs")
  done
  printf '%s\n' "${t[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f %.1f\n", a[int((NR+1)/2)]*1000, a[NR]*1000}'
}

older=$(curl -s "$BASE/console/f/decisions" | sed -n 's/.*id="older" href="\([^"]*\)".*/\1/p' | head -n1 | sed 's/&amp;/\&/g')
at=$(curl -s "$BASE/console/f/decisions" | sed -n 's/.*href="\/console\/decisions?at=\([0-9.]*\)".*/\1/p' | head -n1)
echo "# Console decisions page on a $((size / 1048576)) MiB log in $files files; $ROUNDS rounds each; $(date -u +%FT%TZ); $(nproc) cores"
echo "| page | median ms | slowest ms | goal |"
echo "| --- | --- | --- | --- |"
row() { read -r med max < <(time_url "$2"); echo "| $1 | $med | $max | $3 |"; }
row "first page, whole HTML page (\`/console/decisions\`)" "/console/decisions" "<= 300 ms"
row "first page, data fragment only" "/console/f/decisions" "<= 300 ms"
row "filter decision=deny" "/console/f/decisions?decision=deny" "-"
row "filter principal=user-7 (1 record in 1,000)" "/console/f/decisions?principal=user-7" "-"
row "next (older) page through the cursor" "/console/f/decisions${older#/console/decisions}" "-"
row "filter matching nothing (stops at the 64 MiB budget)" "/console/f/decisions?principal=nobody" "-"
row "one record opened (slice looked up in its file)" "/console/f/decisions/one?at=$at" "-"
row "histogram (newest 128 MiB)" "/console/f/decisions/histogram" "-"
echo
curl -s "$BASE/console/f/decisions" | grep -o 'id="page-note">[^<]*' | sed 's/.*>/first page: /'
echo "sidecar start to listening on this log: $start_ms ms"
echo "sidecar RSS: $((rss_before / 1024)) MiB after start, peak $(( $(rss VmHWM) / 1024 )) MiB after every page above (the log holds $((size / 1048576)) MiB)"
