# Sourced by scripts/perf.sh: the Cerbos PDP as a peer. Its binary comes
# from npm (@cerbos/cerbos-linux-x64, BENCH_CERBOS_VERSION, default 0.55)
# into target/peers/cerbos-VERSION/ (never committed); its policies, tests
# and configuration are in benches/peers/cerbos/. Needs ROOT, OUT and
# log() from the caller; sets CERBOS (the binary) or CERBOS_NOTE (why
# Cerbos is not run).

CERBOS_VERSION=${BENCH_CERBOS_VERSION:-0.55}
CERBOS_HOME="$ROOT/benches/peers/cerbos"
CERBOS_DIR="$ROOT/target/peers/cerbos-$CERBOS_VERSION"
CERBOS="$CERBOS_DIR/node_modules/@cerbos/cerbos-linux-x64/cerbos-linux-x64"
CERBOS_NOTE=""

# cerbos_install: install the binary once (npm), then compile the policies
# and run their test suites (`cerbos compile`): a failing test fails the run.
cerbos_install() {
  if [ "${BENCH_SKIP_CERBOS:-0}" = 1 ]; then
    CERBOS_NOTE="skipped (BENCH_SKIP_CERBOS=1)"; return 0
  fi
  if [ ! -x "$CERBOS" ]; then
    if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
      CERBOS_NOTE="skipped: the npm package is for linux-x64, this is $(uname -s)-$(uname -m)"; return 0
    fi
    if ! command -v npm >/dev/null; then
      CERBOS_NOTE="skipped: npm is missing (apt-get install -y npm), so Cerbos could not be installed"; return 0
    fi
    log "install Cerbos $CERBOS_VERSION from npm into target/peers (once)"
    mkdir -p "$CERBOS_DIR"
    if ! npm install --no-save --no-audit --no-fund --prefix "$CERBOS_DIR" \
      "@cerbos/cerbos-linux-x64@$CERBOS_VERSION" >"$OUT/cerbos-install.log" 2>&1 || [ ! -x "$CERBOS" ]; then
      CERBOS_NOTE="skipped: Cerbos could not be installed (target/perf-run/cerbos-install.log)"; return 0
    fi
  fi
  log "Cerbos $("$CERBOS" --version | head -1): compile the policies and run their tests"
  "$CERBOS" compile --no-color "$CERBOS_HOME/policies" >"$OUT/cerbos-compile.txt" 2>&1 || {
    cat "$OUT/cerbos-compile.txt" >&2
    echo "FAIL: the Cerbos policies do not compile or their tests fail (target/perf-run/cerbos-compile.txt)" >&2
    exit 1
  }
  tail -1 "$OUT/cerbos-compile.txt" >&2
}

# cerbos_cmd HTTP_PORT GRPC_PORT on|off: sets CERBOS_CMD to the command
# line of one PDP with its decision log (audit, `file` backend) on or off;
# the log goes to target/perf-run/cerbos-decisions-HTTP_PORT.log.
cerbos_cmd() {
  local audit=false
  [ "$3" = on ] && audit=true
  CERBOS_CMD=(env CERBOS_POLICIES="$CERBOS_HOME/policies" "$CERBOS" server
    --config="$CERBOS_HOME/config.yaml" --log-level=error --debug-listen-addr="127.0.0.1:$(($2 + 100))"
    --set=server.httpListenAddr="127.0.0.1:$1" --set=server.grpcListenAddr="127.0.0.1:$2"
    --set=audit.enabled="$audit" --set=audit.file.path="$OUT/cerbos-decisions-$1.log")
}
