#!/usr/bin/env bash
# CPU cost per forwarded request (scenario b's path), the figure that stays put on a noisy machine:
# the gateway's user+system CPU time over a wrk run divided by the requests it answered. Runs
# keywayd and, alternating with it, nginx doing the same job (bench/nginx/gateway.conf.in's Proxy
# location: token check, key injection, keep-alive upstream pool; two workers) against one
# one-worker nginx fast upstream, ROUNDS times each; prints one line per run and the medians.
#
#   bench/tools/cpu_probe.sh                               # build-g, 3 rounds of 10 s, -c64
#
# Environment: CPU_PROBE_BUILD (build dir, default build-g), CPU_PROBE_ROUNDS (3),
# CPU_PROBE_DURATION (seconds per round, 10), CPU_PROBE_CONNECTIONS (64), CPU_PROBE_PATH
# (default /bundleup-proxy/api/v2/users?page=1), CPU_PROBE_NGINX=0 (keywayd only),
# CPU_PROBE_KEEP=1 (keep the work dir).
# Prints: round N keyway|nginx: requests R, rps X, cpu_s C, us_per_request U (user, sys),
# tcp_segments_per_request S; then the medians and their ratio keyway/nginx.
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

# shellcheck source=bench/tools/probe_lib.sh
. "$ROOT/bench/tools/probe_lib.sh"
probe_init cpuprobe "${CPU_PROBE_KEEP:-}"
probe_start_upstream '{"data":[{"id":"u_01","name":"Ada","email":"ada@example.com"},{"id":"u_02","name":"Lin"}],"meta":{"next":null}}'
probe_start_keywayd bundleup-proxy
echo "cpu_probe: keywayd pid $KW_PID at $ADDR, upstream 127.0.0.1:$UP_PORT" >&2
curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" -H "BU-Connection-Id: conn_1" "http://$ADDR$TARGET"

GATEWAYS=(keyway)
NG_PID=""
if [ "${CPU_PROBE_NGINX:-1}" != 0 ]; then
  GW_PORT=$(probe_free_port)
  probe_nginx_head "$WORK/gw" 2
  cat >>"$WORK/gw/nginx.conf" <<EOF
  map_hash_bucket_size 256;
  map \$http_authorization \$kw_client { "Bearer $TOKEN" probe-app; default ""; }
  upstream fast { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$GW_PORT;
    if (\$kw_client = "") { return 401 '{"error":{"code":"unauthorized"}}'; }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Authorization "Bearer $API_KEY";
    proxy_set_header X-Keyway-Token "";
    location /bundleup-proxy/ { proxy_pass http://fast/; }
  }
}
EOF
  nginx -p "$WORK/gw" -c "$WORK/gw/nginx.conf" -e "$WORK/gw/error.log" -g 'daemon off;' 2>>"$WORK/gw/error.log" &
  NG_PID=$!
  PIDS+=("$NG_PID")
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/" && break; sleep 0.1; done
  GATEWAYS+=(nginx)
fi

# User and system ticks of a gateway ("USER SYS"): keywayd, or nginx's master and workers.
cpu_ticks() {
  local pids=("$KW_PID")
  # shellcheck disable=SC2207  # pgrep prints one pid per line
  [ "$1" = nginx ] && pids=("$NG_PID" $(pgrep -P "$NG_PID"))
  local p user=0 sys=0
  for p in "${pids[@]}"; do
    read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat")
    user=$((user + u)); sys=$((sys + s))
  done
  echo "$user $sys"
}
TICK=$(getconf CLK_TCK)
# TCP segments sent by the whole host (/proc/net/snmp, Tcp OutSegs): over loopback each one is
# also received, so per request this counts the packets of the whole path (client, gateway,
# upstream), ACKs sent on their own included. Anything else the host sends adds to it.
tcp_out_segs() {
  awk '$1 == "Tcp:" { if (!seen) { for (i = 2; i <= NF; i++) if ($i == "OutSegs") col = i; seen = 1 } else print $col }' /proc/net/snmp
}
: >"$WORK/results.txt"
for r in $(seq 1 "$ROUNDS"); do
  for gw in "${GATEWAYS[@]}"; do
    url="http://$ADDR$TARGET"
    [ "$gw" = nginx ] && url="http://127.0.0.1:$GW_PORT$TARGET"
    before=$(cpu_ticks "$gw")
    segs_before=$(tcp_out_segs)
    wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Authorization: Bearer $TOKEN" -H "BU-Connection-Id: conn_1" \
      "$url" >"$WORK/wrk-$gw-$r.txt" 2>&1 || true
    after=$(cpu_ticks "$gw")
    segs=$(($(tcp_out_segs) - segs_before))
    python3 - "$WORK/wrk-$gw-$r.txt" "$before" "$after" "$TICK" "$r" "$gw" "$segs" <<'PYEOF' | tee -a "$WORK/results.txt"
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"(\d+) requests in ([\d.]+)s", text)
if not m or "Non-2xx or 3xx responses" in text:
    sys.exit("cpu_probe: wrk failed or got errors:\n" + text)
n, secs = int(m.group(1)), float(m.group(2))
b, a = [list(map(int, x.split())) for x in (sys.argv[2], sys.argv[3])]
user, system = [(a[i] - b[i]) / int(sys.argv[4]) for i in (0, 1)]
cpu = user + system
print("round %s %s: requests %d, rps %.0f, cpu_s %.2f, us_per_request %.2f (user %.2f, sys %.2f), "
      "tcp_segments_per_request %.2f"
      % (sys.argv[5], sys.argv[6], n, n / secs, cpu, cpu * 1e6 / n, user * 1e6 / n, system * 1e6 / n,
         int(sys.argv[7]) / n))
PYEOF
  done
done
python3 - "$WORK/results.txt" <<'PYEOF'
import re, statistics, sys
per = {}
for line in open(sys.argv[1]):
    m = re.match(r"round \d+ (\w+): .* us_per_request ([\d.]+)", line)
    if m:
        per.setdefault(m.group(1), []).append(float(m.group(2)))
med = {gw: statistics.median(v) for gw, v in per.items()}
print("median us_per_request: " + ", ".join("%s %.2f" % kv for kv in med.items()))
if "keyway" in med and "nginx" in med:
    print("ratio keyway/nginx: %.2f (below 1: keyway spends less CPU per request)" % (med["keyway"] / med["nginx"]))
PYEOF
