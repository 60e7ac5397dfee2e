#!/usr/bin/env python3
"""Start-up timer for bench/run: time from exec to ready, repeated, for keywayd or nginx.

Ready is the earliest of: READY=1 on $NOTIFY_SOCKET (sd_notify), a stderr line holding
"msg":"ready", or an HTTP GET of --ready-path answering --ready-status (the port comes from --port
or from keyway's {"msg":"listening","listener":"main","address":...} line). Each run is stopped with
SIGTERM (SIGKILL after 10 s) before the next starts. Prints one JSON line.
"""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CURRENT = []  # the process being timed, so that SIGTERM/SIGINT to this tool never orphans it


def on_signal(signum, frame):
    for proc in CURRENT:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    sys.exit(128 + signum)


LISTEN_RE = re.compile(r'"msg"\s*:\s*"listening".*"address"\s*:\s*"([^"]+)"')


class Run:
    def __init__(self):
        self.lock = threading.Lock()
        self.ready_at = None
        self.via = None
        self.port = None
        self.done = threading.Event()
        self.stderr_tail = []

    def mark(self, via):
        now = time.monotonic()
        with self.lock:
            if self.ready_at is None:
                self.ready_at = now
                self.via = via
                self.done.set()


def read_stderr(proc, run):
    for raw in iter(proc.stderr.readline, b""):
        line = raw.decode("utf-8", "replace")
        run.stderr_tail = (run.stderr_tail + [line.rstrip()])[-5:]
        if '"msg":"listening"' in line.replace(" ", "") and '"main"' in line:
            match = LISTEN_RE.search(line)
            if match:
                run.port = int(match.group(1).rsplit(":", 1)[1])
        if '"msg":"ready"' in line.replace(" ", ""):
            run.mark("log")
    # keep draining until EOF so the daemon never blocks on a full pipe


def read_notify(sock, run):
    while not run.done.is_set():
        try:
            data = sock.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            return
        if b"READY=1" in data.split(b"\n"):
            run.mark("sd_notify")


def http_status(port, path, headers):
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
        extra = "".join(f"{h}\r\n" for h in headers)
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n".encode())
        first = conn.recv(64).decode("latin-1")
        parts = first.split(" ")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def poll_http(args, run, fixed_port):
    while not run.done.is_set():
        port = fixed_port or run.port
        if port:
            try:
                if http_status(port, args.ready_path, args.ready_header) == args.ready_status:
                    run.mark("http")
                    return
            except OSError:
                pass
        time.sleep(0.001)


def run_once(args, cmd):
    run = Run()
    with tempfile.TemporaryDirectory() as tmp:
        notify_path = os.path.join(tmp, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(notify_path)
        sock.settimeout(0.05)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env)
        CURRENT[:] = [proc]
        threads = [threading.Thread(target=read_stderr, args=(proc, run), daemon=True),
                   threading.Thread(target=read_notify, args=(sock, run), daemon=True),
                   threading.Thread(target=poll_http, args=(args, run, args.port), daemon=True)]
        for t in threads:
            t.start()
        deadline = t0 + args.timeout
        while not run.done.is_set() and time.monotonic() < deadline and proc.poll() is None:
            run.done.wait(0.01)
        result = {"ms": round((run.ready_at - t0) * 1000.0, 2) if run.ready_at else None, "via": run.via}
        if run.ready_at is None:
            result["error"] = ("exited with %s" % proc.returncode) if proc.poll() is not None else "timeout"
            result["stderr_tail"] = run.stderr_tail
        run.done.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sock.close()
        return result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=0, help="fixed port to poll (nginx)")
    parser.add_argument("--ready-path", default="/_keyway/ready")
    parser.add_argument("--ready-status", type=int, default=200)
    parser.add_argument("--ready-header", action="append", default=[])
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not cmd or args.runs <= 0:
        print("startup: usage: startup.py [options] -- COMMAND ARGS...", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runs = [run_once(args, cmd) for _ in range(args.runs)]
    times = [r["ms"] for r in runs if r["ms"] is not None]
    out = {"runs": runs,
           "median_ms": round(statistics.median(times), 2) if times else None,
           "min_ms": min(times) if times else None,
           "failed": len(runs) - len(times)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
