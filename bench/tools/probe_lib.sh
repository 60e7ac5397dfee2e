# Shared set-up of the single-scenario probes (mem_probe.sh, cpu_probe.sh): a work dir that is
# cleaned up with every process started, a one-worker nginx fast upstream that checks the injected
# key, and keywayd on a fresh state dir with one client token. Sourced, not run.
#
#   probe_init NAME KEEP        work dir /tmp/keyway-NAME.XXXXXX in $WORK; KEEP non-empty keeps it
#   probe_start_upstream BODY   $UP_PORT, $API_KEY, $USER_DIRECTIVE (nginx `user` line when root)
#   probe_nginx_head DIR N      starts DIR/nginx.conf with the shared head (N workers)
#   probe_start_keywayd MOUNT [WRAPPER...]
#                               keywayd with one upstream MOUNT -> the fast upstream, under an
#                               optional command prefix; $TOKEN, $ADDR, $KW_PID, $CONF
# Needs $KEYWAYD, $KEYWAYCTL and $PROBE_NAME (for messages) set by the caller.

PIDS=()

probe_cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ -n "$PROBE_KEEP" ]; then echo "$PROBE_NAME: work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}

probe_init() {
  PROBE_NAME=$1
  PROBE_KEEP=$2
  WORK=$(mktemp -d "/tmp/keyway-$PROBE_NAME.XXXXXX")
  trap probe_cleanup EXIT
  trap 'exit 130' INT TERM
}

probe_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts DIR/nginx.conf with the head every probe nginx shares (WORKERS workers, temp paths in
# DIR, the settings of `http {`); the caller appends its own lines and the closing brace.
probe_nginx_head() {
  local dir=$1 workers=$2
  mkdir -p "$dir/tmp"
  if [ "$(id -u)" -eq 0 ]; then chown nobody:nogroup "$dir/tmp"; fi
  cat >"$dir/nginx.conf" <<EOF
$USER_DIRECTIVE
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
EOF
}

probe_start_upstream() {
  local body=$1
  UP_PORT=$(probe_free_port)
  API_KEY="bu_probe_$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  USER_DIRECTIVE=""
  [ "$(id -u)" -eq 0 ] && USER_DIRECTIVE="user nobody nogroup;"
  probe_nginx_head "$WORK/up" 1
  cat >>"$WORK/up/nginx.conf" <<EOF
  default_type application/json;
  server {
    listen 127.0.0.1:$UP_PORT;
    location / {
      if (\$http_authorization != "Bearer $API_KEY") { return 401 '{"error":"wrong key"}'; }
      return 200 '$body';
    }
  }
}
EOF
  nginx -p "$WORK/up" -c "$WORK/up/nginx.conf" -e "$WORK/up/error.log" -g 'daemon off;' 2>>"$WORK/up/error.log" &
  PIDS+=($!)
}

probe_start_keywayd() {
  local mount=$1
  shift
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
  $mount:
    base_url: http://127.0.0.1:$UP_PORT
EOF
  "$KEYWAYCTL" --config "$CONF" init >"$WORK/ctl.log" 2>&1
  "$KEYWAYCTL" --config "$CONF" team add bench >>"$WORK/ctl.log" 2>&1
  TOKEN=$("$KEYWAYCTL" --config "$CONF" client add probe-app --team bench 2>>"$WORK/ctl.log" | tail -n 1 | tr -d '[:space:]')
  printf '%s\n' "$API_KEY" | "$KEYWAYCTL" --config "$CONF" secret set bundleup.api_key >>"$WORK/ctl.log" 2>&1

  "$@" "$KEYWAYD" --config "$CONF" 2>"$WORK/keywayd.log" >/dev/null &
  local started=$!
  PIDS=("$started" "${PIDS[@]}")
  ADDR=""
  for _ in $(seq 1 600); do
    ADDR=$(grep '"msg":"listening"' "$WORK/keywayd.log" 2>/dev/null | grep '"main"' | head -1 \
           | sed -n 's/.*"address":"\([^"]*\)".*/\1/p' || true)
    [ -n "$ADDR" ] && break
    sleep 0.1
  done
  [ -n "$ADDR" ] || { echo "$PROBE_NAME: keywayd did not start:" >&2; tail -5 "$WORK/keywayd.log" >&2; exit 1; }
  # The keywayd process itself (a wrapper, if any, is its parent or execs it).
  KW_PID=$(pgrep -n -f -- "$KEYWAYD --config $CONF" || echo "$started")
}
