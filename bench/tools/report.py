#!/usr/bin/env python3
"""Report for bench/run: turns the raw results (JSON lines) into the table and latest.json.

Input lines (written by bench/run), each a JSON object:
  {"meta": {...}}                                          run facts (date, command, access log...)
  {"scenario": "b", "gateway": "keyway", "round": 1, "wrk": {...BENCH_RESULT...}, "cpu_s": 3.1,
   "sample": null or {"rss_max_kib": N, "established_max": {"PORT": N}}}   (HTTPS rows: sampled)
  {"scenario": "hc", "gateway": "nginx", "round": 1, "cold": {...coldstart.py...}, "cpu_s": ..., "sample": ...}
  {"scenario": "h1", "gateway": "keyway", "metrics": {"upstream": "proxy-h1", "pool_peak": N, ...}}
  {"scenario": "d", "gateway": "nginx", "stampede": {...}, "upstream_requests": 1}
  {"scenario": "e", "gateway": "keyway", "validate": {"small": N, "nested30": N, ...}}
  {"scenario": "f", "gateway": "keyway", "round": 2, "rss_kib": N, "wrk": {...}}
  {"scenario": "g", "gateway": "keyway", "startup": {...startup.py output...}}
  {"scenario": "a", "gateway": "keyway", "note": "cache not implemented"}
Per gateway and scenario, the rounds are reduced to one: the better (higher requests/s) of two,
the median (by requests/s) of three or more; for hc, the median round by its first-second/steady
ratio. Targets as bench/README.md states them, (b)'s >= 0.9x included. Two rows are derived from the HTTPS scenarios: hm (keywayd's RSS through all of
them) and hp (upstream connections per upstream against keyway's max_connections).
"""
import argparse
import json
import sys

NAMES = {
    "h1": "h1_https_forward_h1",
    "h2": "h2_https_forward_h2",
    "hs": "hs_https_slow_h2_c1000",
    "hs1": "hs1_https_slow_h1_c1000",
    "hc": "hc_https_cold_start",
    "hm": "hm_https_keywayd_rss",
    "hp": "hp_https_upstream_connections",
    "a": "a_cache_hit",
    "b": "b_forward_fast",
    "c": "c_slow_c1000",
    "d": "d_stampede",
    "e": "e_validation",
    "f": "f_memory",
    "g": "g_startup",
}
TITLES = {
    "h1": "(h1) HTTPS fwd, h1 upstream",
    "h2": "(h2) HTTPS fwd, h2 upstream",
    "hs": "(hs) HTTPS slow h2, c1000",
    "hs1": "(hs1) HTTPS slow h1, c1000",
    "hc": "(hc) HTTPS cold start, c64",
    "hm": "(hm) keywayd RSS, HTTPS",
    "hp": "(hp) upstream conns, HTTPS",
    "a": "(a) cache hit, Unify list",
    "b": "(b) forward, Proxy, fast",
    "c": "(c) slow upstream, c1000",
    "d": "(d) stampede, 1000 cold",
    "e": "(e) BOSA validation",
    "f": "(f) memory, 1M req/10k keys",
    "g": "(g) start-up to ready",
}
TARGETS = {
    "h1": ">=1.0x rps, p99<=1.5x",
    "h2": ">=1.1x rps, p99<=1.5x",
    "hs": ">=0.95x rps, p99<=120ms",
    "hs1": ">=0.95x rps, p99<=120ms",
    "hc": "kw 1st-s p99<=3x steady",
    "hm": "max RSS<=64MiB",
    "hp": "kw per upstream<=max_conns",
    "a": ">=1.0x rps, p99<=1.5x",
    "b": "i6 >=1.0x,p99<=1.5x; i2 >=0.8x,p99<=2x; https >=0.9x",
    "c": ">=0.95x rps, p99<=120ms",
    "d": "exactly 1 upstream req",
    "e": ">=200k/s small body",
    "f": "RSS<=64MiB, r2->r3 <2%",
    "g": "ready <=150ms",
}
HTTPS = ["h1", "h2", "hs", "hs1", "hc", "hm", "hp"]
PLAIN = ["a", "b", "c", "d", "e", "f", "g"]
ORDER = HTTPS + PLAIN
WRK_SCENARIOS = ("h1", "h2", "hs", "hs1", "a", "b", "c")
# The upstream each HTTPS scenario's requests go to (keyway's name for it).
UPSTREAM = {"h1": "proxy-h1", "h2": "proxy-h2", "hs": "slow-h2", "hs1": "slow-h1", "hc": "proxy-h1"}


def pick(rounds):
    """One figure set out of the rounds: better of two, median of three or more (by rps)."""
    rounds = [r for r in rounds if r.get("rps") is not None]
    if not rounds:
        return None
    ordered = sorted(rounds, key=lambda r: r["rps"])
    if len(ordered) <= 2:
        return ordered[-1]
    return ordered[len(ordered) // 2]


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def fmt(value, unit="", digits=1):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def le(value, limit):
    return value is not None and value <= limit


def ge(value, limit):
    return value is not None and value >= limit


def served(w):
    """A wrk result with no successful answer has no meaningful latency."""
    ok = w["requests"] - w.get("errors", {}).get("status", 0)
    if ok > 0:
        return w
    return dict(w, p50_ms=None, p99_ms=None)


def verdict(ok):
    if ok is None:
        return "n/a"
    return "PASS" if ok else "FAIL"


def wrk_errors(w):
    e = w.get("errors", {})
    parts = [f"{v} {k}" for k, v in e.items() if v]
    return ", ".join(parts)


def summarize(lines):
    meta = {}
    by = {}
    for rec in lines:
        if "meta" in rec:
            meta.update(rec["meta"])
            continue
        key = (rec["scenario"], rec["gateway"])
        by.setdefault(key, []).append(rec)

    out = {}
    for s in ORDER:
        if s in ("hm", "hp"):
            continue
        recs_k = by.get((s, "keyway"), [])
        recs_n = by.get((s, "nginx"), [])
        if not recs_k and not recs_n:
            continue
        entry = {"keyway": None, "nginx": None, "ratio": {"rps": None, "p99": None},
                 "target": TARGETS[s], "result": "n/a", "notes": []}
        for gw, recs in (("keyway", recs_k), ("nginx", recs_n)):
            for r in recs:
                if r.get("note"):
                    entry["notes"].append(f"{gw}: {r['note']}")

        if s in WRK_SCENARIOS:
            for gw, recs in (("keyway", recs_k), ("nginx", recs_n)):
                # CPU per request and the sampled figures ride along with each run.
                runs = [dict(served(r["wrk"]), cpu_s=r.get("cpu_s"), sample=r.get("sample"))
                        for r in recs if r.get("wrk")]
                best = pick(runs)
                if best:
                    entry[gw] = {"rps": best["rps"], "p50_ms": best["p50_ms"], "p99_ms": best["p99_ms"],
                                 "cpu_us_per_request": cpu_per_request(best),
                                 "rounds": [{"rps": r["rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                                             "errors": r.get("errors"), "cpu_us_per_request": cpu_per_request(r),
                                             "sample": r.get("sample")} for r in runs]}
                    for r in runs:
                        if wrk_errors(r):
                            entry["notes"].append(f"{gw}: wrk errors in a round: {wrk_errors(r)}")
            k, n = entry["keyway"], entry["nginx"]
            if k and n:
                entry["ratio"] = {"rps": ratio(k["rps"], n["rps"]), "p99": ratio(k["p99_ms"], n["p99_ms"])}
                # Shown, not judged: each keyway round against the nginx round run right after it.
                # On a machine whose pace drifts, the spread of these says how much one run's
                # ratio of medians (the judged figure) can be trusted.
                pairs = [ratio(a["rps"], b["rps"]) for a, b in zip(k["rounds"], n["rounds"])]
                entry["ratio"]["rps_per_round"] = pairs
                if len(pairs) > 1 and None not in pairs:
                    entry["notes"].append("rps keyway/nginx round by round (each keyway run, then nginx's): "
                                          + ", ".join(f"{x:.2f}x" for x in pairs))
            rr, pr = entry["ratio"]["rps"], entry["ratio"]["p99"]
            if s == "a" and rr is not None:
                entry["result"] = verdict(ge(rr, 1.0) and le(pr, 1.5))
                if any("cache not implemented" in n for n in entry["notes"]):
                    entry["result"] += " (cache not implemented)"
            elif s == "b" and rr is not None:
                entry["result"] = (f"i6 {verdict(ge(rr, 1.0) and le(pr, 1.5))}; "
                                   f"i2 {verdict(ge(rr, 0.8) and le(pr, 2.0))}; "
                                   f"https {verdict(ge(rr, 0.9))}")
            elif s in ("c", "hs", "hs1") and rr is not None:
                entry["result"] = verdict(ge(rr, 0.95) and le(k["p99_ms"], 120.0))
            elif s == "h1" and rr is not None:
                entry["result"] = verdict(ge(rr, 1.0) and le(pr, 1.5))
            elif s == "h2" and rr is not None:
                entry["result"] = verdict(ge(rr, 1.1) and le(pr, 1.5))
            cpu_k = k and k.get("cpu_us_per_request")
            cpu_n = n and n.get("cpu_us_per_request")
            if cpu_k or cpu_n:
                entry["notes"].append("CPU per request (the median run): keyway %s us, nginx %s us%s" % (
                    fmt(cpu_k), fmt(cpu_n),
                    f" (keyway/nginx {cpu_k / cpu_n:.2f}x)" if cpu_k and cpu_n else ""))

        elif s == "hc":
            for gw, recs in (("keyway", recs_k), ("nginx", recs_n)):
                runs = [dict(r["cold"], round=r.get("round"), cpu_s=r.get("cpu_s"), sample=r.get("sample"))
                        for r in recs if r.get("cold")]
                rated = sorted([r for r in runs if r.get("ratio") is not None], key=lambda r: r["ratio"])
                if not rated:
                    if runs:
                        entry["notes"].append(f"{gw}: no round with answers in both windows")
                    continue
                mid = rated[len(rated) // 2]
                entry[gw] = {"rps": mid.get("steady_rps"), "p50_ms": None, "p99_ms": mid.get("steady_p99_ms"),
                             "first_p99_ms": mid.get("first_p99_ms"), "steady_p99_ms": mid.get("steady_p99_ms"),
                             "cold_ratio": mid.get("ratio"),
                             "rounds": [{k: r.get(k) for k in ("round", "first_p99_ms", "first_count", "steady_p99_ms",
                                                               "steady_rps", "ratio", "statuses", "unmatched", "seconds",
                                                               "wrk_errors", "sample")} for r in runs]}
                for r in runs:
                    per_s = ", ".join(f"{x['second']}s {x['count']}/{x['p99_ms']:.1f}" for x in r.get("seconds", []))
                    entry["notes"].append(
                        f"{gw} round {r.get('round')}: first second {r.get('first_count')} answers, p99 "
                        f"{fmt(r.get('first_p99_ms'), 'ms', 2)}; seconds 3-5 p99 {fmt(r.get('steady_p99_ms'), 'ms', 2)}, "
                        f"{fmt(r.get('steady_rps'), ' req/s', 0)}; ratio {fmt(r.get('ratio'), 'x', 2)}; "
                        f"per second answers/p99 ms: {per_s}")
                    bad = {k: v for k, v in (r.get("statuses") or {}).items() if not k.startswith("2")}
                    errs = {k: v for k, v in (r.get("wrk_errors") or {}).items() if v}
                    if bad or errs or r.get("unmatched"):
                        entry["notes"].append(f"{gw} round {r.get('round')}: non-2xx {bad}, wrk errors {errs}, "
                                              f"answers without the request number {r.get('unmatched')}")
            k, n = entry["keyway"], entry["nginx"]
            if k and n:
                entry["ratio"] = {"rps": ratio(k["rps"], n["rps"]), "p99": ratio(k["first_p99_ms"], n["first_p99_ms"]),
                                  "cold": ratio(k["cold_ratio"], n["cold_ratio"])}
            if k:
                entry["result"] = verdict(le(k["cold_ratio"], 3.0))
            # The client must not be the bottleneck: its steady rate against wrk's on h1's path.
            for gw in ("keyway", "nginx"):
                h1 = (out.get(NAMES["h1"]) or {}).get(gw)
                if entry[gw] and h1 and h1.get("rps") and entry[gw].get("rps"):
                    entry["notes"].append(
                        f"{gw}: the cold-start client's steady rate {entry[gw]['rps']:.0f} req/s is "
                        f"{entry[gw]['rps'] / h1['rps']:.2f}x wrk's on h1 ({h1['rps']:.0f} req/s, same upstream)")

        elif s == "d":
            for gw, recs in (("keyway", recs_k), ("nginx", recs_n)):
                runs = [r for r in recs if r.get("stampede")]
                if runs:
                    r = runs[-1]
                    st = r["stampede"]
                    entry[gw] = {"rps": st.get("rps"), "p50_ms": st.get("p50_ms"), "p99_ms": st.get("p99_ms"),
                                 "upstream_requests": r.get("upstream_requests"), "sent": st.get("sent"),
                                 "ok": st.get("ok"), "statuses": st.get("statuses"),
                                 "cache": st.get("cache"), "wall_ms": st.get("wall_ms")}
                    entry["notes"].append(
                        f"{gw}: upstream received {r.get('upstream_requests')} request(s); "
                        f"{st.get('ok')}/{st.get('sent')} answered 2xx; statuses {st.get('statuses')}; "
                        f"cache headers {st.get('cache')}; all done in {st.get('wall_ms')} ms")
            k, n = entry["keyway"], entry["nginx"]
            if k and n:
                entry["ratio"] = {"rps": ratio(k["rps"], n["rps"]), "p99": ratio(k["p99_ms"], n["p99_ms"])}
            if k:
                entry["result"] = verdict(k["upstream_requests"] == 1 and k["ok"] == k["sent"])

        elif s == "e":
            runs = [r for r in recs_k if r.get("validate")]
            if runs:
                v = runs[-1]["validate"]
                # The small body is list_pull_requests-sized; the figure judged is validation alone
                # (validate_bench also reports JSON parse + validation, shown in the notes).
                small = next((v[k] for k in ("list_pull_requests.validate", "small.validate", "small")
                              if k in v), None)
                entry["keyway"] = {"rps": small, "p50_ms": None, "p99_ms": None, "validations_per_s": v}
                entry["notes"].append("keyway: per second, one thread: " +
                                      ", ".join(f"{k} {int(x):,}" for k, x in sorted(v.items())))
                if small is not None:
                    entry["result"] = verdict(small >= 200000)

        elif s == "f":
            for gw, recs in (("keyway", recs_k), ("nginx", recs_n)):
                runs = sorted([r for r in recs if r.get("rss_kib") is not None], key=lambda r: r["round"])
                if not runs:
                    continue
                rss = [round(r["rss_kib"] / 1024.0, 1) for r in runs]
                last = served(runs[-1]["wrk"]) if runs[-1].get("wrk") else {}
                ok_rounds = [(r.get("wrk") or {}).get("requests", 0) - (r.get("wrk") or {}).get("errors", {}).get("status", 0)
                             for r in runs]
                growth = None
                if len(runs) >= 3 and runs[1]["rss_kib"]:
                    growth = round((runs[2]["rss_kib"] - runs[1]["rss_kib"]) * 100.0 / runs[1]["rss_kib"], 2)
                entry[gw] = {"rps": last.get("rps"), "p50_ms": last.get("p50_ms"), "p99_ms": last.get("p99_ms"),
                             "rss_mib": rss[-1], "rss_mib_rounds": rss, "growth_r2_r3_pct": growth,
                             "requests_per_round": [(r.get("wrk") or {}).get("requests") for r in runs],
                             "ok_per_round": ok_rounds}
                splits = [r.get("rss_split") for r in runs]
                if any(splits):
                    entry[gw]["rss_split_mib_rounds"] = [
                        {k.replace("_kib", "_mib"): round(v / 1024.0, 1) for k, v in sp.items()} if sp else None
                        for sp in splits]
                    entry["notes"].append(f"{gw}: RSS split per round (MiB, anon/file/shmem): " + "; ".join(
                        f"{sp['anon_kib'] / 1024:.1f}/{sp['file_kib'] / 1024:.1f}/{sp['shmem_kib'] / 1024:.1f}"
                        if sp else "n/a" for sp in splits))
                    if all(sp and sp.get("cache_file_kib") for sp in splits):
                        # Part of the file-backed RSS: the cache's LMDB pages mapped, against the
                        # file's size, which bounds them.
                        entry["notes"].append(f"{gw}: cache file pages mapped per round (MiB, of the file's size): "
                                              + "; ".join(f"{sp['cache_map_kib'] / 1024:.1f} of "
                                                          f"{sp['cache_file_kib'] / 1024:.1f}" for sp in splits))
                entry["notes"].append(f"{gw}: RSS after each round {rss} MiB"
                                      + (f", growth round 2->3 {growth}%" if growth is not None else "")
                                      + f"; requests per round {entry[gw]['requests_per_round']}")
                for r in runs:
                    if r.get("wrk") and wrk_errors(r["wrk"]):
                        entry["notes"].append(f"{gw}: wrk errors in round {r['round']}: {wrk_errors(r['wrk'])}")
            k, n = entry["keyway"], entry["nginx"]
            if k and n:
                entry["ratio"] = {"rps": ratio(k["rps"], n["rps"]), "p99": ratio(k["p99_ms"], n["p99_ms"]),
                                  "rss": ratio(k["rss_mib"], n["rss_mib"])}
            if k and k["growth_r2_r3_pct"] is not None and min(k["ok_per_round"]) > 0:
                entry["result"] = verdict(max(k["rss_mib_rounds"]) <= 64.0 and k["growth_r2_r3_pct"] < 2.0)
                wanted = meta.get("f_requests_per_round")
                done = min(x or 0 for x in k["requests_per_round"])
                if wanted and done < wanted:
                    entry["result"] += f" (rounds cut at {done} of {wanted} requests)"
            elif k:
                entry["result"] = "n/a (rounds without answers)"

        elif s == "g":
            for gw, recs in (("keyway", recs_k), ("nginx", recs_n)):
                runs = [r for r in recs if r.get("startup")]
                if runs:
                    st = runs[-1]["startup"]
                    entry[gw] = {"rps": None, "p50_ms": None, "p99_ms": None, "ready_ms": st.get("median_ms"),
                                 "ready_ms_runs": [x.get("ms") for x in st.get("runs", [])],
                                 "via": sorted({x.get("via") for x in st.get("runs", []) if x.get("via")}),
                                 "failed": st.get("failed")}
                    failed = [x for x in st.get("runs", []) if x.get("ms") is None]
                    if failed:
                        entry["notes"].append(f"{gw}: {len(failed)} start(s) failed: {failed[0]}")
            k, n = entry["keyway"], entry["nginx"]
            if k and n:
                entry["ratio"] = {"rps": None, "p99": None, "ready": ratio(k["ready_ms"], n["ready_ms"])}
            if k and k["ready_ms"] is not None:
                entry["result"] = verdict(k["ready_ms"] <= 150.0)
        out[NAMES[s]] = entry
    https_rows(meta, by, out)
    return meta, out


def cpu_per_request(run):
    if run.get("cpu_s") is None or not run.get("requests"):
        return None
    return round(run["cpu_s"] * 1e6 / run["requests"], 2)


def https_rows(meta, by, out):
    """hm: keywayd's RSS through every HTTPS scenario (max of the samples); hp: connections to each
    TLS upstream: keyway's pool peak (its own gauge) and what the sampler saw, nginx's sampled."""
    ran = [s for s in HTTPS if by.get((s, "keyway")) or by.get((s, "nginx"))]
    if not ran:
        return
    rss = {"keyway": {}, "nginx": {}}
    conns = {"keyway": {}, "nginx": {}}
    for s in ran:
        for gw in ("keyway", "nginx"):
            for r in by.get((s, gw), []):
                sample = r.get("sample")
                if not sample:
                    continue
                rss[gw][s] = max(rss[gw].get(s, 0), sample.get("rss_max_kib", 0))
                for port, n in (sample.get("established_max") or {}).items():
                    conns[gw][s] = max(conns[gw].get(s, 0), n)
    peaks = {}
    counters = {}
    for s in ran:
        for r in by.get((s, "keyway"), []):
            m = r.get("metrics")
            if m:
                if m.get("pool_peak") is not None:
                    peaks[s] = max(peaks.get(s, 0), int(m["pool_peak"]))
                counters.setdefault(s, []).append(m)
    notes = []
    for s in ran:
        if s in rss["keyway"] or s in rss["nginx"]:
            notes.append(f"{s}: max RSS keyway {fmt(rss['keyway'].get(s, 0) / 1024.0, ' MiB')}, "
                         f"nginx (master + workers) {fmt(rss['nginx'].get(s, 0) / 1024.0, ' MiB')}")
    k_max = max(rss["keyway"].values()) / 1024.0 if rss["keyway"] else None
    n_max = max(rss["nginx"].values()) / 1024.0 if rss["nginx"] else None
    out[NAMES["hm"]] = {
        "keyway": {"rps": None, "p50_ms": None, "p99_ms": None, "rss_mib": round(k_max, 1) if k_max else None,
                   "per_scenario_mib": {s: round(v / 1024.0, 1) for s, v in rss["keyway"].items()}},
        "nginx": {"rps": None, "p50_ms": None, "p99_ms": None, "rss_mib": round(n_max, 1) if n_max else None,
                  "per_scenario_mib": {s: round(v / 1024.0, 1) for s, v in rss["nginx"].items()}} if n_max else None,
        "ratio": {"rps": None, "p99": None, "rss": ratio(k_max, n_max)},
        "target": TARGETS["hm"], "result": verdict(le(k_max, 64.0)) if k_max else "n/a", "notes": notes}

    limit = meta.get("kw_max_connections")
    notes = []
    for s in ran:
        parts = []
        if s in peaks:
            parts.append(f"keyway pool peak {int(peaks[s])}")
        if s in conns["keyway"]:
            parts.append(f"keyway sampled {conns['keyway'][s]}")
        if s in conns["nginx"]:
            parts.append(f"nginx sampled {conns['nginx'][s]}")
        for m in counters.get(s, []):
            parts.append(f"keyway after{' round %d' % m['round'] if m.get('round') else ''}: "
                         f"new {fmt(m.get('connections_new'), '', 0)}, reused {fmt(m.get('connections_reused'), '', 0)}, "
                         f"open {fmt(m.get('pool_open'), '', 0)}")
        if parts:
            notes.append(f"{s} (upstream {UPSTREAM[s]}): " + "; ".join(parts))
    k_peak = max(list(peaks.values()) + list(conns["keyway"].values())) if (peaks or conns["keyway"]) else None
    n_peak = max(conns["nginx"].values()) if conns["nginx"] else None
    notes.insert(0, f"keyway's max_connections per upstream: {limit}; counted per upstream, "
                    "the row shows the highest of the HTTPS upstreams (pool peak gauge, or sampled ESTABLISHED)")
    out[NAMES["hp"]] = {
        "keyway": {"rps": None, "p50_ms": None, "p99_ms": None, "connections": k_peak,
                   "pool_peak": peaks, "sampled": conns["keyway"]},
        "nginx": {"rps": None, "p50_ms": None, "p99_ms": None, "connections": n_peak, "sampled": conns["nginx"]}
        if n_peak is not None else None,
        "ratio": {"rps": None, "p99": None}, "target": TARGETS["hp"],
        "result": verdict(k_peak <= limit) if (k_peak is not None and limit) else "n/a", "notes": notes}


def row_cells(s, entry, gw):
    e = entry[gw]
    if not e:
        return ["n/a", "", ""]
    if s == "hc":
        return [fmt(e.get("first_p99_ms"), "ms", 2), fmt(e.get("steady_p99_ms"), "ms", 2),
                fmt(e.get("cold_ratio"), "x", 2)]
    if s == "hm":
        return [fmt(e.get("rss_mib"), " MiB"), "", ""]
    if s == "hp":
        return [fmt(e.get("connections")), "", ""]
    if s == "e":
        return [fmt(e.get("rps"), "/s", 0), "", ""]
    if s == "f":
        return [fmt(e.get("rss_mib"), " MiB"), "", ""]
    if s == "g":
        return [fmt(e.get("ready_ms"), " ms"), "", ""]
    return [fmt(e.get("rps"), "", 0), fmt(e.get("p50_ms"), "ms", 2), fmt(e.get("p99_ms"), "ms", 2)]


def render(meta, out):
    header = ["scenario", "kw rps", "kw p50", "kw p99", "ng rps", "ng p50", "ng p99",
              "rps k/n", "p99 k/n", "target", "result"]
    rows = []
    shown = [s for s in ORDER if NAMES[s] in out]
    first_plain = next((x for x in shown if x in PLAIN), None)
    for s in shown:
        if s == first_plain and any(x in HTTPS for x in shown):
            rows.append(["plain http (secondary)"] + [""] * (len(header) - 1))
        name = NAMES[s]
        entry = out[name]
        ratios = entry["ratio"]
        r1 = ratios.get("rps")
        r2 = ratios.get("p99")
        if s in ("f", "hm"):
            r1 = ratios.get("rss")
        if s == "hc":
            r1 = ratios.get("cold")
        if s == "g":
            r1 = ratios.get("ready")
        rows.append([TITLES[s]] + row_cells(s, entry, "keyway") + row_cells(s, entry, "nginx")
                    + [fmt(r1, "x", 2), fmt(r2, "x", 2), TARGETS[s], entry["result"]])
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    sep = "-+-".join("-" * w for w in widths)
    lines.append(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines.append(sep)
    for r in rows:
        lines.append(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    lines.append("")
    if any(s in HTTPS for s in shown):
        lines.append("HTTPS rows: TLS upstreams (h1/hs1/hc: HTTP/1.1 only; h2/hs: offering HTTP/2). (hc) columns: "
                     "p99 of the requests done in the first second | p99 of seconds 3-5 | their ratio; "
                     "rps k/n: of the ratios, p99 k/n: of the first-second p99s. (hm): max RSS through the HTTPS "
                     "scenarios. (hp): most upstream connections to one TLS upstream.")
    lines.append("(f) columns: RSS after the last round (keyway: keywayd; nginx: master + workers); "
                 "ratio k/n of RSS. (g) columns: median exec->ready; ratio k/n of start-up time.")
    for s in ORDER:
        name = NAMES[s]
        if name in out and out[name]["notes"]:
            for n in out[name]["notes"]:
                lines.append(f"  {TITLES[s]}: {n}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw", help="raw results, JSON lines")
    parser.add_argument("--json", help="write latest.json here")
    args = parser.parse_args()
    lines = []
    with open(args.raw, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError as exc:
                print(f"report: {args.raw}:{n}: skipped, not JSON ({exc})", file=sys.stderr)
    meta, out = summarize(lines)
    print(render(meta, out))
    if args.json:
        doc = dict(out)
        doc["_meta"] = meta
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
