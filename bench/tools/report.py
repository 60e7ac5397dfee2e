#!/usr/bin/env python3
"""Report for bench/run: turns the raw results (JSON lines) into the table and latest.json.

Input lines (written by bench/run), each a JSON object:
  {"meta": {...}}                                          run facts (date, command, access log...)
  {"scenario": "b", "gateway": "keyway", "round": 1, "wrk": {...BENCH_RESULT...}}
  {"scenario": "d", "gateway": "nginx", "stampede": {...}, "upstream_requests": 1}
  {"scenario": "e", "gateway": "keyway", "validate": {"small": N, "nested30": N, ...}}
  {"scenario": "f", "gateway": "keyway", "round": 2, "rss_kib": N, "wrk": {...}}
  {"scenario": "g", "gateway": "keyway", "startup": {...startup.py output...}}
  {"scenario": "a", "gateway": "keyway", "note": "cache not implemented"}
Per gateway and scenario, the rounds are reduced to one: the better (higher requests/s) of two,
the median (by requests/s) of three or more. Targets as bench/README.md states them.
"""
import argparse
import json
import sys

NAMES = {
    "a": "a_cache_hit",
    "b": "b_forward_fast",
    "c": "c_slow_c1000",
    "d": "d_stampede",
    "e": "e_validation",
    "f": "f_memory",
    "g": "g_startup",
}
TITLES = {
    "a": "(a) cache hit, Unify list",
    "b": "(b) forward, Proxy, fast",
    "c": "(c) slow upstream, c1000",
    "d": "(d) stampede, 1000 cold",
    "e": "(e) BOSA validation",
    "f": "(f) memory, 1M req/10k keys",
    "g": "(g) start-up to ready",
}
TARGETS = {
    "a": ">=1.0x rps, p99<=1.5x",
    "b": "i6 >=1.0x,p99<=1.5x; i2 >=0.8x,p99<=2x",
    "c": ">=0.95x rps, p99<=120ms",
    "d": "exactly 1 upstream req",
    "e": ">=200k/s small body",
    "f": "RSS<=64MiB, r2->r3 <2%",
    "g": "ready <=150ms",
}


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
    for s in "abcdefg":
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

        if s in "abc":
            for gw, recs in (("keyway", recs_k), ("nginx", recs_n)):
                runs = [served(r["wrk"]) for r in recs if r.get("wrk")]
                best = pick(runs)
                if best:
                    entry[gw] = {"rps": best["rps"], "p50_ms": best["p50_ms"], "p99_ms": best["p99_ms"],
                                 "rounds": [{"rps": r["rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                                             "errors": r.get("errors")} for r in runs]}
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
                                   f"i2 {verdict(ge(rr, 0.8) and le(pr, 2.0))}")
            elif s == "c" and rr is not None:
                entry["result"] = verdict(ge(rr, 0.95) and le(k["p99_ms"], 120.0))

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
    return meta, out


def row_cells(s, entry, gw):
    e = entry[gw]
    if not e:
        return ["n/a", "", ""]
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
    for s in "abcdefg":
        name = NAMES[s]
        if name not in out:
            continue
        entry = out[name]
        ratios = entry["ratio"]
        r1 = ratios.get("rps")
        r2 = ratios.get("p99")
        if s == "f":
            r1 = ratios.get("rss")
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
    lines.append("(f) columns: RSS after the last round (keyway: keywayd; nginx: master + workers); "
                 "ratio k/n of RSS. (g) columns: median exec->ready; ratio k/n of start-up time.")
    for s in "abcdefg":
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
