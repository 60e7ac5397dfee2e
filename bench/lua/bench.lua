-- wrk script for bench/run: prints one machine-readable summary line; optionally cycles paths.
--
-- Without BENCH_KEYS the request stays static (wrk builds it once from the URL and -H options, no
-- Lua runs per request), so the script costs nothing on the measured path.
-- With BENCH_KEYS=N the path cycles through N distinct keys: BENCH_PATH .. (i % N). With
-- BENCH_STOP_AFTER=M the run stops after M responses: the thread stops and wrk gets SIGINT
-- (WRK_SELF_PID, set by bench/run through `exec`), which makes wrk print its results at once
-- (the reported duration then includes up to ~0.2 s of signalling delay).
-- With BENCH_DELAY_MS=D every connection waits D ms after each response before its next request:
-- a paced load of about connections * 1000 / (D + latency) requests/s (bench/fleet).

local keys = tonumber(os.getenv("BENCH_KEYS") or "")
local stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "") or 0
local self_pid = os.getenv("WRK_SELF_PID")
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "") or 0

if delay_ms > 0 then
  delay = function()
    return delay_ms
  end
end

if keys and keys > 0 then
  local prefix = os.getenv("BENCH_PATH") or "/?k="
  local counter = 0
  request = function()
    counter = counter + 1
    return wrk.format(nil, prefix .. (counter % keys))
  end
end

if stop_after > 0 then
  local got = 0
  local signalled = false
  response = function(status, headers, body)
    got = got + 1
    if got >= stop_after and not signalled then
      signalled = true
      wrk.thread:stop()
      -- wrk's SIGINT handler only cuts its main thread's sleep when the signal reaches that
      -- thread, i.e. once this worker thread has left its loop: so signal a little later, and
      -- again until wrk has gone.
      if self_pid then
        os.execute("(for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.1; kill -INT " .. self_pid ..
                   " 2>/dev/null || exit 0; done) >/dev/null 2>&1 &")
      end
    end
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,' ..
    '"p99_ms":%.3f,"max_ms":%.3f,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d}}\n',
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout))
end
