-- wrk script for the cold-start scenario (hc), run by bench/tools/coldstart.py: one record per
-- answered request (completion time since the first request went out, latency, status), written
-- to BENCH_COLD_OUT at the end, so that the tool can take the p99 of the first second apart from
-- the steady state's (wrk's own summary has no time axis).
--
-- Each request carries its number in the query (`kwreq=N`) and the fake TLS upstream echoes it in
-- `X-Bench-Req` (bench/nginx/upstream.conf.in), through the gateway: that is how an answer finds
-- its request's start time (wrk's response() does not say which connection answered). Times come
-- from CLOCK_MONOTONIC through LuaJIT's ffi, in microseconds. Use with -t1 (one thread: one clock
-- origin).

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

-- Per thread (globals: done() reads them with thread:get).
sent = 0
t0 = nil
starts = {}
-- Flat records: done_us, latency_us, status, done_us, ...
recs = {}
nrecs = 0
unmatched = 0

-- The request is built once (wrk.format, with every -H header) around a marker, so that each
-- request costs two concatenations, not a rebuild of the header block.
local head, tail
function init(args)
  local sep = "?"
  if string.find(wrk.path, "?", 1, true) then sep = "&" end
  local marker = "KWREQMARKER"
  local req = wrk.format(nil, wrk.path .. sep .. "kwreq=" .. marker)
  local i, j = string.find(req, marker, 1, true)
  head, tail = string.sub(req, 1, i - 1), string.sub(req, j + 1)
end

function request()
  sent = sent + 1
  local t = now_us()
  if t0 == nil then t0 = t end
  starts[sent] = t
  return head .. sent .. tail
end

function response(status, headers, body)
  local t = now_us()
  local id = headers["X-Bench-Req"] or headers["x-bench-req"]
  if id == nil then
    for k, v in pairs(headers) do
      if string.lower(k) == "x-bench-req" then id = v break end
    end
  end
  local n = tonumber(id or "")
  local s = n and starts[n]
  if s == nil then
    unmatched = unmatched + 1
    return
  end
  starts[n] = nil
  recs[nrecs + 1] = t - t0
  recs[nrecs + 2] = t - s
  recs[nrecs + 3] = status
  nrecs = nrecs + 3
end

function done(summary, latency, requests)
  local path = os.getenv("BENCH_COLD_OUT")
  local f = assert(io.open(path, "w"))
  for _, thread in ipairs(threads) do
    local r = thread:get("recs")
    local n = thread:get("nrecs")
    f:write(string.format("# sent %d unmatched %d\n", thread:get("sent"), thread:get("unmatched")))
    for i = 1, n, 3 do
      f:write(string.format("%.0f %.0f %d\n", r[i], r[i + 1], r[i + 2]))
    end
  end
  local e = summary.errors
  f:write(string.format("# wrk requests %d duration_us %d errors connect %d read %d write %d status %d timeout %d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
  f:close()
end
