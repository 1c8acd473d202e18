-- wrk script of the bench's http scenario (bench/scenarios/http.py): every request is a POST
-- of BENCH_BODY_BYTES bytes (default 100); at the end one line "BENCH-JSON {...}" with the
-- counts, errors and latency percentiles (microseconds), which the bench parses.
local size = tonumber(os.getenv("BENCH_BODY_BYTES") or "100")
wrk.method = "POST"
wrk.body = string.rep("x", size)
wrk.headers["Content-Type"] = "application/octet-stream"

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH-JSON {"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, ' ..
      '"read": %d, "write": %d, "status": %d, "timeout": %d}, "latency_us": {"mean": %.1f, ' ..
      '"p50": %d, "p90": %d, "p99": %d, "max": %d}}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
      e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max))
end
