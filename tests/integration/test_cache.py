"""test_cache.py: the response cache end to end (docs/cache.md, docs/cli.md `keywayctl cache`): X-Keyway-Cache and Age
as clients see them, and the fake upstream's request log as the proof of what was (not) forwarded."""

import json
import re
import time
import unittest
import uuid

from harness import (FakeUpstream, Keyway, KeywayTestCase, Response, build_request,
                     concurrent_requests, raise_fd_limit, request, to_yaml, with_tls)


def _uid():
    return uuid.uuid4().hex[:12]


def _counting(prefix=""):
    """A fake route handler answering 200 with a body that numbers the requests it served."""
    state = {"n": 0}

    def handler(req):
        state["n"] += 1
        return Response.json({"n": state["n"], "target": req.target, "tag": prefix})
    return handler


class CacheTestBase(KeywayTestCase):
    """KeywayTestCase with a `cache:` section (CACHE scalars, RULES maps) and cache assertions."""

    RULES = []
    CACHE = {}

    @classmethod
    def cache_section(cls):
        lines = ["cache:"]
        for k, v in cls.CACHE.items():
            lines.append("  %s: %s" % (k, v))
        if cls.RULES:
            # JSON is valid YAML flow syntax: enough for a list of rule maps.
            lines.append("  rules: %s" % json.dumps(cls.RULES))
        return "\n".join(lines) if len(lines) > 1 else ""

    @classmethod
    def setUpClass(cls):
        # KeywayTestCase.setUpClass, except that the config file gets the cache section (to_yaml
        # has no lists of maps) before keywayctl and keywayd read it.
        unittest.TestCase.setUpClass()
        raise_fd_limit()
        cls.fake = cls.make_fake()
        cls.addClassCleanup(cls.fake.stop)
        cls.kw = Keyway(with_tls(cls.upstreams()), limits=cls.LIMITS, extra=cls.extra_config())
        cls.addClassCleanup(cls.kw.cleanup)
        section = cls.cache_section()
        if section:
            cls.kw.write_config(to_yaml(cls.kw.config) + "\n" + section + "\n")
        cls.kw.init()
        cls.provision()
        cls.kw.start()

    def get(self, path, headers=None, client="app-alpha"):
        return self.call("GET", path, headers=headers, client=client)

    def assertCache(self, resp, status):
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.header("X-Keyway-Cache"), status, resp)
        if status in ("HIT", "STALE"):
            age = resp.header("Age")
            self.assertIsNotNone(age, "%s without Age: %r" % (status, resp))
            self.assertRegex(age, r"^\d+$")
        return resp

    def upstream_count(self, path_prefix):
        return len(self.fake.find(lambda r: r.target.startswith(path_prefix)))


class CacheTest(CacheTestBase):
    """Default rules plus short-window rules for the stale tests; a second fake behind
    bundleup-unify that a test stops."""

    RULES = [
        {"upstream": "bundleup-api", "path": "/v1/swr/**", "ttl": "1s",
         "stale_while_revalidate": "30s", "stale_if_error": "0s"},
        {"upstream": "bundleup-api", "path": "/v1/sie/**", "ttl": "1s",
         "stale_while_revalidate": "0s", "stale_if_error": "1h"},
        {"upstream": "bundleup-unify", "path": "/v1/sie/**", "ttl": "1s",
         "stale_while_revalidate": "0s", "stale_if_error": "1h"},
    ]

    fake2 = None

    @classmethod
    def upstreams(cls):
        cls.fake2 = FakeUpstream().start()
        cls.addClassCleanup(cls.fake2.stop)
        ups = super().upstreams()
        ups["bundleup-unify"] = {"base_url": cls.fake2.url}
        return ups

    @classmethod
    def provision(cls):
        super().provision()
        # gamma uses the shared bundleup.api_key, as alpha does: they share entries (docs/cache.md).
        cls.kw.add_team("gamma")
        cls.tokens["app-gamma"] = cls.kw.add_client("app-gamma", "gamma")

    def test_miss_then_hit_with_one_upstream_request(self):
        p = "/v1/webhooks/%s" % _uid()
        first = self.assertCache(self.get("/bundleup-api" + p + "?limit=5"), "MISS")
        second = self.assertCache(self.get("/bundleup-api" + p + "?limit=5"), "HIT")
        self.assertEqual(first.body, second.body)
        self.assertEqual(self.upstream_count(p), 1, self.fake.requests)
        self.assertLessEqual(int(second.header("Age")), 2)

    def test_query_order_does_not_matter(self):
        p = "/v1/connections/%s" % _uid()
        self.assertCache(self.get("/bundleup-api" + p + "?a=1&b=2&limit=5"), "MISS")
        self.assertCache(self.get("/bundleup-api" + p + "?limit=5&b=2&a=1"), "HIT")
        self.assertCache(self.get("/bundleup-api" + p + "?b=2&limit=5&a=1"), "HIT")
        self.assertEqual(self.upstream_count(p), 1)
        # A different value is a different key.
        self.assertCache(self.get("/bundleup-api" + p + "?a=1&b=3&limit=5"), "MISS")
        self.assertEqual(self.upstream_count(p), 2)

    def test_no_cross_identity_hits(self):
        p = "/v1/webhooks/%s" % _uid()
        self.fake.route("GET", p, _counting())
        a = self.assertCache(self.get("/bundleup-api" + p, client="app-alpha"), "MISS")
        b = self.assertCache(self.get("/bundleup-api" + p, client="app-beta"), "MISS")
        self.assertNotEqual(a.body, b.body)
        self.assertEqual(self.upstream_count(p), 2, "beta (own secret) was served alpha's entry")
        self.assertEqual(self.assertCache(self.get("/bundleup-api" + p, client="app-alpha"), "HIT").body,
                         a.body)
        self.assertEqual(self.assertCache(self.get("/bundleup-api" + p, client="app-beta"), "HIT").body,
                         b.body)
        # gamma is injected the same shared secret as alpha: same identity, shared entry.
        self.assertEqual(self.assertCache(self.get("/bundleup-api" + p, client="app-gamma"), "HIT").body,
                         a.body)
        self.assertEqual(self.upstream_count(p), 2)

        # BU-Connection-Id is part of the identity.
        q = "/v1/tickets/%s" % _uid()
        self.fake.route("GET", q, _counting())
        c1 = self.assertCache(self.get("/bundleup-api" + q, [("BU-Connection-Id", "conn_1")]), "MISS")
        c2 = self.assertCache(self.get("/bundleup-api" + q, [("BU-Connection-Id", "conn_2")]), "MISS")
        self.assertNotEqual(c1.body, c2.body)
        self.assertCache(self.get("/bundleup-api" + q), "MISS")
        self.assertEqual(self.assertCache(self.get("/bundleup-api" + q, [("BU-Connection-Id", "conn_1")]),
                                          "HIT").body, c1.body)
        self.assertEqual(self.upstream_count(q), 3)

    def test_proxy_is_always_bypass(self):
        p = "/v1/proxy-%s" % _uid()
        for _ in range(2):
            r = self.get("/bundleup-proxy" + p, [("BU-Connection-Id", "conn_1")])
            self.assertEqual(r.header("X-Keyway-Cache"), "BYPASS", r)
            self.assertFalse(r.has_header("Age"), r)
        self.assertEqual(self.upstream_count(p), 2)

    def test_cache_control_no_store_bypasses_and_no_cache_refetches(self):
        p = "/v1/channels/%s" % _uid()
        self.fake.route("GET", p, _counting())
        r = self.get("/bundleup-api" + p, [("Cache-Control", "no-store")])
        self.assertEqual(r.header("X-Keyway-Cache"), "BYPASS", r)
        # no-store wrote nothing: the next normal request misses.
        first = self.assertCache(self.get("/bundleup-api" + p), "MISS")
        self.assertEqual(self.upstream_count(p), 2)
        self.assertCache(self.get("/bundleup-api" + p), "HIT")
        # no-store on a cached key does not read it either.
        r = self.get("/bundleup-api" + p, [("Cache-Control", "no-store")])
        self.assertEqual(r.header("X-Keyway-Cache"), "BYPASS", r)
        self.assertEqual(self.upstream_count(p), 3)
        # no-cache fetches fresh and stores it.
        fresh = self.assertCache(self.get("/bundleup-api" + p, [("Cache-Control", "no-cache")]), "MISS")
        self.assertEqual(self.upstream_count(p), 4)
        self.assertNotEqual(fresh.body, first.body)
        again = self.assertCache(self.get("/bundleup-api" + p), "HIT")
        self.assertEqual(again.body, fresh.body)
        self.assertEqual(self.upstream_count(p), 4)

    def test_concurrent_cold_requests_make_one_upstream_request(self):
        p = "/v1/herd/%s" % _uid()
        self.fake.route("GET", p, Response.json({"herd": p, "pad": "x" * 512}, delay=0.3))
        raw = build_request("GET", "/bundleup-api" + p,
                            [("X-Keyway-Token", self.token()), ("Host", "127.0.0.1")])
        results = concurrent_requests(self.port, [raw] * 500, timeout=20)
        errors = [r for r in results if isinstance(r, Exception)]
        self.assertEqual(errors[:3], [], "%d of 500 failed" % len(errors))
        self.assertEqual(sorted({r.status for r in results}), [200])
        self.assertEqual(len({r.body for r in results}), 1, "waiters got different bodies")
        self.assertEqual(json.loads(results[0].body)["herd"], p)
        self.assertEqual(self.upstream_count(p), 1, "500 cold requests made %d upstream requests"
                         % self.upstream_count(p))
        kinds = {r.header("X-Keyway-Cache") for r in results}
        self.assertTrue(kinds <= {"MISS", "HIT"}, kinds)

    def test_stale_while_revalidate_serves_stale_and_refreshes_once(self):
        p = "/v1/swr/%s" % _uid()
        self.fake.route("GET", p, _counting())
        first = self.assertCache(self.get("/bundleup-api" + p), "MISS")
        time.sleep(1.5)
        stale = self.assertCache(self.get("/bundleup-api" + p), "STALE")
        self.assertEqual(stale.body, first.body)
        self.assertGreaterEqual(int(stale.header("Age")), 1)
        # Another request while the refresh may still run: stale or the refreshed entry, never a
        # second refresh.
        second = self.get("/bundleup-api" + p)
        self.assertIn(second.header("X-Keyway-Cache"), ("STALE", "HIT"), second)
        self.fake.wait_for_requests(2, timeout=3)
        time.sleep(0.3)
        seen = self.fake.find(lambda r: r.target.startswith(p))
        self.assertEqual(len(seen), 2, "expected exactly one background refresh; the fake saw %s, answers %s / %s; "
                         "keywayd said: %s" % (
                             [(r.conn_id, r.seq, round(r.received_at - seen[0].received_at, 3)) for r in seen],
                             stale.header("X-Keyway-Cache"), second.header("X-Keyway-Cache"),
                             self.kw.stderr_tail(15)))
        refreshed = self.assertCache(self.get("/bundleup-api" + p), "HIT")
        self.assertEqual(json.loads(refreshed.body)["n"], 2)
        self.assertEqual(self.upstream_count(p), 2)

    def test_stale_if_error_on_5xx(self):
        p = "/v1/sie/%s" % _uid()
        self.fake.route("GET", p, Response.json({"good": True}), times=1)
        first = self.assertCache(self.get("/bundleup-api" + p), "MISS")
        self.fake.route("GET", p, Response.json({"error": "down"}, status=503))
        time.sleep(1.2)  # past ttl (1 s) + swr (0 s), within stale_if_error (1 h)
        stale = self.assertCache(self.get("/bundleup-api" + p), "STALE")
        self.assertEqual(stale.body, first.body)
        self.assertEqual(self.upstream_count(p), 2, "the upstream was not asked before serving stale")

    def test_stale_if_error_with_upstream_down(self):
        p = "/v1/sie/%s" % _uid()
        first = self.assertCache(self.get("/bundleup-unify" + p, [("BU-Connection-Id", "c1")]), "MISS")
        self.assertEqual(len(self.fake2.find(lambda r: r.target.startswith(p))), 1)
        self.fake2.stop()  # connections are now refused
        time.sleep(1.2)
        stale = self.assertCache(self.get("/bundleup-unify" + p, [("BU-Connection-Id", "c1")]), "STALE")
        self.assertEqual(stale.body, first.body)

    def test_successful_delete_invalidates_the_collection(self):
        self.assertCache(self.get("/bundleup-api/v1/webhooks?limit=5"), "MISS")
        self.assertCache(self.get("/bundleup-api/v1/webhooks?limit=5"), "HIT")
        self.fake.route("DELETE", "/v1/webhooks/wh_1", Response(204))
        d = self.call("DELETE", "/bundleup-api/v1/webhooks/wh_1")
        self.assertEqual(d.status, 204, d)
        self.assertCache(self.get("/bundleup-api/v1/webhooks?limit=5"), "MISS")
        self.assertEqual(self.upstream_count("/v1/webhooks?limit=5"), 2)

    def test_keywayctl_purge_all_while_running(self):
        p = "/v1/notes/%s" % _uid()
        self.assertCache(self.get("/bundleiq" + p), "MISS")
        self.assertCache(self.get("/bundleiq" + p), "HIT")
        stats = self.kw.ctl("cache", "stats").stdout
        self.assertRegex(stats, r"entries:\s+[1-9]")
        self.assertRegex(stats, r"healthy:\s+yes")
        self.assertRegex(stats, r"hit ratio:\s+\d+\.\d%")
        refused = self.kw.ctl("cache", "purge", check=False)
        self.assertEqual(refused.returncode, 1, refused)
        self.assertIn("--all", refused.stderr)
        self.assertCache(self.get("/bundleiq" + p), "HIT")
        cp = self.kw.ctl("cache", "purge", "--all")
        self.assertRegex(cp.stdout, r"purged [1-9]\d* entr")
        self.assertCache(self.get("/bundleiq" + p), "MISS")
        self.assertEqual(self.upstream_count(p), 2)

    def test_keywayctl_scoped_purge_while_running(self):
        p = "/v1/connections/%s" % _uid()
        q = "/v1/notes/%s" % _uid()
        self.assertCache(self.get("/bundleup-api" + p), "MISS")
        self.assertCache(self.get("/bundleiq" + q), "MISS")
        cp = self.kw.ctl("cache", "purge", "--upstream", "bundleup-api", "--prefix", p)
        self.assertIn("purged 1 entry", cp.stdout)
        self.assertCache(self.get("/bundleup-api" + p), "MISS")
        self.assertCache(self.get("/bundleiq" + q), "HIT")

    def test_zz_persists_across_restart(self):
        p = "/v1/webhooks/%s" % _uid()
        first = self.assertCache(self.get("/bundleup-api" + p), "MISS")
        self.assertCache(self.get("/bundleup-api" + p), "HIT")
        self.kw.stop()
        self.assertEqual(self.kw.exit_code, 0, self.kw.stderr_tail())
        self.kw.start()
        again = self.assertCache(self.get("/bundleup-api" + p), "HIT")
        self.assertEqual(again.body, first.body)
        self.assertEqual(self.upstream_count(p), 1, "the restart lost the entry")


class CacheRefreshBoundTest(CacheTestBase):
    """cache.max_background_refreshes: 1. Keys that go stale together are refreshed one at a time;
    the stale entries are still served meanwhile, and a held-back refresh starts on a later hit."""

    CACHE = {"max_background_refreshes": 1}
    RULES = [{"upstream": "bundleup-api", "path": "/v1/wave/**", "ttl": "1s",
              "stale_while_revalidate": "1h", "stale_if_error": "0s"}]

    def metric(self, name):
        text = request(self.kw.main_port, "GET", "/_keyway/metrics").text
        m = re.search(r'^%s\{upstream="bundleup-api"\} (\d+)$' % re.escape(name), text, re.M)
        self.assertTrue(m, "%s missing from the metrics" % name)
        return int(m.group(1))

    def test_an_expiry_wave_refreshes_within_the_bound(self):
        u = _uid()
        paths = ["/v1/wave/%s/%d" % (u, i) for i in range(3)]
        served = {"n": 0}

        def slow_counting(req):
            served["n"] += 1
            # Refreshes (every request after the three fills) take 2 s: long enough for the
            # other stale hits to arrive while the first refresh still runs.
            return Response.json({"n": served["n"]}, delay=2.0 if served["n"] > 3 else 0)
        self.fake.route("GET", "/v1/wave/%s/*" % u, slow_counting)
        for p in paths:
            self.assertCache(self.get("/bundleup-api" + p), "MISS")
        deferred_before = self.metric("keyway_cache_refreshes_deferred_total")
        time.sleep(1.5)  # all three stale
        for p in paths:
            self.assertCache(self.get("/bundleup-api" + p), "STALE")
        self.fake.wait_for_requests(4, timeout=3)
        self.assertEqual(len(self.fake.find(lambda r: r.target.startswith("/v1/wave/" + u))), 4,
                         "the bound of 1 let more than one refresh out")
        self.assertEqual(self.upstream_count(paths[0]), 2)
        self.assertEqual(self.metric("keyway_cache_refreshes_deferred_total") - deferred_before, 2)
        self.assertEqual(self.metric("keyway_cache_background_refreshes"), 1)
        # The refresh lands and frees its slot; a later stale hit on a held-back key starts its own.
        deadline = time.time() + 10
        while self.metric("keyway_cache_background_refreshes") != 0 and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(self.metric("keyway_cache_background_refreshes"), 0)
        self.assertCache(self.get("/bundleup-api" + paths[0]), "HIT")
        self.assertCache(self.get("/bundleup-api" + paths[1]), "STALE")
        self.fake.wait_for_requests(5, timeout=3)
        self.assertEqual(self.upstream_count(paths[1]), 2)
        self.assertEqual(self.upstream_count(paths[2]), 1)


class CacheEvictionTest(CacheTestBase):
    """A 1 MiB cache filled with ~200 KiB bodies: least-recently-used entries go first."""

    CACHE = {"max_bytes": "1MiB"}

    def test_lru_eviction_under_a_small_bound(self):
        u = _uid()
        body = "y" * (200 * 1024)
        self.fake.route("GET", "/v1/big/%s/*" % u, Response(200, headers=[("Content-Type", "text/plain")],
                                                          body=body))
        paths = ["/v1/big/%s/%d" % (u, i) for i in range(12)]
        for p in paths:
            self.assertCache(self.get("/bundleup-api" + p), "MISS")
            time.sleep(0.05)
        time.sleep(1.5)  # the writer applies puts and evictions in batches
        stats = self.kw.ctl("cache", "stats").stdout
        m = re.search(r"evictions:\s+(\d+)", stats)
        self.assertTrue(m and int(m.group(1)) > 0, stats)
        b = re.search(r"bytes:\s+(\d+) B.* of max (\d+) B", stats)
        self.assertTrue(b, stats)
        self.assertLessEqual(int(b.group(1)), int(b.group(2)))
        self.assertEqual(int(b.group(2)), 1 << 20)
        # The newest key is still there; the oldest was evicted.
        self.assertCache(self.get("/bundleup-api" + paths[-1]), "HIT")
        self.assertCache(self.get("/bundleup-api" + paths[0]), "MISS")
        self.assertEqual(self.upstream_count(paths[0]), 2)


if __name__ == "__main__":
    unittest.main()
