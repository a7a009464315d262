# Sourced by the sidecar load scripts (audit_overhead.sh, audit_cpu.sh) from
# the repository root: installs wrk if missing, builds the release binary
# ($bin), makes a scratch directory ($work, removed on exit with every
# server started) holding the wrk request ($work/body.lua: Pat dismisses
# Emma, an Allow on the demo entities), and defines start_sidecar.

# shellcheck source=scripts/lib/reloads.sh
. "$(dirname "${BASH_SOURCE[0]}")/reloads.sh"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release --quiet --bin partnergate
bin=target/release/partnergate
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/body.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"principal": "User::\\"pat\\"", "action": "Action::\\"dismiss_user\\"", "resource": "User::\\"emma\\""}'
LUA

# start_sidecar PORT DATA_DIR [serve flags...]: start a server (under the
# command in the array pin_server, if the caller set one), wait until it is
# ready, load the demo entities and check the timed request is an Allow.
# Its pid is left in $sidecar_pid; its output goes to DATA_DIR.log.
start_sidecar() {
  local port=$1 data=$2
  shift 2
  mkdir -p "$data"
  "${pin_server[@]}" "$bin" serve --bind 127.0.0.1:"$port" --data-dir "$data" --no-watch "$@" \
    >"$data.log" 2>&1 &
  sidecar_pid=$!
  pids+=("$sidecar_pid")
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf -X PUT "http://127.0.0.1:$port/v1/entities" -H "Authorization: Bearer $(cat "$data/token")" \
    --json @demo/entities.json >/dev/null
  curl -sf "http://127.0.0.1:$port/v1/is_authorized" \
    --json '{"principal": "User::\"pat\"", "action": "Action::\"dismiss_user\"", "resource": "User::\"emma\""}' \
    | grep -q '"decision":"Allow"'
}
