#!/usr/bin/env python3
"""coldstart.py: N clients arrive at once at a gateway that has just started; latency by second.

Runs `wrk -t1 -cN -dS` with bench/lua/coldstart.lua, which records every answered request
(completion time since the first request went out, latency, status), then prints one JSON object:

  first_p99_ms     p99 of the requests that completed in the first second (0-1 s)
  steady_p99_ms    p99 of the requests that completed in the steady window (default 3-5 s)
  ratio            first_p99_ms / steady_p99_ms
  steady_rps       answers per second in the steady window (compare with wrk's rps on the same
                   path: the script's per-request work must not make the client the bottleneck)
  seconds          per second since the start: count, p50, p99, max (ms)
  statuses, unmatched (answers without the echoed request number), sent, wrk_errors

The gateway must pass the upstream's `X-Bench-Req` header through (both gateways in bench/run do).
Python 3 standard library only.

  coldstart.py --url http://127.0.0.1:PORT/proxy-h1/api/v2/users?page=1 -c 64 --seconds 6 \\
      --header 'Authorization: Bearer kw_...' [--steady 3:5] [--raw FILE]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "lua", "coldstart.lua")


def p(values, q):
    """Nearest-rank percentile of sorted values (None when empty)."""
    if not values:
        return None
    k = max(0, min(len(values) - 1, int(-(-q * len(values) // 100)) - 1))
    return values[k]


def ms(us):
    return None if us is None else round(us / 1000.0, 3)


def summarize(lines, steady_from, steady_to, duration_s):
    recs = []
    meta = {"sent": 0, "unmatched": 0, "wrk_errors": {}}
    for line in lines:
        if line.startswith("# sent"):
            parts = line.split()
            meta["sent"] += int(parts[2])
            meta["unmatched"] += int(parts[4])
            continue
        if line.startswith("# wrk"):
            parts = line.split()
            meta["wrk_requests"] = int(parts[3])
            errs = parts[parts.index("errors") + 1:]
            meta["wrk_errors"] = {errs[i]: int(errs[i + 1]) for i in range(0, len(errs) - 1, 2)}
            continue
        if not line.strip() or line.startswith("#"):
            continue
        done_us, lat_us, status = line.split()
        recs.append((float(done_us), float(lat_us), int(status)))
    statuses = {}
    for r in recs:
        statuses[str(r[2])] = statuses.get(str(r[2]), 0) + 1
    ok = [r for r in recs if 200 <= r[2] < 400]

    def window(a, b):
        return sorted(r[1] for r in ok if a * 1e6 <= r[0] < b * 1e6)

    first = window(0, 1)
    steady = window(steady_from, steady_to)
    seconds = []
    for s in range(int(duration_s) + 1):
        w = window(s, s + 1)
        if not w:
            continue
        seconds.append({"second": s, "count": len(w), "p50_ms": ms(p(w, 50)), "p99_ms": ms(p(w, 99)),
                        "max_ms": ms(w[-1])})
    first_p99, steady_p99 = p(first, 99), p(steady, 99)
    out = {
        "first_p99_ms": ms(first_p99), "first_p50_ms": ms(p(first, 50)), "first_max_ms": ms(first[-1] if first else None),
        "first_count": len(first),
        "steady_p99_ms": ms(steady_p99), "steady_p50_ms": ms(p(steady, 50)), "steady_count": len(steady),
        "steady_window_s": [steady_from, steady_to],
        "steady_rps": round(len(steady) / float(steady_to - steady_from), 1) if steady else None,
        "ratio": round(first_p99 / steady_p99, 3) if first_p99 and steady_p99 else None,
        "answered": len(recs), "ok": len(ok), "statuses": statuses, "seconds": seconds,
    }
    out.update(meta)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("-c", "--connections", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--steady", default="3:5", help="steady window, seconds FROM:TO since the start")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--raw", help="keep the per-request records here")
    ap.add_argument("--wrk", default="wrk")
    args = ap.parse_args()
    steady_from, steady_to = (float(x) for x in args.steady.split(":"))
    if steady_to > args.seconds:
        ap.error("the steady window must end within --seconds")

    raw = args.raw or tempfile.mkstemp(prefix="coldstart-", suffix=".txt")[1]
    cmd = [args.wrk, "-t1", "-c%d" % args.connections, "-d%ds" % args.seconds, "--timeout", "10s",
           "-s", SCRIPT]
    for h in args.header:
        cmd += ["-H", h]
    cmd.append(args.url)
    env = dict(os.environ, BENCH_COLD_OUT=raw)
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.seconds + 60)
    except subprocess.TimeoutExpired:
        sys.exit("coldstart: wrk did not finish")
    try:
        with open(raw, encoding="ascii") as f:
            lines = f.readlines()
    except OSError:
        sys.exit("coldstart: wrk wrote no records (%s)" % (res.stderr or res.stdout).strip()[-300:])
    finally:
        if not args.raw:
            try:
                os.unlink(raw)
            except OSError:
                pass
    out = summarize(lines, steady_from, steady_to, args.seconds)
    out["connections"] = args.connections
    out["duration_s"] = args.seconds
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
