-- wrk script: POST /order with a JSON body.
--   wrk -t2 -c16 -d10s --latency -s scripts/wrk/order.lua http://127.0.0.1:8000/order
wrk.method = "POST"
wrk.body = '{"item":"burger","qty":1}'
wrk.headers["Content-Type"] = "application/json"

local statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, requests)
  io.write(string.format("p50=%.3fms p99=%.3fms rps=%.0f errors=%d\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests / (summary.duration / 1e6),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
