#!/usr/bin/env python3
"""Stampede client for bench/run: N concurrent cold requests for one key, on N connections.

All N connections are opened first; then every request is written in one tight loop, so that all N
reach the gateway while the first upstream request is still in flight (the upstream answers after
100 ms). Prints one JSON line: statuses, latency percentiles of the N requests and wall time.
Standard library only; HTTP/1.1 responses with Content-Length or chunked bodies.
"""
import argparse
import asyncio
import json
import math
import sys
import time


async def read_response(reader):
    """Reads one HTTP/1.1 response; returns (status, headers dict lower-cased, body bytes)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # empty trailer section
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    else:
        body = await reader.read()
    return status, headers, body


async def one(reader, writer, start_evt, request, results):
    await start_evt.wait()
    t0 = time.monotonic()
    try:
        writer.write(request)
        await writer.drain()
        status, headers, _ = await read_response(reader)
        results.append({"status": status, "ms": (time.monotonic() - t0) * 1000.0,
                        "cache": headers.get("x-keyway-cache") or headers.get("x-cache-status")})
    except Exception as exc:  # report, never crash the benchmark
        results.append({"status": 0, "ms": (time.monotonic() - t0) * 1000.0, "error": type(exc).__name__})
    finally:
        writer.close()


def percentile(sorted_values, pct):
    if not sorted_values:
        return None
    # Nearest-rank percentile.
    index = min(len(sorted_values) - 1, max(0, math.ceil(pct / 100.0 * len(sorted_values)) - 1))
    return sorted_values[index]


async def main_async(args):
    headers = "".join(f"{h}\r\n" for h in args.header)
    request = (f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n{headers}\r\n").encode()

    conns = []
    connect_errors = 0
    # Open in batches: a burst of 1,000 SYNs at once would overflow the listen backlog of either
    # gateway and measure SYN retransmission (1 s), not the gateway.
    for batch_start in range(0, args.n, 100):
        batch = [asyncio.open_connection(args.host, args.port)
                 for _ in range(batch_start, min(args.n, batch_start + 100))]
        for res in await asyncio.gather(*batch, return_exceptions=True):
            if isinstance(res, Exception):
                connect_errors += 1
            else:
                conns.append(res)

    start_evt = asyncio.Event()
    results = []
    tasks = [asyncio.create_task(one(r, w, start_evt, request, results)) for r, w in conns]
    await asyncio.sleep(0.05)  # every task is now parked on the event
    t0 = time.monotonic()
    start_evt.set()
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.timeout)
    except asyncio.TimeoutError:
        pass
    wall_ms = (time.monotonic() - t0) * 1000.0

    statuses = {}
    caches = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        caches[str(r.get("cache"))] = caches.get(str(r.get("cache")), 0) + 1
    ok_ms = sorted(r["ms"] for r in results if 200 <= r["status"] < 300)
    out = {
        "sent": len(conns),
        "connect_errors": connect_errors,
        "completed": len(results),
        "ok": len(ok_ms),
        "statuses": statuses,
        "cache": caches,
        "wall_ms": round(wall_ms, 1),
        "rps": round(len(ok_ms) / (wall_ms / 1000.0), 1) if wall_ms > 0 else None,
        "p50_ms": round(percentile(ok_ms, 50), 3) if ok_ms else None,
        "p99_ms": round(percentile(ok_ms, 99), 3) if ok_ms else None,
    }
    print(json.dumps(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    if args.n <= 0 or not args.path.startswith("/"):
        print("stampede: -n must be positive and --path must start with /", file=sys.stderr)
        return 2
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
