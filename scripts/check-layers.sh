#!/usr/bin/env bash
# The layering of the workspace (ARCHITECTURE.md), checked on
# `cargo metadata`: fails, naming the edge, when
# - a crate depends on a workspace crate at its own layer or above
#   (any dependency kind: a dev-dependency upward is a layering break too);
# - a library crate depends on clap or dialoguer (only the binary parses
#   the command line);
# - a crate other than partnergate-server depends on an HTTP crate (axum,
#   tower, tower-http, hyper, hyper-util, utoipa, metrics-exporter-prometheus,
#   tonic, envoy-types).
# The two crate rules apply to normal and build dependencies; the binary's
# dev-dependencies (tests, benches, examples) may use anything.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys

# Lowest first: a crate may depend only on crates with a smaller rank.
RANK = {
    "partnergate-policy": 1,
    "partnergate-audit": 2,
    "partnergate-core": 3,
    "partnergate-prove": 4,
    "partnergate-orchestrator": 5,
    "partnergate-gateway": 6,
    "partnergate-search": 6,
    "partnergate-server": 7,
    "partnergate": 8,
}
BINARY = "partnergate"
CLI_ONLY = {"clap", "dialoguer"}
HTTP = {"axum", "tower", "tower-http", "hyper", "hyper-util", "utoipa",
        "metrics-exporter-prometheus", "tonic", "envoy-types"}
HTTP_OWNER = "partnergate-server"

meta = json.load(sys.stdin)
failures = []
for pkg in meta["packages"]:
    name = pkg["name"]
    if name not in RANK:
        failures.append(f"{name}: workspace crate missing from the rank table in scripts/check-layers.sh")
        continue
    for dep in pkg["dependencies"]:
        d, kind = dep["name"], dep["kind"] or "normal"
        edge = f"{name} -> {d} ({kind})"
        if d in RANK and RANK[d] >= RANK[name]:
            failures.append(f"{edge}: {d} is not below {name} in the layering")
        if kind == "dev":
            continue
        if d in CLI_ONLY and name != BINARY:
            failures.append(f"{edge}: only the binary ({BINARY}) may depend on {d}")
        if d in HTTP and name != HTTP_OWNER:
            failures.append(f"{edge}: only {HTTP_OWNER} may depend on {d}")
for f in failures:
    print("layering violation:", f, file=sys.stderr)
if failures:
    sys.exit(1)
print("layering ok:", len(meta["packages"]), "crates")
'

# Within each crate: no import loop between files (a module is a file; see
# scripts/check-file-loops.py).
python3 "$(dirname "$0")/check-file-loops.py"
