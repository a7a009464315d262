# Sourced by every benchmark script that starts a sidecar: the policy
# reload counter is read before and after each measured run, and the run
# fails if it moved without an edit. (An idle sidecar that reloaded in a
# loop once made every number it measured a measurement of that loop.)

# reload_count PORT: the sum of partnergate_reloads_total (every result) on
# the sidecar listening on 127.0.0.1:PORT; 0 before the first reload.
reload_count() {
  curl -fsS "http://127.0.0.1:$1/metrics" | awk '/^partnergate_reloads_total/ { s += $NF } END { print s + 0 }'
}

# reloads_flat NAME PORT BEFORE: exit 1 when the counter is no longer BEFORE.
reloads_flat() {
  local now
  now=$(reload_count "$2")
  if [ "$now" != "$3" ]; then
    echo "FAIL: $1 (port $2): partnergate_reloads_total moved from $3 to $now during the run, with no edit; the numbers are not valid" >&2
    exit 1
  fi
  echo "reload counter ($1, port $2): $3 before, $now after: flat" >&2
}
