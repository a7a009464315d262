#!/usr/bin/env bash
# Sidecar throughput with the decision log on (--audit-sync batch) vs off,
# same machine, same run: POST /v1/is_authorized with wrk on loopback, the
# server pinned to core 0 and wrk to core 1 where taskset exists.
#
#   scripts/audit_overhead.sh [SECONDS] [CONNECTIONS]
#   AUDIT_FLAGS="--audit-sync never" PIN_SERVER=0 scripts/audit_overhead.sh
#
# Prints requests/s for each mode and the ratio (target >= 0.9).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-16}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release --quiet --bin partnergate
bin=target/release/partnergate
pin_server=() pin_load=()
# PIN_SERVER=0 leaves the server (and so the log's writer thread) free to
# use both cores, sharing core 1 with wrk.
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin_load=(taskset -c 1)
  [ "${PIN_SERVER:-1}" = 1 ] && pin_server=(taskset -c 0)
fi
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/body.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"principal": "User::\\"pat\\"", "action": "Action::\\"dismiss_user\\"", "resource": "User::\\"emma\\""}'
EOF

run() { # $1 = label, rest = extra serve flags; prints requests/s
  local label=$1; shift
  local data="$work/data-$label" port=18480
  mkdir -p "$data"
  "${pin_server[@]}" "$bin" serve --bind 127.0.0.1:$port --data-dir "$data" --no-watch "$@" \
    >"$work/$label.out" 2>"$work/$label.err" &
  pid=$!
  for _ in $(seq 1 100); do curl -sf http://127.0.0.1:$port/readyz >/dev/null && break; sleep 0.1; done
  curl -sf -X PUT http://127.0.0.1:$port/v1/entities -H "Authorization: Bearer $(cat "$data/token")" \
    --data @demo/entities.json >/dev/null
  # the answer is checked before timing
  curl -sf http://127.0.0.1:$port/v1/is_authorized \
    -d '{"principal": "User::\"pat\"", "action": "Action::\"dismiss_user\"", "resource": "User::\"emma\""}' \
    | grep -q '"decision":"Allow"'
  local rps
  rps=$("${pin_load[@]}" wrk -t1 -c"$conns" -d"${secs}s" -s "$work/body.lua" \
    http://127.0.0.1:$port/v1/is_authorized | awk '/Requests\/sec/ {print $2}')
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  if [ "$label" = on ]; then
    "$bin" audit verify "$data/decisions.jsonl" >&2
  fi
  echo "$rps"
}

off=$(run off --audit-log off)
on=$(run on ${AUDIT_FLAGS:---audit-sync batch})
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%FT%TZ)"
printf '%-28s %12s\n' "decision log off" "$off req/s"
printf '%-28s %12s\n' "decision log on (batch)" "$on req/s"
awk -v on="$on" -v off="$off" 'BEGIN { printf "%-28s %12.2f (target >= 0.90)\n", "ratio on/off", on/off }'
