#!/usr/bin/env bash
# CPU cost per forwarded request (scenario b's path), the figure that stays put on a noisy machine:
# keywayd's user+system CPU time over a wrk run divided by the requests it answered. Runs keywayd
# against a one-worker nginx fast upstream, ROUNDS times, and prints one line per round.
#
#   bench/tools/cpu_probe.sh                               # build-g, 3 rounds of 10 s, -c64
#   KEYWAY_UPSTREAM_IO=threads bench/tools/cpu_probe.sh    # any environment is passed to keywayd
#
# Environment: CPU_PROBE_BUILD (build dir, default build-g), CPU_PROBE_ROUNDS (3),
# CPU_PROBE_DURATION (seconds per round, 10), CPU_PROBE_CONNECTIONS (64), CPU_PROBE_PATH
# (default /bundleup-proxy/api/v2/users?page=1), CPU_PROBE_KEEP=1 (keep the work dir).
# Prints: round N: requests R, rps X, keywayd cpu_s C, us_per_request U
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${CPU_PROBE_BUILD:-build-g}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
ROUNDS=${CPU_PROBE_ROUNDS:-3}
DURATION=${CPU_PROBE_DURATION:-10}
CONNS=${CPU_PROBE_CONNECTIONS:-64}
TARGET=${CPU_PROBE_PATH:-/bundleup-proxy/api/v2/users?page=1}
KEYWAYD="$BUILD/daemon/keywayd"
KEYWAYCTL="$BUILD/daemon/keywayctl"
[ -x "$KEYWAYD" ] && [ -x "$KEYWAYCTL" ] || { echo "cpu_probe: no keywayd/keywayctl in $BUILD/daemon" >&2; exit 1; }
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "cpu_probe: needs wrk and nginx (bench/run installs them)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/keyway-cpuprobe.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ -n "${CPU_PROBE_KEEP:-}" ]; then echo "cpu_probe: work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

UP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
API_KEY="bu_probe_$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
BODY='{"data":[{"id":"u_01","name":"Ada","email":"ada@example.com"},{"id":"u_02","name":"Lin"}],"meta":{"next":null}}'
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
  bundleup-proxy:
    base_url: http://127.0.0.1:$UP_PORT
EOF
"$KEYWAYCTL" --config "$CONF" init >"$WORK/ctl.log" 2>&1
"$KEYWAYCTL" --config "$CONF" team add bench >>"$WORK/ctl.log" 2>&1
TOKEN=$("$KEYWAYCTL" --config "$CONF" client add probe-app --team bench 2>>"$WORK/ctl.log" | tail -n 1 | tr -d '[:space:]')
printf '%s\n' "$API_KEY" | "$KEYWAYCTL" --config "$CONF" secret set bundleup.api_key >>"$WORK/ctl.log" 2>&1

"$KEYWAYD" --config "$CONF" 2>"$WORK/keywayd.log" >/dev/null &
KW_PID=$!
PIDS=("$KW_PID" "${PIDS[@]}")
ADDR=""
for _ in $(seq 1 600); do
  ADDR=$(grep '"msg":"listening"' "$WORK/keywayd.log" 2>/dev/null | grep '"main"' | head -1 \
         | sed -n 's/.*"address":"\([^"]*\)".*/\1/p' || true)
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "$ADDR" ] || { echo "cpu_probe: keywayd did not start:" >&2; tail -5 "$WORK/keywayd.log" >&2; exit 1; }
echo "cpu_probe: keywayd pid $KW_PID at $ADDR ($(grep -o '"http_io":"[a-z]*"' "$WORK/keywayd.log" || echo '-')), upstream 127.0.0.1:$UP_PORT" >&2
curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" -H "BU-Connection-Id: conn_1" "http://$ADDR$TARGET"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$KW_PID/stat"; }
TICK=$(getconf CLK_TCK)
for r in $(seq 1 "$ROUNDS"); do
  before=$(cpu_ticks)
  wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Authorization: Bearer $TOKEN" -H "BU-Connection-Id: conn_1" \
    "http://$ADDR$TARGET" >"$WORK/wrk-$r.txt" 2>&1 || true
  after=$(cpu_ticks)
  python3 - "$WORK/wrk-$r.txt" "$before" "$after" "$TICK" "$r" <<'EOF2'
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"(\d+) requests in ([\d.]+)s", text)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if not m or non2xx:
    sys.exit("cpu_probe: wrk failed or got errors:\n" + text)
n, secs = int(m.group(1)), float(m.group(2))
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
print("round %s: requests %d, rps %.0f, keywayd cpu_s %.2f, us_per_request %.2f" % (sys.argv[5], n, n / secs, cpu, cpu * 1e6 / n))
EOF2
done
