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

WORK=$(mktemp -d /tmp/keyway-memprobe.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ -n "${MEM_PROBE_KEEP:-}" ]; then echo "mem_probe: work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r UP_PORT <<<"$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
API_KEY="bu_probe_$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
BODY='{"data":[{"id":"ch_01","name":"general","is_private":false},{"id":"ch_02","name":"random","is_private":false}],"meta":{"next":null}}'
mkdir -p "$WORK/up/tmp"
USER_DIRECTIVE=""
[ "$(id -u)" -eq 0 ] && USER_DIRECTIVE="user nobody nogroup;" && chown nobody:nogroup "$WORK/up/tmp"
cat >"$WORK/up/nginx.conf" <<EOF
$USER_DIRECTIVE
worker_processes 1;
pid $WORK/up/nginx.pid;
error_log $WORK/up/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/up/tmp/body;
  proxy_temp_path $WORK/up/tmp/proxy;
  fastcgi_temp_path $WORK/up/tmp/fastcgi;
  uwsgi_temp_path $WORK/up/tmp/uwsgi;
  scgi_temp_path $WORK/up/tmp/scgi;
  default_type application/json;
  server {
    listen 127.0.0.1:$UP_PORT;
    location / {
      if (\$http_authorization != "Bearer $API_KEY") { return 401 '{"error":"wrong key"}'; }
      return 200 '$BODY';
    }
  }
}
EOF
nginx -p "$WORK/up" -c "$WORK/up/nginx.conf" -e "$WORK/up/error.log" -g 'daemon off;' 2>>"$WORK/up/error.log" &
PIDS+=($!)

CONF="$WORK/keyway.yaml"
cat >"$CONF" <<EOF
listen: 127.0.0.1:0
state_dir: $WORK/state
server:
  threads: 2
log:
  level: info
  access_log: false
upstreams:
  bundleup-unify:
    base_url: http://127.0.0.1:$UP_PORT
EOF
"$KEYWAYCTL" --config "$CONF" init >"$WORK/ctl.log" 2>&1
"$KEYWAYCTL" --config "$CONF" team add bench >>"$WORK/ctl.log" 2>&1
TOKEN=$("$KEYWAYCTL" --config "$CONF" client add probe-app --team bench 2>>"$WORK/ctl.log" | tail -n 1 | tr -d '[:space:]')
printf '%s\n' "$API_KEY" | "$KEYWAYCTL" --config "$CONF" secret set bundleup.api_key >>"$WORK/ctl.log" 2>&1

# shellcheck disable=SC2086
${MEM_PROBE_WRAP:-} "$KEYWAYD" --config "$CONF" 2>"$WORK/keywayd.log" >/dev/null &
WRAP_PID=$!
PIDS=("$WRAP_PID" "${PIDS[@]}")
ADDR=""
for _ in $(seq 1 600); do
  ADDR=$(grep '"msg":"listening"' "$WORK/keywayd.log" 2>/dev/null | grep '"main"' | head -1 \
         | sed -n 's/.*"address":"\([^"]*\)".*/\1/p' || true)
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "$ADDR" ] || { echo "mem_probe: keywayd did not start:" >&2; tail -5 "$WORK/keywayd.log" >&2; exit 1; }
# The keywayd process itself (the wrapper, if any, is its parent or execs it).
KW_PID=$(pgrep -n -f -- "$KEYWAYD --config $CONF" || echo "$WRAP_PID")
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
