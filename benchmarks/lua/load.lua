-- One wrk script for every target. Arguments (after `--`):
--   style       "kv" (GET/PUT /v1/kv/KEY), "etcd" (POST /v3/kv/range|put, base64 JSON) or "fixed" (GET the URL's path)
--   keys_file   one key per line (base64 for etcd), replayed in order from a per-thread offset
--   read_share  fraction of requests that read, e.g. 0.99
--   value_file  the value to write (base64 for etcd)
-- done() prints one line "WRKJSON {...}" with counts and latency percentiles in microseconds.

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  style = args[1]
  if style == "fixed" then return end
  keys = {}
  for line in io.lines(args[2]) do keys[#keys + 1] = line end
  read_share = tonumber(args[3])
  local file = assert(io.open(args[4], "rb"))
  value = file:read("*a")
  file:close()
  position = (thread_index * 7919) % #keys + 1
  math.randomseed(1234 + thread_index)
  if style == "etcd" then
    put_suffix = '","value":"' .. value .. '"}'
  end
end

function request()
  if style == "fixed" then return wrk.format("GET") end
  local key = keys[position]
  position = position % #keys + 1
  local read = math.random() < read_share
  if style == "kv" then
    if read then return wrk.format("GET", "/v1/kv/" .. key) end
    return wrk.format("PUT", "/v1/kv/" .. key, nil, value)
  end
  if read then return wrk.format("POST", "/v3/kv/range", nil, '{"key":"' .. key .. '"}') end
  return wrk.format("POST", "/v3/kv/put", nil, '{"key":"' .. key .. put_suffix)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,"mean_us":%.1f,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
