-- wrk script for benches/load.sh: POST a small chat completion with a bearer token.
-- WRK_DELAY_MS (optional) paces each connection (wrk's `delay`), which turns
-- wrk's closed loop into a fixed request rate of about connections × 1000 / delay.
-- At the end one JSON line with the exact latency percentiles (µs) is printed.
wrk.method = "POST"
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BERRY_BENCH_TOKEN") or "berry-bench-token")

local pace = tonumber(os.getenv("WRK_DELAY_MS") or "")
if pace then
  function delay() return pace end
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    'RESULT {"requests":%d,"seconds":%.3f,"rps":%.1f,"errors":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6), errors,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
