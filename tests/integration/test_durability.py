"""test_durability.py: crashes and disk trouble lose nothing acknowledged (docs/auth.md, docs/cache.md, docs/errors.md).

- KillNineTest: 50 rounds of `kill -9 keywayd` in the middle of a stream of cache writes and
  `keywayctl secret set` writes; after each, keywayd restarts (ready), every acknowledged secret is
  listed and injected with its last acknowledged value, and the cache serves correct entries. Then
  `kill -9` of `keywayctl secret set` itself at spread moments: the environment still opens, the
  write is all or nothing, the next writer is not blocked.
- NearlyFullFilesystemTest: the state dir on a 2 MiB tmpfs, filled up: `secret set` fails with a
  clear error and exit 2, nothing stored is lost, keywayd keeps forwarding (cache writes fail and are
  logged), and everything recovers once space is freed. The tmpfs lives in a private mount namespace
  (`unshare -m` as root, `unshare -Urm` otherwise), so a crashed test leaves no mount behind; skipped
  with the reason when neither works.
- FileSizeLimitTest: the unprivileged partial alternative, RLIMIT_FSIZE on `keywayctl` alone.

KEYWAY_DURABILITY_ROUNDS overrides the 50 rounds (e.g. 5 for a quick local run).
"""

import errno
import os
import random
import re
import resource
import secrets as _secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

from harness import ConnectionClosed, FakeUpstream, Keyway, Response, binary, kill_after_writes, request

ROUNDS = int(os.environ.get("KEYWAY_DURABILITY_ROUNDS", "50"))
ROTATING = 4  # secrets dur.k0..k3, injected by upstreams rot0..rot3 as X-Dur-Key
_SAYS_FULL = re.compile(r"no space|space left|disk (is )?full|filesystem (is )?full", re.I)


def _note(text):
    """One summary line per test on stderr (counts for the issue's note)."""
    print("test_durability: " + text, file=sys.stderr, flush=True)


def _echo_target(req):
    """Fake upstream handler: 200 JSON naming the target it served, padded to a few KB so cache
    writes take real pages."""
    return Response.json({"target": req.target, "pad": "p" * 3000})


def _listed(kw):
    """{(name, team or "")} from `keywayctl secret list` (which must succeed)."""
    cp = kw.ctl("secret", "list", timeout=20)
    out = set()
    for line in cp.stdout.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 2:
            out.add((cols[0], cols[1][len("team:"):] if cols[1].startswith("team:") else ""))
    return out


class KillNineTest(unittest.TestCase):
    """One fake, one state dir, one keywayd restarted after every kill -9."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = FakeUpstream().start()
        cls.addClassCleanup(cls.fake.stop)
        cls.fake.route("GET", "/v1/dur/*", _echo_target)
        f = cls.fake.url
        upstreams = {"bundleup-api": {"base_url": f}}
        for j in range(ROTATING):
            upstreams["rot%d" % j] = {"base_url": f, "protocol": "generic",
                                      "credential": {"header": "X-Dur-Key", "secret": "dur.k%d" % j}}
        cls.kw = Keyway(upstreams, extra={"cache": {"max_bytes": "16MiB"}})
        cls.addClassCleanup(cls.kw.cleanup)
        kw = cls.kw
        kw.init()
        kw.add_team("alpha")
        cls.token = kw.add_client("app", "alpha")
        kw.set_secret("bundleup.api_key", "bu-" + _secrets.token_hex(8))
        cls.rot_value = {}
        for j in range(ROTATING):
            cls.rot_value[j] = "rot%d-initial-%s" % (j, _secrets.token_hex(6))
            kw.set_secret("dur.k%d" % j, cls.rot_value[j])
        cls.acked = {("bundleup.api_key", "")} | {("dur.k%d" % j, "") for j in range(ROTATING)}
        kw.start()

    # -- helpers --
    def get(self, target, timeout=10.0):
        return request(self.kw.main_port, "GET", target, [("X-Keyway-Token", self.token)], timeout=timeout)

    def assert_ready(self):
        resp = request(self.kw.main_port, "GET", "/_keyway/ready")
        self.assertEqual(resp.status, 200, "keywayd restarted but is not ready: %r" % resp)

    def assert_injected(self, j, allowed):
        """A request through rot<j> reaches the fake with X-Dur-Key in `allowed`; returns it."""
        marker = "/v1/inject/%d/%s" % (j, _secrets.token_hex(4))
        resp = self.get("/rot%d%s" % (j, marker))
        self.assertEqual(resp.status, 200, resp)
        seen = self.fake.find(lambda r: r.target == marker)
        self.assertEqual(len(seen), 1, "the fake did not get exactly one %s" % marker)
        value = seen[0].header("X-Dur-Key")
        self.assertIn(value, allowed, "rot%d injected a value that was never acknowledged" % j)
        return value

    def assert_cached_body(self, resp, target):
        """A 200 from the cache or the fake carries the body of exactly that target."""
        self.assertEqual(resp.status, 200, resp)
        self.assertIn(resp.header("X-Keyway-Cache"), ("HIT", "MISS", "STALE"), resp)
        self.assertEqual(resp.json()["target"], target[len("/bundleup-api"):],
                         "the cache served another request's response")

    def kill_daemon(self):
        self.kw.signal(signal.SIGKILL)
        self.assertIsNotNone(self.kw.wait_exit(10), "keywayd survived SIGKILL")
        for t in self.kw._readers:
            t.join(5)

    # -- streams --
    def cache_stream(self, rnd, worker, stop, log):
        i = 0
        while not stop.is_set():
            target = "/bundleup-api/v1/dur/%d?w=%d&i=%d" % (rnd, worker, i)
            i += 1
            try:
                resp = self.get(target, timeout=5)
            except (ConnectionClosed, OSError):
                # keywayd is dead (refused or cut mid-response): wait for the round to end.
                stop.wait(0.02)
                continue
            log.append((target, resp))

    def secret_stream(self, rnd, stop, log):
        n = 0
        while not stop.is_set():
            if n % 2 == 0:
                j = (n // 2) % ROTATING
                name, team, value = "dur.k%d" % j, None, "r%d-n%d-%s" % (rnd, n, _secrets.token_hex(6))
            else:
                j = None
                team = "alpha" if n % 4 == 1 else None
                name, value = "dur.r%d.n%d" % (rnd, n), _secrets.token_hex(10)
            args = ["secret", "set", name] + (["--team", team] if team else [])
            cp = self.kw.ctl(*args, input=value + "\n", check=False, timeout=30)
            log.append((name, team or "", j, value, cp.returncode, cp.stderr))
            n += 1

    # -- tests --
    def test_1_kill_daemon_mid_stream_50_rounds(self):
        rng = random.Random(int(os.environ.get("KEYWAY_DURABILITY_SEED", "7")))
        totals = {"secret_writes": 0, "cache_requests": 0, "hits_after_restart": 0,
                  "checked_after_restart": 0}
        started = time.monotonic()
        for rnd in range(ROUNDS):
            with self.subTest(round=rnd):
                stop = threading.Event()
                cache_log, secret_log = [], []
                threads = [threading.Thread(target=self.cache_stream, args=(rnd, w, stop, cache_log))
                           for w in range(2)]
                threads.append(threading.Thread(target=self.secret_stream, args=(rnd, stop, secret_log)))
                for t in threads:
                    t.start()
                time.sleep(rng.uniform(0.15, 0.6))
                self.kill_daemon()
                # The CLI keeps writing while the daemon is dead (stale reader slots, its lock).
                time.sleep(0.1)
                stop.set()
                for t in threads:
                    t.join(60)
                    self.assertFalse(t.is_alive(), "a stream did not stop")

                for name, team, j, value, rc, err in secret_log:
                    # Nothing keywayd does (or its death) may make a CLI write fail.
                    self.assertEqual(rc, 0, "secret set %s failed: %s" % (name, err.strip()))
                    self.acked.add((name, team))
                    if j is not None:
                        self.rot_value[j] = value
                totals["secret_writes"] += len(secret_log)
                totals["cache_requests"] += len(cache_log)
                for target, resp in cache_log:
                    self.assert_cached_body(resp, target)

                self.kw.start()
                self.assert_ready()
                missing = self.acked - _listed(self.kw)
                self.assertEqual(missing, set(), "acknowledged secrets lost after kill -9")
                for j in range(ROTATING):
                    self.assert_injected(j, {self.rot_value[j]})
                # Entries written before the kill: correct if served, whether HIT or MISS.
                for target, _ in cache_log[:3] + cache_log[-3:]:
                    resp = self.get(target)
                    self.assert_cached_body(resp, target)
                    totals["checked_after_restart"] += 1
                    totals["hits_after_restart"] += resp.header("X-Keyway-Cache") == "HIT"
                fresh = "/bundleup-api/v1/dur/%d?fresh=1" % rnd
                first, second = self.get(fresh), self.get(fresh)
                self.assert_cached_body(first, fresh)
                self.assertEqual(first.header("X-Keyway-Cache"), "MISS", first)
                self.assertEqual(second.header("X-Keyway-Cache"), "HIT", "the cache does not work "
                                 "after restart: %r" % second)
        self.assertGreater(totals["hits_after_restart"], 0,
                           "no cache entry written before a kill -9 was ever served after restart")
        _note("%d kill -9 rounds of keywayd in %.0fs: %d acknowledged secret writes, %d cache requests, "
              "%d/%d pre-kill entries served as HIT after restart"
              % (ROUNDS, time.monotonic() - started, totals["secret_writes"], totals["cache_requests"],
                 totals["hits_after_restart"], totals["checked_after_restart"]))

    def test_2_kill_keywayctl_mid_write(self):
        ctl = binary("keywayctl")
        outcomes = {"before_commit": 0, "after_commit": 0, "finished": 0, "mid_commit": 0}
        current = self.assert_injected(0, {self.rot_value[0]})

        def spawn(value):
            proc = subprocess.Popen([ctl, "--config", str(self.kw.config_path), "secret", "set", "dur.k0"],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=self.kw.env, cwd=str(self.kw.dir))
            proc.stdin.write((value + "\n").encode())
            proc.stdin.close()
            return proc

        # How long one write takes here, so that the kills spread over its whole life (start-up,
        # open, read, seal, commit with fsync) rather than all landing before or after it.
        durations = []
        for _ in range(3):
            t0 = time.monotonic()
            proc = spawn(current)
            self.assertEqual(proc.wait(30), 0)
            durations.append(time.monotonic() - t0)
        life = sorted(durations)[1]
        kills = 21
        for n in range(kills):
            with self.subTest(kill=n):
                value = "killed-%d-%s" % (n, _secrets.token_hex(6))
                proc = spawn(value)
                if n % 3 == 2:
                    time.sleep(life * (0.05 + 0.8 * n / (kills - 1)))
                    proc.send_signal(signal.SIGKILL)
                else:
                    # Inside the commit: right after its first or second write(2) (LMDB writes the
                    # data pages, fsyncs, then writes the meta page).
                    outcomes["mid_commit"] += kill_after_writes(proc, 1 + n % 3, life * 5)
                rc = proc.wait(10)
                # The environment opens and the writer lock is free: list, and another write.
                self.assertIn(("dur.k0", ""), _listed(self.kw))
                self.kw.ctl("secret", "set", "dur.k1", input=self.rot_value[1] + "\n", timeout=20)
                # All or nothing: the injected value is the old one or the new one.
                allowed = {current, value} if rc != 0 else {value}
                seen = self.assert_injected(0, allowed)
                if rc == 0:
                    outcomes["finished"] += 1
                elif seen == value:
                    outcomes["after_commit"] += 1
                else:
                    outcomes["before_commit"] += 1
                current = seen
                self.rot_value[0] = seen
        self.kill_daemon()
        self.kw.start()
        self.assert_ready()
        self.assert_injected(0, {current})
        self.assertEqual(self.acked - _listed(self.kw), set())
        _note("%d kill -9 of keywayctl secret set (one write takes %.0f ms), %d of them inside the commit; "
              "killed writes left the old value %d times, the new one %d times; %d had finished"
              % (kills, life * 1000, outcomes["mid_commit"], outcomes["before_commit"],
                 outcomes["after_commit"], outcomes["finished"]))


# ------------------------------------------------------------------------------------------------
# Nearly full filesystem
# ------------------------------------------------------------------------------------------------

class _Namespace:
    """A private mount namespace holding a small tmpfs at `mount_point`, kept alive by a sleeping
    process; binaries run inside it through `nsenter` wrappers."""

    def __init__(self, mount_point, size="2m"):
        self.mount_point = str(mount_point)
        self.holder = None
        self.user_ns = os.geteuid() != 0
        self.size = size

    def start(self):
        """Returns None when mounted, else the reason it could not be."""
        for tool in ("unshare", "nsenter", "mount"):
            if shutil.which(tool) is None:
                return "%s is not installed" % tool
        argv = ["unshare"] + (["--user", "--map-root-user"] if self.user_ns else []) + [
            "--mount", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs -o size=%s,mode=0700 keyway-full "$1" && echo mounted && exec sleep 3600'
            % self.size, "sh", self.mount_point]
        self.holder = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE)
        line = self.holder.stdout.readline().decode().strip()
        if line != "mounted":
            self.holder.wait(5)
            err = self.holder.stderr.read().decode(errors="replace").strip()
            how = "unshare -Urm (unprivileged)" if self.user_ns else "unshare -m (root)"
            return "cannot mount a 2 MiB tmpfs in a private namespace via %s: %s" % (how, err or "no output")
        return None

    def host_path(self, inside):
        """Where a path inside the namespace is reachable from this process."""
        return Path("/proc/%d/root%s" % (self.holder.pid, inside))

    def wrapper(self, directory, name, real):
        path = Path(directory) / name
        enter = "-U --preserve-credentials -m" if self.user_ns else "-m"
        path.write_text('#!/bin/sh\nexec nsenter -t %d %s -- "%s" "$@"\n' % (self.holder.pid, enter, real))
        path.chmod(0o755)
        return str(path)

    def stop(self):
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait(10)


def _fill(path):
    """Writes `path` until the filesystem refuses even one byte; returns the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (65536, 4096, 512, 1):
            block = b"\0" * chunk
            while True:
                try:
                    n = f.write(block)
                except OSError as e:
                    if e.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                        raise
                    break
                written += n
    return written


class NearlyFullFilesystemTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = FakeUpstream().start()
        cls.addClassCleanup(cls.fake.stop)
        cls.fake.route("GET", "/v1/*", _echo_target)
        cls.tmp = Path(tempfile.mkdtemp(prefix="keyway-full-"))
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        mnt = cls.tmp / "mnt"
        mnt.mkdir()
        cls.ns = _Namespace(mnt)
        cls.addClassCleanup(cls.ns.stop)
        reason = cls.ns.start()
        if reason:
            raise unittest.SkipTest(reason)
        # keywayd and keywayctl run inside the namespace; the harness finds them through these.
        saved = {k: os.environ.get(k) for k in ("KEYWAYD", "KEYWAYCTL")}

        def restore():
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        cls.addClassCleanup(restore)
        real = {name: binary(name) for name in ("keywayd", "keywayctl")}
        os.environ["KEYWAYD"] = cls.ns.wrapper(cls.tmp, "keywayd", real["keywayd"])
        os.environ["KEYWAYCTL"] = cls.ns.wrapper(cls.tmp, "keywayctl", real["keywayctl"])

        f = cls.fake.url
        cls.kw = Keyway({"bundleup-api": {"base_url": f}, "bundleup-proxy": {"base_url": f}},
                        extra={"cache": {"max_bytes": "4MiB"}})
        cls.addClassCleanup(cls.kw.cleanup)
        cls.state_inside = str(mnt / "state")
        cls.kw.config["state_dir"] = cls.state_inside
        cls.kw.write_config()
        cls.kw.init()
        cls.kw.add_team("alpha")
        cls.token = cls.kw.add_client("app", "alpha")
        cls.bu_key = "bu-full-" + _secrets.token_hex(8)
        cls.kw.set_secret("bundleup.api_key", cls.bu_key)
        cls.kw.start()

    def get(self, target):
        return request(self.kw.main_port, "GET", target, [("X-Keyway-Token", self.token)])

    def assert_forwarded(self, target, expect_cache=None):
        upstream_target = "/" + target.split("/", 2)[2]  # without the /<mount> prefix
        resp = self.get(target)
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.json()["target"], upstream_target, "wrong body for %s" % target)
        if expect_cache:
            self.assertEqual(resp.header("X-Keyway-Cache"), expect_cache, resp)
        got = self.fake.find(lambda r: r.target == upstream_target)
        if got:
            self.assertEqual(got[-1].header("Authorization"), "Bearer " + self.bu_key)
        return resp

    def test_full_then_freed(self):
        kw = self.kw
        stored = {("bundleup.api_key", "")}
        for i in range(5):
            kw.set_secret("full.s%d" % i, _secrets.token_hex(16))
            stored.add(("full.s%d" % i, ""))
        for i in range(3):
            self.assert_forwarded("/bundleup-api/v1/warm/%d" % i, "MISS")
            self.assert_forwarded("/bundleup-api/v1/warm/%d" % i, "HIT")

        filler = self.ns.host_path(str(Path(self.state_inside).parent / "filler"))
        _fill(filler)
        st = os.statvfs(str(filler.parent))
        self.assertLess(st.f_bavail * st.f_frsize, 4096, "the tmpfs is not full")

        # Secret writes: LMDB may reuse free pages for a while; it must fail before long, cleanly.
        failed = None
        accepted_while_full = 0
        for i in range(100):
            value = _secrets.token_hex(800)
            cp = kw.ctl("secret", "set", "full.x%d" % i, input=value + "\n", check=False, timeout=30)
            if cp.returncode == 0:
                stored.add(("full.x%d" % i, ""))
                accepted_while_full += 1
                continue
            failed = (cp, value)
            break
        self.assertIsNotNone(failed, "100 secret writes succeeded on a full filesystem")
        # Whether the disk-full cause is named is checked last, after every behaviour (unclear
        # messages are collected, not fatal at once).
        unclear = []
        failures = [failed]
        for i in range(4):
            value = _secrets.token_hex(200 * (i + 1))
            failures.append((kw.ctl("secret", "set", "full.again%d" % i, input=value + "\n",
                                    check=False), value))
        for cp, value in failures:
            self.assertEqual(cp.returncode, 2, "a full disk is a runtime failure (exit 2): %r" % cp.stderr)
            self.assertNotIn(value, cp.stderr + cp.stdout)
            self.assertEqual(len(cp.stderr.strip().splitlines()), 1, "one clear line: %r" % cp.stderr)
            if not _SAYS_FULL.search(cp.stderr):
                unclear.append("keywayctl secret set: " + cp.stderr.strip())
        cp = failed[0]
        self.assertEqual(stored - _listed(kw), set(), "a stored secret was lost on a full disk")

        # keywayd keeps forwarding; cache writes fail, and the log says so.
        for i in range(40):
            self.assert_forwarded("/bundleup-api/v1/full/%d" % i)
        self.assert_forwarded("/bundleup-proxy/v1/proxied")
        for i in range(3):
            self.assert_forwarded("/bundleup-api/v1/warm/%d" % i, "HIT")  # reads need no space

        def cache_warning(r):
            return r.get("level") in ("warn", "error") and "cache" in str(r.get("msg", "")).lower()
        logged = kw.wait_for_record(cache_warning, timeout=15)
        self.assertIsNotNone(logged, "no warning in keywayd's log about failing cache writes; tail:\n%s"
                             % kw.stderr_tail(10))
        for r in kw.records():
            if cache_warning(r) and not _SAYS_FULL.search(str(r.get("msg"))):
                unclear.append("keywayd: " + str(r.get("msg"))[:200])
        metrics = request(kw.main_port, "GET", "/_keyway/metrics").text
        healthy = re.search(r"^keyway_cache_healthy (\S+)$", metrics, re.M)

        # Space comes back: everything recovers without a restart.
        filler.unlink()
        after = "full.after"
        kw.set_secret(after, _secrets.token_hex(16))
        stored.add((after, ""))
        self.assertEqual(stored - _listed(kw), set())
        self.assert_forwarded("/bundleup-api/v1/recovered", "MISS")
        self.assert_forwarded("/bundleup-api/v1/recovered", "HIT")
        # ...and what the cache writes now is on disk: served as HIT by a restarted daemon.
        time.sleep(1.5)
        kw.stop()
        kw.start()
        self.assertEqual(request(kw.main_port, "GET", "/_keyway/ready").status, 200)
        self.assert_forwarded("/bundleup-api/v1/recovered", "HIT")
        self.assert_forwarded("/bundleup-api/v1/warm/0", "HIT")
        _note("full tmpfs (%s): secret set exit 2 after %d more writes, %r; cache-write warning logged; "
              "keyway_cache_healthy while full: %s"
              % ("unprivileged user namespace" if self.ns.user_ns else "root", accepted_while_full,
                 cp.stderr.strip()[:160], healthy.group(1) if healthy else "absent"))
        # LMDB turns a short write into EIO, so "Input/output error" alone is what users see on a
        # full disk half of the time; the message must name the cause.
        self.assertEqual(unclear, [], "errors on a full disk that do not say the disk is full")


class FileSizeLimitTest(unittest.TestCase):
    """RLIMIT_FSIZE on keywayctl: a partial, unprivileged stand-in for a full disk (writes that would
    grow data.mdb fail with EFBIG)."""

    def setUp(self):
        self.kw = Keyway({"bundleiq": {"base_url": "http://127.0.0.1:9"}})
        self.addCleanup(self.kw.cleanup)
        self.kw.init()

    def test_secret_set_over_file_size_limit(self):
        kw = self.kw
        stored = set()
        for i in range(3):
            kw.set_secret("fs.s%d" % i, _secrets.token_hex(16))
            stored.add(("fs.s%d" % i, ""))
        data = kw.state_dir / "data.mdb"
        if not data.exists():
            candidates = sorted(kw.state_dir.rglob("data.mdb"))
            self.assertTrue(candidates, "no LMDB data file under the state dir")
            data = candidates[0]
        limit = data.stat().st_size

        def limited():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        argv = [binary("keywayctl"), "--config", str(kw.config_path)]
        failed = None
        for i in range(200):
            value = _secrets.token_hex(1500)
            cp = subprocess.run(argv + ["secret", "set", "fs.x%d" % i], input=value + "\n", text=True,
                                capture_output=True, env=kw.env, cwd=str(kw.dir), timeout=30,
                                preexec_fn=limited)
            if cp.returncode == 0:
                stored.add(("fs.x%d" % i, ""))
                continue
            failed = (cp, value)
            break
        self.assertIsNotNone(failed, "200 writes never grew data.mdb past its size")
        cp, value = failed
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertTrue(cp.stderr.strip(), "no error message")
        self.assertEqual(len(cp.stderr.strip().splitlines()), 1, "one clear line: %r" % cp.stderr)
        self.assertNotIn(value, cp.stderr + cp.stdout)
        self.assertEqual(stored - _listed(kw), set(), "a stored secret was lost")
        kw.set_secret("fs.after", _secrets.token_hex(16))
        self.assertIn(("fs.after", ""), _listed(kw))
        _note("RLIMIT_FSIZE=%d on keywayctl: exit 2 after %d writes: %r"
              % (limit, len(stored) - 3, cp.stderr.strip()[:160]))


if __name__ == "__main__":
    unittest.main()
