#!/usr/bin/env bash
# Scenario (f) on its own, for memory work: keywayd (optionally under a wrapper such as heaptrack)
# against a fast fake upstream, N rounds of wrk cycling distinct cacheable keys, RSS after each.
#
#   bench/tools/mem_probe.sh                      # build-g, 3 rounds of 300,000 requests, 10,000 keys
#   MEM_PROBE_WRAP="heaptrack -o /tmp/kw.heap" MEM_PROBE_BUILD=build-mem bench/tools/mem_probe.sh
#   MALLOC_ARENA_MAX=2 bench/tools/mem_probe.sh   # any environment is passed to keywayd
#
# Environment: MEM_PROBE_BUILD (build dir, default build-g), MEM_PROBE_ROUNDS (3),
# MEM_PROBE_REQUESTS (300000 per round), MEM_PROBE_KEYS (10000), MEM_PROBE_CAP (seconds per round,
# 120), MEM_PROBE_WRAP (command prefix for keywayd), MEM_PROBE_KEEP=1 (keep the work dir),
# MEM_PROBE_GAP (idle seconds between rounds, 0), MEM_PROBE_TRIM=1 (after the rounds, call
# malloc_trim(0) in keywayd through gdb and report RSS again), MEM_PROBE_SMAPS=1 (resident KiB per mapping at the end),
# MEM_PROBE_SETTLE (seconds to wait after the last round, then report RSS again; default 0).
# Needs wrk and nginx (bench/run installs them). Prints one line per round:
#   round N: requests R, rss_kib X, anon_kib A, file_kib F, fds D (open descriptors: sockets)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${MEM_PROBE_BUILD:-build-g}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
ROUNDS=${MEM_PROBE_ROUNDS:-3}
REQUESTS=${MEM_PROBE_REQUESTS:-300000}
KEYS=${MEM_PROBE_KEYS:-10000}
CAP=${MEM_PROBE_CAP:-120}
SETTLE=${MEM_PROBE_SETTLE:-0}
KEYWAYD="$BUILD/daemon/keywayd"
KEYWAYCTL="$BUILD/daemon/keywayctl"
[ -x "$KEYWAYD" ] && [ -x "$KEYWAYCTL" ] || { echo "mem_probe: no keywayd/keywayctl in $BUILD/daemon" >&2; exit 1; }

# shellcheck source=bench/tools/probe_lib.sh
. "$ROOT/bench/tools/probe_lib.sh"
probe_init memprobe "${MEM_PROBE_KEEP:-}"
probe_start_upstream '{"data":[{"id":"ch_01","name":"general","is_private":false},{"id":"ch_02","name":"random","is_private":false}],"meta":{"next":null}}'
# shellcheck disable=SC2086  # MEM_PROBE_WRAP is a command prefix, split on purpose
probe_start_keywayd bundleup-unify ${MEM_PROBE_WRAP:-}
echo "mem_probe: keywayd pid $KW_PID at $ADDR, upstream 127.0.0.1:$UP_PORT, work $WORK" >&2

rss() { awk '/^VmRSS:/ {r=$2} /^RssAnon:/ {a=$2} /^RssFile:/ {f=$2}
             END {printf "rss_kib %d, anon_kib %d, file_kib %d", r, a, f}' "/proc/$KW_PID/status"
       printf ', fds %d' "$(ls "/proc/$KW_PID/fd" | wc -l)"; }

for r in $(seq 1 "$ROUNDS"); do
  out="$WORK/wrk-$r.txt"
  timeout $((CAP + 60)) sh -c 'WRK_SELF_PID=$$; export WRK_SELF_PID; exec "$@"' sh \
    env BENCH_KEYS="$KEYS" BENCH_STOP_AFTER="$REQUESTS" \
    BENCH_PATH="/bundleup-unify/v1/chat/channels?limit=100&cursor=" \
    wrk -t1 -c64 -d"${CAP}s" --latency -s "$ROOT/bench/lua/bench.lua" \
    -H "Authorization: Bearer $TOKEN" "http://$ADDR/" >"$out" 2>&1 || true
  n=$(sed -n 's/^BENCH_RESULT //p' "$out" | python3 -c 'import json,sys; l=sys.stdin.read().strip(); print(json.loads(l)["requests"] if l else 0)')
  echo "round $r: requests $n, $(rss)"
  [ "$r" -lt "$ROUNDS" ] && [ "${MEM_PROBE_GAP:-0}" -gt 0 ] && sleep "$MEM_PROBE_GAP"
  curl -s --max-time 5 "http://$ADDR/_keyway/metrics" \
    | grep -E '^keyway_(upstream_connections_open|upstream_connections_new_total|cache_(hits|misses|stale)_total)[{ ]' \
    | grep -v 'upstream="[^b-]' | sed 's/^/  /' || true
done
if [ -n "${MEM_PROBE_TRIM:-}" ]; then  # how much of the heap is allocator retention, not live data
  gdb -p "$KW_PID" -batch -ex 'call (int) malloc_trim(0)' >/dev/null 2>&1 || echo "mem_probe: gdb malloc_trim failed" >&2
  echo "after malloc_trim(0): $(rss)"
fi
if [ -n "${MEM_PROBE_SMAPS:-}" ]; then  # resident KiB per mapping (file, or [heap]/[anon])
  python3 - "$KW_PID" <<'EOF2'
import re, sys, collections
rss = collections.Counter(); name = None
for line in open(f"/proc/{sys.argv[1]}/smaps"):
    if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
        parts = line.split(None, 5)
        name = parts[5].strip() if len(parts) > 5 and parts[5].strip() else "[anon]"
    elif line.startswith("Rss:"):
        rss[name] += int(line.split()[1])
for n, k in rss.most_common(12):
    print(f"  smaps {k:8d} KiB  {n}")
EOF2
fi
if [ "$SETTLE" -gt 0 ]; then
  sleep "$SETTLE"
  echo "after ${SETTLE}s idle: $(rss)"
fi
