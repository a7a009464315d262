# Sourced by the benchmark scripts that serve many policies (bench.sh's scale
# rows, reload_bench.sh), with ROOT set to the repository root, and by those
# that stop sidecars they started.

# gen_policies DIR N: the shipped pack plus N generated attribute-based
# permits on the benchmark's action (each one has to be evaluated for it),
# 1,000 a file (each file stays under --max-policy-file-bytes).
gen_policies() {
  rm -rf "$1"; mkdir -p "$1"
  cp "$ROOT"/policies/*.cedar "$1/"
  awk -v n="$2" -v dir="$1" 'BEGIN {
    for (i = 0; i < n; i++) {
      f = sprintf("%s/50-generated-%03d.cedar", dir, int(i / 1000))
      printf "@id(\"generated-%d\")\n@description(\"Generated policy %d\")\npermit (\n  principal is User,\n  action == Action::\"view_account\",\n  resource is Account\n)\nwhen { principal.email == \"generated-%d@example.invalid\" };\n\n", i, i, i > f
    }
  }'
}

# stop PID: SIGTERM, up to 15 s to exit (graceful drain), then SIGKILL.
stop() {
  kill "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
  for _ in $(seq 1 150); do
    local state
    state=$(awk '/^State/ {print $2}' "/proc/$1/status" 2>/dev/null || true)
    { [ -z "$state" ] || [ "$state" = Z ]; } && break
    sleep 0.1
  done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
