"""test_shared_cache.py: the shared second-level cache in Redis (docs/cache.md, "Shared cache (Redis)")
against a real redis-server (redis_server.py), one FakeUpstream and three keywayd hosts that share one
master key and the same shared secret values (so the same cache identity), each with its own store
and client tokens.

SharedCacheTest shares Redis, the fake and the hosts across its tests; they run in name order: sharing
and coalescing, invalidation and purge, the scan of Redis (and of every command and pub/sub message
keywayd sent it since the class started), then the faults (Redis killed, paused, restarted empty, full,
a value tampered with) and the configuration errors. setUp brings Redis back from whatever a test did
to it. SharedCacheAuthTest: a Redis with a password (password_file), one host over TCP and one over the
unix socket.

Each test asserts on what the clients got (X-Keyway-Cache, Age, bodies), on what the fake upstream
received, and on the keyway_cache_l2_* metrics. No redis-server: the classes fail (RedisError says how
to install it), they are never skipped.
"""

import json
import os
import re
import shutil
import subprocess
import threading
import time
import unittest
import uuid

from etcd_cluster import encoded_forms
from harness import REPO, FakeUpstream, Keyway, Response, binary, build_request, concurrent_requests, request
from redis_server import RedisServer
from test_fleet import Load, wait_until
from test_hostile import _sanitized

PREFIX = "kwit:"
# A write on one host must be seen by the others within this (the contract's bound); a keywayd built
# with a sanitizer runs several times slower and gets SANITIZED_FACTOR times as long.
INVALIDATION_BOUND_S = 0.2
SANITIZED_FACTOR = 5
# After 3 failures in a row Redis is skipped for 0.5 s, doubling up to 5 s: sharing is back within
# the longest skip and a little more once Redis is.
RECOVERY_S = 8.0
L2_METRICS = ("hits", "misses", "errors", "timeouts", "lock_waits", "rejected")
VALUE_SHAPE = re.compile(rb"^(\d+):(\d+):")


def _uid():
    return uuid.uuid4().hex[:12]


def metric(kw, name):
    """The sum of every series of metric `name` of keywayd `kw` (float); fails when it is not exported."""
    text = request(kw.main_port, "GET", "/_keyway/metrics").text
    values = [float(v) for v in re.findall(r"^%s(?:\{[^}]*\})? (\S+)$" % re.escape(name), text, re.M)]
    if not values:
        raise AssertionError("%s is not in keywayd's metrics" % name)
    return sum(values)


def l2(kw):
    """{short name: value} of the keyway_cache_l2_*_total counters of one host."""
    return {m: metric(kw, "keyway_cache_l2_%s_total" % m) for m in L2_METRICS}


def l2_delta(before, after):
    return {m: after[m] - before[m] for m in L2_METRICS}


def counting(marker, delay=0.0):
    """A fake route handler: 200 with a JSON body numbering the requests it served, and a marker (a
    response-body plaintext the Redis scan looks for)."""
    state = {"n": 0}
    lock = threading.Lock()

    def handler(req):
        with lock:
            state["n"] += 1
            n = state["n"]
        return Response.json({"n": n, "marker": marker, "target": req.target}, delay=delay)
    return handler


def shared_section(address, **more):
    redis = {"address": address, "key_prefix": PREFIX}
    redis.update(more)
    return {"shared": {"redis": redis}}


class SharedCacheCase(unittest.TestCase):
    """Hosts with one master key and the same shared secrets, a fake upstream, requests through the
    hosts, and the record of every plaintext of the class."""

    redis = None
    fake = None
    hosts = []
    tokens = []          # the client token of app-alpha on each host (index = host)
    beta_tokens = []     # app-beta (team beta, its own bundleup key) on each host
    needles = set()      # every plaintext that must appear nowhere in Redis

    @classmethod
    def remember(cls, *values):
        for v in values:
            cls.needles.add(v.encode() if isinstance(v, str) else v)

    @classmethod
    def make_hosts(cls, addresses, **redis_settings):
        """One initialised, provisioned and started keywayd per address (the first host's master key
        copied to the others before their init, as an operator adds a host)."""
        cls.hosts, cls.tokens, cls.beta_tokens = [], [], []
        cls.values = {"bundleup": "bu-shared-" + _uid() + _uid(), "bundleiq": "iq-shared-" + _uid() + _uid(),
                      "beta": "bu-beta-" + _uid() + _uid()}
        cls.remember(*cls.values.values())
        ups = {"bundleup-api": {"base_url": cls.fake.url}, "bundleiq": {"base_url": cls.fake.url}}
        for address in addresses:
            kw = Keyway(ups, extra={"cache": shared_section(address, **redis_settings)})
            cls.addClassCleanup(kw.cleanup)
            if cls.hosts:
                kw.state_dir.mkdir(mode=0o700, exist_ok=True)
                shutil.copyfile(cls.hosts[0].state_dir / "master.key", kw.state_dir / "master.key")
                os.chmod(kw.state_dir / "master.key", 0o600)
            kw.init()
            cls.remember((kw.state_dir / "master.key").read_bytes())
            kw.add_team("alpha")
            kw.add_team("beta", upstreams=["bundleup-api"])
            kw.set_secret("bundleup.api_key", cls.values["bundleup"])
            kw.set_secret("bundleiq.api_key", cls.values["bundleiq"])
            kw.set_secret("bundleup.api_key", cls.values["beta"], team="beta")
            cls.tokens.append(kw.add_client("app-alpha", "alpha"))
            cls.beta_tokens.append(kw.add_client("app-beta", "beta"))
            cls.remember(cls.tokens[-1], cls.beta_tokens[-1])
            kw.start()
            cls.hosts.append(kw)

    # ---------------------------------------------------------------------------------------------
    # helpers
    # ---------------------------------------------------------------------------------------------
    def get(self, host, target, beta=False, **kw):
        token = (self.beta_tokens if beta else self.tokens)[host]
        return request(self.hosts[host].main_port, "GET", target, [("X-Keyway-Token", token)], **kw)

    def assertCache(self, resp, status, what=""):
        self.assertEqual(resp.status, 200, "%s: %r" % (what, resp))
        self.assertEqual(resp.header("X-Keyway-Cache"), status, "%s: %r" % (what, resp))
        if status in ("HIT", "STALE"):
            self.assertRegex(resp.header("Age") or "", r"^\d+$", "%s without Age: %r" % (status, resp))
        return resp

    def new_path(self, upstream="bundleup-api", collection="/v1/connections", delay=0.0):
        """A new cacheable path with a counting route on the fake; (client target, upstream path).
        The path, its query value and its body marker are remembered for the Redis scan."""
        u, q = _uid(), "q" + _uid()
        path = "%s/%s" % (collection, u)
        self.fake.route("GET", path, counting("body-" + u, delay))
        self.remember(path, u, q, "body-" + u)
        return "/%s%s?limit=%s" % (upstream, path, q), path

    def upstream_count(self, path):
        return len(self.fake.find(lambda r: r.path == path))

    def wait_refetched(self, host, target, old_body, start):
        """Polls `target` on `host` until it is no longer served `old_body`; returns (response, seconds
        since `start`)."""
        def changed():
            r = self.get(host, target)
            return r if r.status == 200 and r.body != old_body else None
        resp, _ = wait_until(changed, 5, interval=0.005, what="host %d refetching %s" % (host + 1, target))
        return resp, time.monotonic() - start

    def status_shared(self, host):
        return request(self.hosts[host].main_port, "GET", "/_keyway/status").json()["cache"]["shared"]

    def other_config(self, kw, redis):
        """A copy of kw's configuration with another cache.shared.redis section."""
        return kw.config_variant(cache={"shared": {"redis": redis}})


class SharedCacheTest(SharedCacheCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.needles = set()
        cls.redis = RedisServer()
        cls.addClassCleanup(cls.redis.stop)
        cls.fake = FakeUpstream().start()
        cls.addClassCleanup(cls.fake.stop)
        # Everything keywayd sends Redis and publishes from the start, for the scan (test_50).
        cls.monitor = cls.redis.start_monitor()
        cls.messages = cls.redis.subscribe(patterns=["*"])
        cls.make_hosts([cls.redis.address] * 3)
        cls.sanitized = _sanitized(cls.hosts[0].proc.pid)

    def setUp(self):
        self.fake.reset()
        back = self.redis.paused or not self.redis.running
        if self.redis.paused:
            self.redis.resume()
        if not self.redis.running:
            self.redis.start()
        self.redis.set_maxmemory(0)
        if back:   # an earlier test left Redis down: the hosts may still be skipping it
            self.wait_sharing()

    def wait_sharing(self, timeout=RECOVERY_S):
        """Waits until an entry fetched on host 1 is a HIT on hosts 2 and 3 (every host uses Redis
        again, none still skipping it after errors); returns the seconds it took."""
        def shared():
            target, path = self.new_path()
            self.assertCache(self.get(0, target), "MISS")
            return all(self.get(h, target).header("X-Keyway-Cache") == "HIT" for h in (1, 2))
        return wait_until(shared, timeout, interval=0.1, what="sharing through Redis again")[1]

    # ---------------------------------------------------------------------------------------------
    # 10-19: sharing and coalescing
    # ---------------------------------------------------------------------------------------------
    def test_10_entry_fetched_on_host1_is_a_hit_on_hosts_2_and_3(self):
        target, path = self.new_path()
        before = [l2(kw) for kw in self.hosts]
        first = self.assertCache(self.get(0, target), "MISS", "host 1")
        time.sleep(1.2)   # so that an Age carried from host 1's fill is at least 1
        for h in (1, 2):
            r = self.assertCache(self.get(h, target), "HIT", "host %d" % (h + 1))
            self.assertEqual(r.body, first.body)
            self.assertGreaterEqual(int(r.header("Age")), 1, "Age not carried from the first fill: %r" % r)
        self.assertEqual(self.upstream_count(path), 1, self.fake.requests)
        d = [l2_delta(b, l2(kw)) for b, kw in zip(before, self.hosts)]
        self.assertGreaterEqual(d[0]["misses"], 1, d)
        self.assertEqual(d[0]["hits"], 0, d)
        self.assertEqual((d[1]["hits"], d[2]["hits"]), (1, 1), d)
        # Now in host 2's L1: served without asking Redis.
        mid = l2(self.hosts[1])
        self.assertCache(self.get(1, target), "HIT", "host 2 again")
        self.assertEqual(l2_delta(mid, l2(self.hosts[1])), dict.fromkeys(L2_METRICS, 0))
        self.assertEqual(self.upstream_count(path), 1)
        for h, kw in enumerate(self.hosts):
            self.assertEqual(metric(kw, "keyway_cache_l2_up"), 1)
            st = self.status_shared(h)
            self.assertEqual(st["address"], self.redis.address, st)
            self.assertIs(st["up"], True, st)
        # Another identity (team beta, its own key) does not get alpha's entry from Redis.
        b = self.assertCache(self.get(1, target, beta=True), "MISS", "beta on host 2")
        self.assertNotEqual(json.loads(b.body)["n"], json.loads(first.body)["n"])
        self.assertEqual(self.upstream_count(path), 2)

    def test_11_cold_requests_on_three_hosts_make_one_upstream_request(self):
        target, path = self.new_path(delay=0.3)
        before = [l2(kw) for kw in self.hosts]
        results = [None] * 3

        def burst(h):
            raw = build_request("GET", target, [("X-Keyway-Token", self.tokens[h]), ("Host", "127.0.0.1")])
            results[h] = concurrent_requests(self.hosts[h].main_port, [raw] * 100, timeout=20)
        threads = [threading.Thread(target=burst, args=(h,)) for h in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        every = [r for rs in results for r in rs]
        errors = [r for r in every if isinstance(r, Exception)]
        self.assertEqual(errors[:3], [], "%d of 300 failed" % len(errors))
        self.assertEqual(sorted({r.status for r in every}), [200])
        self.assertEqual(len({r.body for r in every}), 1, "hosts served different bodies")
        self.assertTrue({r.header("X-Keyway-Cache") for r in every} <= {"MISS", "HIT"})
        self.assertEqual(self.upstream_count(path), 1, "3 x 100 cold requests made %d upstream requests"
                         % self.upstream_count(path))
        d = [l2_delta(b, l2(kw)) for b, kw in zip(before, self.hosts)]
        print("test_shared_cache: lock waits per host %s" % [x["lock_waits"] for x in d])
        self.assertGreater(max(x["lock_waits"] for x in d), 0, d)
        if not self.sanitized:   # instrumented, a command may overrun the 50 ms bound
            self.assertEqual(sum(x["errors"] + x["timeouts"] for x in d), 0, d)

    # ---------------------------------------------------------------------------------------------
    # 20-39: invalidation and purge
    # ---------------------------------------------------------------------------------------------
    def test_20_a_write_on_host1_makes_hosts_2_and_3_refetch(self):
        u = _uid()
        coll = "/v1/webhooks-%s" % u
        other_target, other_path = self.new_path(collection="/v1/tickets-" + u)
        self.fake.route("GET", coll, counting("body-" + u))
        self.fake.route("DELETE", coll + "/wh_1", Response(204))
        self.remember(coll, u, "body-" + u)
        target = "/bundleup-api" + coll
        old = self.assertCache(self.get(0, target), "MISS").body
        for h in (1, 2):
            self.assertEqual(self.assertCache(self.get(h, target), "HIT").body, old)
        # Another path of the same identity, in Redis but in no L1 but host 1's; and beta's copy.
        self.assertCache(self.get(0, other_target), "MISS")
        beta_old = self.assertCache(self.get(0, target, beta=True), "MISS").body
        d = request(self.hosts[0].main_port, "DELETE", "/bundleup-api" + coll + "/wh_1",
                    [("X-Keyway-Token", self.tokens[0])])
        start = time.monotonic()
        self.assertEqual(d.status, 204, d)
        took = []
        for h in (1, 2):
            r, t = self.wait_refetched(h, target, old, start)
            took.append(t)
            self.assertEqual(r.status, 200, r)
        print("test_shared_cache: invalidation seen by hosts 2 and 3 after %s s" % ", ".join("%.3f" % t for t in took))
        self.assertLess(max(took), INVALIDATION_BOUND_S * (SANITIZED_FACTOR if self.sanitized else 1), took)
        # Host 1 dropped its own copy: refetched, or host 2's new entry from Redis.
        self.assertNotEqual(self.get(0, target).body, old)
        # Host 2 refetched (1 request), host 3 then found host 2's fresh entry in Redis or refetched too.
        self.assertIn(self.upstream_count(coll), (2, 3), self.fake.requests)
        # Redis entries of that (upstream, identity) are unreachable: the other path too.
        self.assertCache(self.get(1, other_target), "MISS", "another path of the same identity")
        self.assertEqual(self.upstream_count(other_path), 2)
        # beta's entry (another identity) is untouched: a HIT from Redis on host 3.
        self.assertEqual(self.assertCache(self.get(2, target, beta=True), "HIT", "beta").body, beta_old)

    def _fill_everywhere(self):
        target, path = self.new_path()
        old = self.assertCache(self.get(0, target), "MISS").body
        for h in (1, 2):
            self.assertCache(self.get(h, target), "HIT")
        return target, path, old

    def test_30_purge_on_host1_purges_the_fleet(self):
        target, path, old = self._fill_everywhere()
        cp = self.hosts[0].ctl("cache", "purge", "--all", check=False)
        start = time.monotonic()
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertRegex(cp.stdout, r"purged \d+ entr")
        self.assertRegex(cp.stdout.lower(), r"shared cache")
        self.assertNotRegex(cp.stdout.lower(), r"not purged")
        for h in (0, 1, 2):
            self.wait_refetched(h, target, old, start)
        self.assertIn(self.upstream_count(path), (2, 3, 4))
        # --json says so too.
        target, path, old = self._fill_everywhere()
        cp = self.hosts[0].ctl("cache", "purge", "--all", "--json", check=False)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIs(json.loads(cp.stdout)["shared"], True, cp.stdout)
        for h in (1, 2):
            self.wait_refetched(h, target, old, time.monotonic())

    # ---------------------------------------------------------------------------------------------
    # 50: nothing readable in Redis, nor in what keywayd sent it
    # ---------------------------------------------------------------------------------------------
    def test_50_nothing_readable_in_redis(self):
        # Fresh entries of both identities, a write (an invalidation message) and a purge.
        target, path, _ = self._fill_everywhere()
        self.assertCache(self.get(2, target, beta=True), "MISS")
        self.fake.route("DELETE", path, Response(204))
        self.assertEqual(request(self.hosts[1].main_port, "DELETE", target.split("?")[0],
                                 [("X-Keyway-Token", self.tokens[1])]).status, 204)
        self.hosts[2].ctl("cache", "purge", "--upstream", "bundleiq")
        target, path, _ = self._fill_everywhere()
        keys = self.redis.keys()
        self.assertTrue(keys, "nothing in Redis")
        for k in keys:
            self.assertTrue(k.startswith(PREFIX.encode()), "a key outside key_prefix: %r" % k)
        values = [v for v in self.redis.dump().values() if isinstance(v, bytes) and VALUE_SHAPE.match(v)]
        self.assertTrue(values, "no `<fresh>:<stale>:sealed` value in Redis")
        # Positive control: a plaintext planted in Redis is found.
        planted = ("planted-plaintext-" + _uid()).encode()
        self.redis.command("SET", PREFIX + "zz-control", b"x" + planted + b"y")
        self.assertIn(planted, self.redis.scan_for([planted]))
        self.redis.command("DEL", PREFIX + "zz-control")
        needles = sorted(self.needles)
        self.assertGreater(len(needles), 20)
        self.assertEqual(self.redis.scan_for(needles), {}, "plaintext in Redis")
        # Nor in any command keywayd sent, nor in a message it published (sealed too).
        commands = self.monitor.stop()
        self.assertTrue(any(c.args and c.args[0].upper() == b"PUBLISH" for c in commands),
                        "no PUBLISH seen: %r" % [c.args[:1] for c in commands[:20]])
        self.assertTrue(self.messages.messages, "no message published")
        found = {}
        blobs = [arg for c in commands for arg in c.args] + [m.data for m in self.messages.messages] + \
                [m.channel for m in self.messages.messages]
        for n in needles:
            forms = encoded_forms(n)
            if any(f in blob for blob in blobs for f in forms):
                found[n] = True
        self.assertEqual(sorted(found), [], "plaintext in a command or a message")
        # The control of that scan: keywayd's keys, in its commands, start with the key prefix.
        self.assertTrue(any(PREFIX.encode() in blob for blob in blobs), "the monitor saw no keyway key")

    # ---------------------------------------------------------------------------------------------
    # 60-79: Redis trouble never fails a request
    # ---------------------------------------------------------------------------------------------
    def test_60_redis_killed_paused_and_restarted_empty_under_load(self):
        before = [l2(kw) for kw in self.hosts]
        with Load(self.hosts, self.tokens) as load:
            time.sleep(0.3)
            self.redis.kill()
            wait_until(lambda: all(metric(kw, "keyway_cache_l2_up") == 0 for kw in self.hosts), 5,
                       what="keyway_cache_l2_up 0 on every host")
            time.sleep(0.5)
            st = self.status_shared(0)
            self.assertIs(st["up"], False, st)
            self.assertTrue(st["last_error"], st)
            after_kill = [l2(kw) for kw in self.hosts]
            for b, a in zip(before, after_kill):
                self.assertGreater(a["errors"], b["errors"], (b, a))
            self.redis.start()   # empty
            took = self.wait_sharing()
            print("test_shared_cache: sharing back %.2f s after Redis restarted empty" % took)
            self.redis.pause()
            try:
                time.sleep(1.0)
                after_pause = [l2(kw) for kw in self.hosts]
            finally:
                self.redis.resume()
            self.assertGreater(sum(a["timeouts"] - b["timeouts"] for b, a in zip(after_kill, after_pause)), 0,
                               after_pause)
            took = self.wait_sharing()
            print("test_shared_cache: sharing back %.2f s after Redis resumed" % took)
            time.sleep(0.2)
        print("test_shared_cache: %d requests served while Redis was killed, restarted and paused, %d failed"
              % (load.ok, len(load.failures)))
        self.assertEqual(load.failures, [])
        self.assertGreater(load.ok, 30)
        for kw in self.hosts:
            wait_until(lambda: metric(kw, "keyway_cache_l2_up") == 1, 5, what="keyway_cache_l2_up back to 1")

    def test_62_purge_with_redis_down_is_local_and_exit_2(self):
        target, path, old = self._fill_everywhere()
        self.redis.kill()
        t = time.monotonic()
        cp = self.hosts[0].ctl("cache", "purge", "--all", check=False)
        self.assertLess(time.monotonic() - t, 5)
        self.assertEqual(cp.returncode, 2, (cp.stdout, cp.stderr))
        self.assertRegex((cp.stdout + cp.stderr).lower(), r"shared cache.*not purged")
        self.assertRegex(cp.stdout, r"purged \d+ entr")
        cp = self.hosts[0].ctl("cache", "purge", "--all", "--json", check=False)
        self.assertEqual(cp.returncode, 2, (cp.stdout, cp.stderr))
        self.assertEqual(json.loads(cp.stdout)["shared"], "unavailable", cp.stdout)
        # The local purge happened: host 1 refetches; host 2 keeps its L1 copy.
        self.assertNotEqual(self.assertCache(self.get(0, target), "MISS").body, old)
        self.assertEqual(self.assertCache(self.get(1, target), "HIT").body, old)

    def test_65_redis_full_still_serves_and_counts(self):
        self.wait_sharing()
        before = [l2(kw) for kw in self.hosts]
        self.redis.set_maxmemory(1, "noeviction")
        for _ in range(5):
            target, path = self.new_path()
            for h in range(3):
                r = self.get(h, target)
                self.assertEqual(r.status, 200, r)
                self.assertIn(r.header("X-Keyway-Cache"), ("MISS", "HIT"), r)
        d = [l2_delta(b, l2(kw)) for b, kw in zip(before, self.hosts)]
        self.assertGreater(sum(x["errors"] for x in d), 0, d)
        self.redis.set_maxmemory(0)
        self.wait_sharing()

    def _values(self):
        """{key: value} of the entry values in Redis (VALUE_SHAPE)."""
        return {k: v for k, v in self.redis.dump().items() if isinstance(v, bytes) and VALUE_SHAPE.match(v)}

    def _tamper(self, change):
        """Applies change(sealed bytes) -> bytes to the sealed part of every value in Redis. The fill
        stores its entry in Redis after it answered: wait for it first."""
        wait_until(self._values, 5.0, what="an entry value in Redis")
        tampered = set()
        for key, value in self._values().items():
            m = VALUE_SHAPE.match(value)
            bad = value[:m.end()] + change(value[m.end():])
            self.redis.command("SET", key, bad)
            tampered.add(bad)
        self.assertGreater(len(tampered), 0, "no value to tamper with")
        return tampered

    def test_70_a_value_tampered_with_is_rejected_and_refetched(self):
        def flip(sealed):
            i = len(sealed) // 2
            return sealed[:i] + bytes([sealed[i] ^ 0x01]) + sealed[i + 1:]
        for what, change in (("a flipped byte", flip), ("other bytes", lambda s: os.urandom(len(s)))):
            with self.subTest(what):
                self.redis.flushall()
                target, path = self.new_path()
                first = self.assertCache(self.get(0, target), "MISS")
                tampered = self._tamper(change)
                before = l2(self.hosts[1])
                r = self.assertCache(self.get(1, target), "MISS", "host 2 after the tampering")
                self.assertEqual(json.loads(r.body)["n"], 2, "the tampered value was served")
                self.assertNotEqual(r.body, first.body)
                self.assertGreaterEqual(l2_delta(before, l2(self.hosts[1]))["rejected"], 1)
                self.assertEqual(self.upstream_count(path), 2)
                # Refetched by host 2 under the key's lock (a rejected value is a miss); its fill
                # overwrites the value in Redis just after it answered. Then host 3 gets host 2's entry.
                wait_until(lambda: (self._values() and not (set(self._values().values()) & tampered)), 5.0,
                           what="host 2's entry in place of the tampered value")
                before = l2(self.hosts[2])
                third = self.get(2, target)
                self.assertEqual(l2_delta(before, l2(self.hosts[2]))["rejected"], 0,
                                 "host 3 still found the tampered value after host 2 answered")
                self.assertEqual(self.assertCache(third, "HIT", "host 3").body, r.body)
                self.assertEqual(self.upstream_count(path), 2)

    def test_71_a_value_tampered_with_is_refetched_once_by_the_fleet(self):
        # A rejected value is a miss: the fill lock coalesces the refetch, as for a cold key.
        self.redis.flushall()
        target, path = self.new_path(delay=0.3)
        self.assertCache(self.get(0, target), "MISS")
        self._tamper(lambda s: os.urandom(len(s)))
        out = {}

        def fetch(h):
            out[h] = self.get(h, target)
        threads = [threading.Thread(target=fetch, args=(h,)) for h in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(out[1].body, out[2].body, "hosts 2 and 3 each refetched: %r %r" % (out[1], out[2]))
        self.assertEqual(self.upstream_count(path), 2, "the tampered value was refetched by both hosts")

    # ---------------------------------------------------------------------------------------------
    # 90: configuration
    # ---------------------------------------------------------------------------------------------
    def test_90_bad_shared_cache_config_names_key_and_line(self):
        kw = self.hosts[0]
        ok = {"address": self.redis.address}
        cases = [
            (dict(ok, tls={"ca_file": "/etc/ssl/certs/ca-certificates.crt"}), "cache.shared.redis.tls",
             r"(?i)^(?=.*hiredis)(?=.*TLS)(?=.*unix socket)"),
            (dict(ok, address="not an address"), "cache.shared.redis.address", None),
            (dict(ok, address="127.0.0.1:99999"), "cache.shared.redis.address", None),
            (dict(ok, address="relative/redis.sock"), "cache.shared.redis.address", None),
            ({"key_prefix": PREFIX}, "cache.shared.redis", None),
            (dict(ok, timeout="0s"), "cache.shared.redis.timeout", None),
            (dict(ok, max_connections=0), "cache.shared.redis.max_connections", None),
            (dict(ok, max_connections=65), "cache.shared.redis.max_connections", None),
            (dict(ok, password="inline-pw"), "cache.shared.redis.password", None),
            (dict(ok, password_file=str(kw.dir / "no-such-redis-pass")), "cache.shared.redis.password_file",
             None),
        ]
        for redis, key, message in cases:
            with self.subTest(key=key, redis=redis):
                path = self.other_config(kw, redis)
                chk = subprocess.run([binary("keywayd"), "--config", str(path), "--check-config"],
                                     capture_output=True, text=True, timeout=30)
                self.assertEqual(chk.returncode, 1, chk.stderr)
                self.assertRegex(chk.stderr, r"%s:\d+: %s" % (re.escape(path.name), re.escape(key)))
                if message:
                    self.assertRegex(chk.stderr, message)
                self.assertNotIn("inline-pw", chk.stderr)
                cp = kw.ctl("--config", path, "cache", "stats", config=False, check=False)
                self.assertEqual(cp.returncode, 1, cp.stderr)
                self.assertIn(key, cp.stderr)
        # A good section passes, and so does the shipped default (its `shared:` block commented out).
        for path in (self.other_config(kw, dict(ok, timeout="20ms", max_connections=64)),
                     kw.config_path, REPO / "conf" / "keyway.yaml"):
            chk = subprocess.run([binary("keywayd"), "--config", str(path), "--check-config"],
                                 capture_output=True, text=True, timeout=30)
            self.assertEqual(chk.returncode, 0, chk.stderr)


class SharedCacheAuthTest(SharedCacheCase):
    """A Redis with a password (requirepass; keyway reads it from password_file) and a unix socket:
    host 1 over TCP, host 2 over the socket, sharing entries; the password in no argv, environment or
    log line."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.needles = set()
        cls.password = "redis-pw-" + _uid() + _uid()
        cls.redis = RedisServer(password=cls.password, unix_socket=True)
        cls.addClassCleanup(cls.redis.stop)
        cls.fake = FakeUpstream().start()
        cls.addClassCleanup(cls.fake.stop)
        cls.remember(cls.password)
        cls.make_hosts([cls.redis.address, cls.redis.socket_path], password_file=cls.redis.password_file)

    def test_sharing_with_a_password_over_tcp_and_a_unix_socket(self):
        self.fake.reset()
        target, path = self.new_path()
        first = self.assertCache(self.get(0, target), "MISS", "host 1 (TCP)")
        self.assertEqual(self.assertCache(self.get(1, target), "HIT", "host 2 (unix socket)").body, first.body)
        self.assertEqual(self.upstream_count(path), 1)
        target, path = self.new_path()
        first = self.assertCache(self.get(1, target), "MISS", "host 2")
        self.assertEqual(self.assertCache(self.get(0, target), "HIT", "host 1").body, first.body)
        self.assertEqual(self.upstream_count(path), 1)
        for kw in self.hosts:
            self.assertEqual(metric(kw, "keyway_cache_l2_errors_total"), 0)
            for what in ("cmdline", "environ"):
                with open("/proc/%d/%s" % (kw.proc.pid, what), "rb") as f:
                    self.assertNotIn(self.password.encode(), f.read(), "the Redis password in keywayd's %s" % what)
            self.assertNotIn(self.password, kw.stderr_text())
        self.assertEqual(self.redis.scan_for(sorted(self.needles)), {})

    def test_wrong_password_serves_without_sharing(self):
        self.fake.reset()
        kw = self.hosts[0]
        wrong = kw.dir / "wrong-pass"
        wrong.write_text("not-the-password-" + _uid() + "\n")
        os.chmod(wrong, 0o600)
        path = self.other_config(kw, {"address": self.redis.address, "key_prefix": PREFIX,
                                      "password_file": str(wrong)})
        cp = kw.ctl("--config", path, "cache", "purge", "--all", config=False, check=False)
        self.assertEqual(cp.returncode, 2, (cp.stdout, cp.stderr))
        self.assertRegex((cp.stdout + cp.stderr).lower(), r"shared cache.*not purged")
        self.assertNotIn(self.password, cp.stdout + cp.stderr)
        self.assertNotIn(wrong.read_text().strip(), cp.stdout + cp.stderr)


if __name__ == "__main__":
    unittest.main()
