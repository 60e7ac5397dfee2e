#!/usr/bin/env python3
"""sampler.py: samples a gateway while bench/run measures it; prints the maxima when stopped.

Every INTERVAL seconds, until SIGTERM or SIGINT:
  - the RSS of PID and its children (nginx: master + workers; keywayd: the process), and
  - the ESTABLISHED TCP connections those processes hold to each of the given 127.0.0.1 ports
    (sockets found through /proc/<pid>/fd, matched in /proc/net/tcp by inode: so the other
    gateway's idle pooled connections to the same upstream are not counted).
Then prints one JSON object: {"rss_max_kib": N, "samples": N, "established_max": {"PORT": N}}.

  sampler.py --pid 1234 --port 40001 --port 40002 [--interval 0.5]
Python 3 standard library only.
"""
import argparse
import json
import os
import signal
import sys
import time

stop = False


def on_signal(signum, frame):
    global stop
    stop = True


def tree(root):
    pids = [root]
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read().decode("ascii", "replace")
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == root:
            pids.append(int(name))
    return pids


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def socket_inodes(pid):
    out = set()
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def established(inodes, ports):
    counts = {p: 0 for p in ports}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] != "01":  # ESTABLISHED
                        continue
                    port = int(fields[2].rsplit(":", 1)[1], 16)
                    if port in counts and fields[9] in inodes:
                        counts[port] += 1
        except OSError:
            continue
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--port", type=int, action="append", default=[])
    ap.add_argument("--interval", type=float, default=0.5)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rss_max, samples = 0, 0
    conn_max = {p: 0 for p in args.port}
    pids = tree(args.pid)  # nginx's workers or keywayd: fixed while a run lasts
    while not stop:
        rss_max = max(rss_max, sum(rss_kib(p) for p in pids))
        if args.port:
            inodes = set()
            for p in pids:
                inodes |= socket_inodes(p)
            for port, n in established(inodes, args.port).items():
                conn_max[port] = max(conn_max[port], n)
        samples += 1
        deadline = time.monotonic() + args.interval
        while not stop and time.monotonic() < deadline:
            time.sleep(min(0.05, args.interval))
    print(json.dumps({"rss_max_kib": rss_max, "samples": samples,
                      "established_max": {str(p): n for p, n in conn_max.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
