-- wrk script for scripts/perf.sh: replays a request file written by
-- `cargo run --example workload -- gen` (one request a line:
-- METHOD<TAB>PATH<TAB>BODY), in order, from line OFFSET, wrapping around.
--
--   wrk -t1 -c16 -d5s -s scripts/lib/replay.lua URL -- FILE TOKEN [OFFSET]
--
-- TOKEN goes as the bearer token on every non-POST request (the entity
-- writes). All requests are formatted once at init; request() only indexes.
-- done() prints one line: WRK rps=... p50_us=... p99_us=... non2xx=...
-- sockerr=... requests=... (exact numbers for the script to parse).
local reqs = {}
local n = 0
local i = 0

function init(args)
  local file, token, offset = args[1], args[2] or "", tonumber(args[3] or "0")
  local post = { ["Content-Type"] = "application/json" }
  local write = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }
  for line in io.lines(file) do
    local m, p, b = line:match("^(%u+)\t([^\t]+)\t(.*)$")
    if m then
      n = n + 1
      reqs[n] = wrk.format(m, p, (m == "POST") and post or write, b)
    end
  end
  if n == 0 then error("no requests in " .. file) end
  i = offset % n
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format("WRK rps=%.1f p50_us=%d p99_us=%d non2xx=%d sockerr=%d requests=%d\n",
    summary.requests / secs, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.requests))
end
