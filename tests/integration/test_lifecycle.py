"""test_lifecycle.py: keywayd's life under a service manager (docs/operations.md, docs/http.md): WATCHDOG=1 pings
that depend on a working serving path, the SIGTERM drain (stop accepting, finish in-flight requests,
503 on open connections, exit 0), SIGHUP reload under load, and the operational metrics.

systemd is played by a unix datagram socket bound by the test (NOTIFY_SOCKET, WATCHDOG_USEC), as in
test_systemd.py.

Covered: pings follow passing self-checks (each one a real GET /_keyway/health through the main
listener); no ping while the main listener cannot accept (descriptor limit lowered from outside with
prlimit, the hermetic stand-in for a wedged accept loop), pings resume when it can again; a listener
full at limits.max_connections still counts as alive.
Not covered here: a single wedged reactor thread or a stuck upstream I/O thread (no hermetic way to
freeze one thread of another process: the I/O-thread probe is only seen passing), the compat
listeners (not self-checked), and what systemd itself does with missing pings (SIGABRT, then
Restart=on-failure), which needs a real manager (test_systemd.RealSystemdUserTest when one is usable)."""

import json
import os
import re
import resource
import signal
import socket
import threading
import time
import unittest

from harness import (ConnectionClosed, FakeUpstream, Keyway, RawConnection, Response, build_request,
                     concurrent_requests, raise_fd_limit, request, to_yaml)

WATCHDOG_USEC = 600000           # self-check rounds every 0.2 s
ROUND = WATCHDOG_USEC / 3 / 1e6


class NotifySocket:
    """A bound AF_UNIX datagram socket playing systemd's notify socket; keeps (time, fields)."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages = []
        self._lock = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.partition("=")[::2] for line in data.decode("utf-8", "replace").split("\n")
                          if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))
                self._lock.notify_all()

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.sock.close()

    def fields(self, start=0):
        with self._lock:
            return [f for _, f in self.messages[start:]]

    def count(self):
        with self._lock:
            return len(self.messages)

    def pings(self, since=0.0, until=None):
        with self._lock:
            return [t for t, f in self.messages
                    if f.get("WATCHDOG") == "1" and t >= since and (until is None or t < until)]

    def wait_for(self, pred, start=0, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for i in range(start, len(self.messages)):
                    if pred(self.messages[i][1]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(min(left, 0.1))


def parse_metrics(text):
    """Prometheus text format -> ({family: type}, [(name, {label: value}, float)]). Fails on a
    malformed line, so the exposition format itself is under test."""
    types, samples = {}, []
    sample_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            if name in types:
                raise AssertionError("TYPE repeated for %s" % name)
            types[name] = kind
            continue
        if line.startswith("#"):
            continue
        m = sample_re.match(line)
        if not m:
            raise AssertionError("malformed sample line %r" % line)
        name, raw_labels, value = m.groups()
        labels = {}
        if raw_labels:
            pos = 0
            while pos < len(raw_labels):
                lm = label_re.match(raw_labels, pos)
                if not lm:
                    raise AssertionError("malformed labels in %r" % line)
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        samples.append((name, labels, float(value)))
    return types, samples


def metric(samples, name, **labels):
    """The value of the one sample `name` with exactly these labels (None if absent)."""
    for n, lab, v in samples:
        if n == name and lab == labels:
            return v
    return None


def scrape(port):
    resp = request(port, "GET", "/_keyway/metrics")
    assert resp.status == 200, resp
    return parse_metrics(resp.text)


class LifecycleCase(unittest.TestCase):
    """One fake upstream behind `bundleiq` and one keywayd per test, with a team, a client and the
    bundleiq key provisioned; NOTIFY_SOCKET (and WATCHDOG_USEC when WATCHDOG) point at self.notify."""

    WATCHDOG = False
    LIMITS = None
    SERVER = None
    CACHE_SECTION = ""

    def setUp(self):
        raise_fd_limit()
        self.fake = FakeUpstream().start()
        self.addCleanup(self.fake.stop)
        extra = {}
        if self.SERVER:
            extra["server"] = dict(self.SERVER)
        self.kw = Keyway({"bundleiq": {"base_url": self.fake.url, "timeout": "30s"}},
                         limits=self.LIMITS, extra=extra)
        self.addCleanup(self.kw.cleanup)
        self.write_config()
        self.kw.init()
        self.kw.add_team("ops")
        self.secret = "iq-secret-%s" % os.urandom(8).hex()
        self.kw.set_secret("bundleiq.api_key", self.secret)
        self.token = self.kw.add_client("app-ops", "ops")
        self.notify = NotifySocket(self.kw.dir / "notify.sock")
        self.addCleanup(self.notify.close)
        self.kw.env["NOTIFY_SOCKET"] = self.notify.path
        if self.WATCHDOG:
            self.kw.env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)

    def write_config(self, cache_section=None, **overrides):
        cfg = dict(self.kw.config)
        cfg.update(overrides)
        section = self.CACHE_SECTION if cache_section is None else cache_section
        self.kw.write_config(to_yaml(cfg) + "\n" + section + "\n")

    def start(self):
        self.kw.start()
        self.assertIsNotNone(self.notify.wait_for(lambda f: f.get("READY") == "1"), "no READY=1")
        return self.kw.main_port

    def get(self, target, conn=None, headers=None, timeout=10.0):
        hdrs = [("X-Keyway-Token", self.token)] + list(headers or [])
        if conn is not None:
            return conn.request("GET", target, hdrs, timeout=timeout)
        return request(self.kw.main_port, "GET", target, hdrs, timeout=timeout)

    def raw_get(self, target):
        return build_request("GET", target, [("X-Keyway-Token", self.token)],
                             host="127.0.0.1:%d" % self.kw.main_port)

    def records_after(self, index, msg):
        return [r for r in self.kw.records()[index:] if r.get("msg") == msg]


# ------------------------------------------------------------------------------------------------
# Watchdog
# ------------------------------------------------------------------------------------------------

class WatchdogTest(LifecycleCase):
    WATCHDOG = True

    def test_pings_are_earned_by_health_checks_through_the_listener(self):
        port = self.start()
        self.assertIsNotNone(self.kw.wait_for_record(lambda r: r.get("msg") == "watchdog enabled"))
        t0 = time.monotonic()
        time.sleep(1.2)
        pings = self.notify.pings(since=t0, until=t0 + 1.2)
        self.assertGreaterEqual(len(pings), 3, "too few WATCHDOG=1 in 1.2 s: %d" % len(pings))
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        self.assertLess(max(gaps), WATCHDOG_USEC / 1e6, "a ping gap reached WatchdogSec: %r" % gaps)
        # Each ping follows a real request through the main listener: the access log shows the
        # watchdog's own GET /_keyway/health answered 200, at least one per ping.
        checks = [r for r in self.kw.access_records()
                  if r.get("path") == "/_keyway/health" and r.get("status") == 200]
        # (The access line is written just after the response, so the latest ping may be ahead.)
        self.assertGreaterEqual(len(checks), len(self.notify.pings()) - 1, "pings without a self-check")
        self.assertEqual(request(port, "GET", "/_keyway/ready").status, 200)

    def test_no_ping_while_the_listener_cannot_accept(self):
        # Hermetic stand-in for a wedged listener: keywayd's descriptor limit is lowered so that
        # exactly one more descriptor fits. The self-check's own socket takes it and connects (the
        # kernel completes the handshake), but keywayd cannot accept(): EMFILE, no answer, no ping.
        # Raising the limit again lets the very same checks pass and the pings resume.
        self.start()
        self.assertIsNotNone(self.notify.wait_for(lambda f: f.get("WATCHDOG") == "1"), "no ping at all")
        pid = self.kw.proc.pid
        old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        mark = len(self.kw.records())
        quiet = False
        try:
            # Only descriptors open in three reads count (a self-check's own two come and go);
            # one still counted by mistake would leave a second free slot: then squeeze again.
            for _ in range(5):
                used = None
                for _ in range(3):
                    now = {int(x) for x in os.listdir("/proc/%d/fd" % pid)}
                    used = now if used is None else used & now
                    time.sleep(0.03)
                lowest_free = min(set(range(max(used) + 2)) - used)
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free + 1, old[1]))
                time.sleep(2 * ROUND + 0.1)  # a round already past accept() may still ping
                t0 = time.monotonic()
                time.sleep(5 * ROUND)
                if not self.notify.pings(since=t0):
                    quiet = True
                    break
            self.assertTrue(quiet, "WATCHDOG=1 kept coming while the listener could not accept")
            warns = [r for r in self.kw.records()[mark:] if r.get("msg", "").startswith("watchdog self-check failed")]
            self.assertTrue(warns, "no warning about the failed self-check:\n%s" % self.kw.stderr_tail())
            self.assertEqual(warns[0].get("level"), "warn")
            self.assertEqual(warns[0].get("check"), "http")
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
        t1 = time.monotonic()
        self.assertIsNotNone(self.notify.wait_for(lambda f: f.get("WATCHDOG") == "1", start=self.notify.count(),
                                                  timeout=3), "pings did not resume")
        self.assertLess(time.monotonic() - t1, 2.5)
        self.assertTrue(self.kw.running)
        self.assertEqual(self.get("/bundleiq/v1/after").status, 200)


class SaturatedWatchdogTest(LifecycleCase):
    WATCHDOG = True
    LIMITS = {"max_connections": 4, "idle_timeout": "60s"}

    def test_full_connection_limit_is_not_a_wedge(self):
        # At limits.max_connections new connections are refused by closing them; the listener is
        # alive, so the watchdog keeps pinging (a restart would only drop every open connection).
        port = self.start()
        conns = []
        for _ in range(40):  # the watchdog's own check may hold a slot for an instant: retry
            if len(conns) == 4:
                break
            c = RawConnection(port)
            self.addCleanup(c.close)
            try:
                if c.request("GET", "/_keyway/health").status == 200:
                    conns.append(c)
                    continue
            except (ConnectionClosed, OSError):
                pass
            c.close()
            time.sleep(0.05)
        self.assertEqual(len(conns), 4, "could not fill the connection limit")
        extra = RawConnection(port)
        self.addCleanup(extra.close)
        extra.send_request("GET", "/_keyway/health")
        self.assertTrue(extra.peer_closed(wait=2), "a connection over max_connections was served")
        t0 = time.monotonic()
        time.sleep(1.0)
        self.assertGreaterEqual(len(self.notify.pings(since=t0)), 2, "pings stopped at the connection limit")
        self.assertIsNotNone(self.kw.wait_for_record(
            lambda r: r.get("msg", "").startswith("watchdog self-check refused at limits.max_connections")))


# ------------------------------------------------------------------------------------------------
# SIGTERM drain
# ------------------------------------------------------------------------------------------------

class DrainTest(LifecycleCase):
    SERVER = {"shutdown_grace": "10s"}

    def test_sigterm_finishes_50_in_flight_requests_refuses_new_ones_exits_0(self):
        port = self.start()
        self.fake.route("GET", "/v1/slow/*", lambda req: Response.json({"slow": req.target}, delay=2.0))
        idle = RawConnection(port)  # an open keep-alive connection with no request in flight
        self.addCleanup(idle.close)
        self.assertEqual(self.get("/bundleiq/v1/warm", conn=idle).status, 200)
        raws = [self.raw_get("/bundleiq/v1/slow/%d" % i) for i in range(50)]
        results = []
        runner = threading.Thread(target=lambda: results.extend(concurrent_requests(port, raws, timeout=30)))
        runner.start()
        self.assertEqual(len(self.fake.wait_for_requests(51, timeout=15)), 51, "the 50 did not reach the upstream")
        t0 = time.monotonic()
        self.kw.signal(signal.SIGTERM)
        self.assertIsNotNone(self.kw.wait_for_record(lambda r: r.get("msg") == "draining", timeout=5))
        # Stopped accepting: the kernel refuses a new connection outright.
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        # A request on an already open connection: 503 unavailable with Connection: close (docs/http.md).
        late = self.get("/bundleiq/v1/late", conn=idle)
        self.assertEqual(late.status, 503, late)
        self.assertEqual(late.json()["error"]["code"], "unavailable")
        self.assertIn("close", late.connection_tokens())
        self.assertTrue(idle.peer_closed(wait=2))
        self.assertTrue(self.kw.running, "keywayd exited with requests in flight")
        code = self.kw.wait_exit(12)
        took = time.monotonic() - t0
        runner.join(20)
        self.assertEqual(code, 0, self.kw.stderr_tail())
        self.assertLess(took, 10.0, "exit took the whole grace")
        self.assertEqual(len(results), 50)
        for i, r in enumerate(results):
            self.assertNotIsInstance(r, Exception, "request %d: %r" % (i, r))
            self.assertEqual(r.status, 200, r)
            self.assertEqual(json.loads(r.body)["slow"], "/v1/slow/%d" % i)
            self.assertIn("close", r.connection_tokens(), "a response finished while draining keeps the connection")
        self.assertFalse(self.fake.find(lambda q: q.target == "/v1/late"), "the 503 request was forwarded")
        stopped = self.kw.wait_for_record(lambda r: r.get("msg") == "stopped", timeout=3)
        self.assertIsNotNone(stopped, self.kw.stderr_tail())
        self.assertEqual(stopped.get("reason"), "drained")
        self.assertEqual(stopped.get("abandoned_requests"), 0)
        self.assertEqual(stopped.get("level"), "info")


class DrainGraceTest(LifecycleCase):
    SERVER = {"shutdown_grace": "1s"}

    def _slow_in_flight(self, n, delay):
        port = self.start()
        self.fake.route("GET", "/v1/slow/*", Response(body=b"late", delay=delay))
        conns = []
        for i in range(n):
            c = RawConnection(port, timeout=15)
            self.addCleanup(c.close)
            c.send(self.raw_get("/bundleiq/v1/slow/%d" % i))
            conns.append(c)
        self.assertEqual(len(self.fake.wait_for_requests(n, timeout=10)), n)
        return conns

    def _assert_cut(self, conns, reason):
        for c in conns:
            self.assertTrue(c.peer_closed(wait=2), "an abandoned connection was left open")
            self.assertNotIn(b"HTTP/1.1 200", bytes(c.buf))
        stopped = self.kw.wait_for_record(lambda r: r.get("msg") == "stopped", timeout=3)
        self.assertIsNotNone(stopped, self.kw.stderr_tail())
        self.assertEqual(stopped.get("reason"), reason)
        self.assertEqual(stopped.get("abandoned_requests"), len(conns))
        self.assertEqual(stopped.get("level"), "warn")

    def test_grace_end_stops_at_once_with_exit_0(self):
        conns = self._slow_in_flight(5, delay=8.0)
        t0 = time.monotonic()
        self.kw.signal(signal.SIGTERM)
        code = self.kw.wait_exit(6)
        took = time.monotonic() - t0
        self.assertEqual(code, 0, self.kw.stderr_tail())
        self.assertGreaterEqual(took, 0.9, "exited before the grace ended")
        self.assertLess(took, 3.0, "did not stop when the 1 s grace ended")
        self._assert_cut(conns, "grace ended")

    def test_second_sigterm_stops_at_once_with_exit_0(self):
        self.write_config(server={"shutdown_grace": "20s"})
        conns = self._slow_in_flight(3, delay=8.0)
        self.kw.signal(signal.SIGTERM)
        self.assertIsNotNone(self.kw.wait_for_record(lambda r: r.get("msg") == "draining", timeout=5))
        time.sleep(0.3)
        self.assertTrue(self.kw.running)
        t0 = time.monotonic()
        self.kw.signal(signal.SIGTERM)
        code = self.kw.wait_exit(5)
        self.assertEqual(code, 0, self.kw.stderr_tail())
        self.assertLess(time.monotonic() - t0, 2.0, "a second SIGTERM did not stop at once")
        self._assert_cut(conns, "second signal")


# ------------------------------------------------------------------------------------------------
# SIGHUP reload
# ------------------------------------------------------------------------------------------------

def _cache_section(ttl, extra=""):
    rule = {"upstream": "bundleiq", "path": "/v1/ttl/**", "ttl": ttl, "stale_while_revalidate": "0s",
            "stale_if_error": "0s"}
    return "cache:\n  rules: [%s]\n%s" % (json.dumps(rule), extra)


class ReloadTest(LifecycleCase):
    CACHE_SECTION = _cache_section("1h")

    def test_reload_under_load_applies_ttl_timeout_and_level_without_dropping(self):
        port = self.start()
        self.fake.route("GET", "/v1/slow/*", lambda req: Response.json({"slow": req.target}, delay=3.0))
        self.fake.route("GET", "/v1/ttl/*", lambda req: Response.json({"at": time.monotonic()}))
        conns = [RawConnection(port, timeout=20) for _ in range(20)]
        for c in conns:
            self.addCleanup(c.close)
            self.assertEqual(c.request("GET", "/_keyway/health").status, 200)
        # 10 requests in flight against the slow upstream, on 10 of the 20 connections.
        for i, c in enumerate(conns[:10]):
            c.send(self.raw_get("/bundleiq/v1/slow/%d" % i))
        self.assertEqual(len(self.fake.wait_for_requests(10, timeout=10)), 10)
        # Old TTL (1 h): still a HIT after 1.3 s. The credential_use audit line is info-level.
        self.assertEqual(self.get("/bundleiq/v1/ttl/old").header("X-Keyway-Cache"), "MISS")
        self.assertIsNotNone(self.kw.wait_for_record(lambda r: r.get("msg") == "credential_use", timeout=3))
        time.sleep(1.3)
        self.assertEqual(self.get("/bundleiq/v1/ttl/old").header("X-Keyway-Cache"), "HIT")

        # New config: TTL 1 s, bundleiq timeout 1 s, log level warn.
        self.kw.config["upstreams"]["bundleiq"]["timeout"] = "1s"
        self.kw.config["log"] = {"level": "warn", "access_log": True}
        self.write_config(cache_section=_cache_section("1s"))
        mark_n = self.notify.count()
        mark = len(self.kw.records())
        self.kw.signal(signal.SIGHUP)
        r = self.notify.wait_for(lambda f: f.get("RELOADING") == "1", start=mark_n)
        self.assertIsNotNone(r, "no RELOADING=1")
        self.assertIsNotNone(self.notify.wait_for(lambda f: f.get("READY") == "1", start=r + 1), "no READY=1")
        rec = self.kw.wait_for_record(lambda x: x.get("msg") == "configuration reloaded", timeout=3)
        self.assertIsNotNone(rec)
        self.assertEqual(rec.get("needs_restart"), "none")

        # New TTL for new requests: MISS, HIT, then past 1 s a fresh fetch (MISS, no stale window).
        self.assertEqual(self.get("/bundleiq/v1/ttl/new").header("X-Keyway-Cache"), "MISS")
        self.assertEqual(self.get("/bundleiq/v1/ttl/new").header("X-Keyway-Cache"), "HIT")
        time.sleep(1.3)
        self.assertEqual(self.get("/bundleiq/v1/ttl/new").header("X-Keyway-Cache"), "MISS")
        # New upstream timeout for new requests: a 3 s upstream now gets 504 after ~1 s...
        t0 = time.monotonic()
        timed_out = self.get("/bundleiq/v1/slow/new", timeout=10)
        self.assertEqual(timed_out.status, 504, timed_out)
        self.assertLess(time.monotonic() - t0, 2.5)
        # ...while the 10 started before the reload keep their 30 s timeout and complete.
        for i, c in enumerate(conns[:10]):
            resp = c.read_response(timeout=10)
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(json.loads(resp.body)["slow"], "/v1/slow/%d" % i)
        # No connection was dropped: all 20 still serve requests.
        for c in conns:
            self.assertFalse(c.eof)
            self.assertEqual(self.get("/bundleiq/v1/after", conn=c).status, 200)
        # New level: info-level audit lines are gone; access lines (not levelled) remain. (Access
        # lines follow their responses: wait for all 20.)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len([x for x in self.kw.records()[mark:] if x.get("msg") == "access"
                                                   and x.get("path") == "/v1/after"]) < 20:
            time.sleep(0.05)
        after = self.kw.records()[mark:]
        self.assertEqual(len([x for x in after if x.get("msg") == "access" and x.get("path") == "/v1/after"]), 20)
        # The reload itself first reports the summarised counts so far at the old level (info),
        # then says "configuration reloaded" (also at the old level): only later lines count.
        reloaded_at = next(i for i, x in enumerate(after) if x.get("msg") == "configuration reloaded")
        self.assertFalse([x for x in after[reloaded_at + 1:] if x.get("msg") == "credential_use"],
                         "info lines at level warn")

    def test_invalid_config_is_refused_with_one_line_and_the_old_one_keeps_serving(self):
        self.start()
        self.assertEqual(self.get("/bundleiq/v1/ttl/a").header("X-Keyway-Cache"), "MISS")
        self.kw.write_config("listen: 127.0.0.1:0\nupstreams:\n  bundleiq: {base_url: 42, bogus: 1}\n")
        mark, mark_n = len(self.kw.records()), self.notify.count()
        self.kw.signal(signal.SIGHUP)
        r = self.notify.wait_for(lambda f: f.get("RELOADING") == "1", start=mark_n)
        self.assertIsNotNone(r)
        self.assertIsNotNone(self.notify.wait_for(lambda f: f.get("READY") == "1", start=r + 1))
        self.assertIsNotNone(self.kw.wait_for_record(lambda x: "reload refused" in x.get("msg", ""), timeout=3))
        time.sleep(0.2)
        errors = [x for x in self.kw.records()[mark:] if x.get("level") == "error"]
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("reload refused", errors[0]["msg"])
        self.assertRegex(errors[0].get("error", ""), r"keyway\.yaml:3: upstreams\.bundleiq\.base_url",
                         "the refusal should name the file, line and key")
        self.assertFalse(self.records_after(mark, "configuration reloaded"))
        # The old config keeps serving: same upstream, same cache rule (1 h TTL: still a HIT).
        self.assertTrue(self.kw.running)
        self.assertEqual(self.get("/bundleiq/v1/ttl/a").header("X-Keyway-Cache"), "HIT")

    def test_changed_listen_address_is_logged_as_needing_a_restart(self):
        port = self.start()
        other = socket.socket()
        other.bind(("127.0.0.1", 0))
        new_port = other.getsockname()[1]
        other.close()
        self.write_config(listen="127.0.0.1:%d" % new_port)
        self.kw.signal(signal.SIGHUP)
        rec = self.kw.wait_for_record(lambda x: x.get("msg") == "configuration reloaded", timeout=5)
        self.assertIsNotNone(rec)
        self.assertEqual(rec.get("needs_restart"), "listen")
        warn = self.kw.wait_for_record(lambda x: x.get("level") == "warn" and x.get("needs_restart"), timeout=3)
        self.assertIsNotNone(warn, "a change that needs a restart must be a warning")
        self.assertEqual(warn.get("needs_restart"), "listen")
        self.assertEqual(request(port, "GET", "/_keyway/health").status, 200, "the old listener must stay")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", new_port), timeout=2).close()


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------

# docs/operations.md series, plus (reuse, open upstream connections, store and cache sizes).
SPEC_FAMILIES = {
    "keyway_requests_total": "counter",                    # by upstream and status class
    "keyway_request_duration_seconds": "histogram",        # total latency
    "keyway_upstream_duration_seconds": "histogram",       # upstream latency
    "keyway_cache_hits_total": "counter",
    "keyway_cache_misses_total": "counter",
    "keyway_cache_stale_total": "counter",
    "keyway_cache_evictions_total": "counter",
    "keyway_cache_coalesced_waits_total": "counter",
    "keyway_retries_total": "counter",
    "keyway_validation_failures_total": "counter",
    "keyway_schema_refreshes_total": "counter",
    "keyway_requests_in_flight": "gauge",
    "keyway_upstream_connections_reused_total": "counter",
    "keyway_upstream_connections_new_total": "counter",
    "keyway_upstream_connections_open": "gauge",
    "keyway_credential_store_entries": "gauge",
    "keyway_credential_store_file_bytes": "gauge",
    "keyway_cache_entries": "gauge",
    "keyway_cache_bytes": "gauge",
    "keyway_client_connections": "gauge",
}


class MetricsTest(LifecycleCase):

    def test_operational_series_are_present_move_and_carry_no_path_or_secret(self):
        port = self.start()
        # Without WATCHDOG_USEC there is no watchdog: no self-checks, no pings.
        self.assertFalse([r for r in self.kw.records() if r.get("msg") == "watchdog enabled"])
        idle = [RawConnection(port) for _ in range(3)]
        for c in idle:
            self.addCleanup(c.close)
            self.assertEqual(c.request("GET", "/_keyway/health").status, 200)
        types, samples = scrape(port)
        for family, kind in SPEC_FAMILIES.items():
            self.assertEqual(types.get(family), kind, "missing or mistyped family %s" % family)
        for name, _, _ in samples:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            self.assertTrue(name in types or base in types, "sample %s without a TYPE" % name)
        before_2xx = metric(samples, "keyway_requests_total", upstream="bundleiq", **{"class": "2xx"})
        self.assertEqual(metric(samples, "keyway_credential_store_entries", kind="clients"), 1)
        self.assertEqual(metric(samples, "keyway_credential_store_entries", kind="teams"), 1)
        self.assertEqual(metric(samples, "keyway_credential_store_entries", kind="secrets"), 1)
        self.assertEqual(metric(samples, "keyway_credential_store_entries", kind="bosa_users"), 0)
        self.assertGreater(metric(samples, "keyway_credential_store_file_bytes"), 0)
        self.assertGreaterEqual(metric(samples, "keyway_client_connections"), 3)

        # Traffic: a cacheable GET twice (MISS then HIT), three uncached at once (three upstream
        # connections), then one more uncached (reuses a pooled one).
        self.assertEqual(self.get("/bundleiq/v1/notes?q=1").header("X-Keyway-Cache"), "MISS")
        self.assertEqual(self.get("/bundleiq/v1/notes?q=1").header("X-Keyway-Cache"), "HIT")
        self.fake.route("GET", "/v1/par/*", Response(body=b"{}", delay=0.3))
        no_store = [("X-Keyway-Token", self.token), ("Cache-Control", "no-store")]
        res = concurrent_requests(port, [build_request("GET", "/bundleiq/v1/par/%d" % i, no_store)
                                         for i in range(3)])
        self.assertEqual([r.status for r in res], [200, 200, 200], res)
        self.assertEqual(self.get("/bundleiq/v1/par/again", headers=[("Cache-Control", "no-store")]).status, 200)
        self.kw.add_client("app-two", "ops")  # keywayctl while keywayd runs: counted at the next scrape

        deadline = time.monotonic() + 3
        while True:
            types, samples = scrape(port)
            open_up = metric(samples, "keyway_upstream_connections_open")
            if open_up == self.fake.connections_open or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        # libcurl keeps its upstream connections pooled: keyway's count is the fake's count.
        self.assertGreaterEqual(open_up, 3)
        self.assertEqual(open_up, self.fake.connections_open)
        self.assertEqual(metric(samples, "keyway_requests_total", upstream="bundleiq", **{"class": "2xx"}),
                         before_2xx + 6)
        self.assertGreaterEqual(metric(samples, "keyway_cache_hits_total", upstream="bundleiq"), 1)
        self.assertGreaterEqual(metric(samples, "keyway_cache_misses_total", upstream="bundleiq"), 1)
        self.assertGreaterEqual(metric(samples, "keyway_cache_entries"), 1)
        self.assertGreater(metric(samples, "keyway_cache_bytes"), 0)
        # (Exchanges that fill the cache are not counted in these two yet: see the report.)
        self.assertGreaterEqual(metric(samples, "keyway_upstream_connections_new_total", upstream="bundleiq"), 1)
        self.assertGreaterEqual(metric(samples, "keyway_upstream_connections_reused_total", upstream="bundleiq"), 1)
        self.assertEqual(metric(samples, "keyway_credential_store_entries", kind="clients"), 2)
        self.assertEqual(metric(samples, "keyway_request_duration_seconds_count", upstream="bundleiq"), before_2xx + 6)

        self.assertEqual(self.notify.pings(), [], "WATCHDOG=1 without WATCHDOG_USEC")
        self.assertFalse([r for r in self.kw.access_records() if r.get("path") == "/_keyway/health"
                          and r.get("peer") == "127.0.0.1"][3:], "self-checks without a watchdog")

        # Labels: bounded names and values only. No path, query, token or secret anywhere.
        allowed = {"upstream", "class", "kind", "le"}
        text = request(port, "GET", "/_keyway/metrics").text
        for secret in (self.token, self.secret, "/v1/notes", "q=1", "/v1/par", "app-ops"):
            self.assertNotIn(secret, text)
        for name, labels, _ in samples:
            self.assertLessEqual(set(labels), allowed, "%s has unexpected labels %r" % (name, labels))
            for v in labels.values():
                self.assertNotIn("/", v, "%s carries a path in a label: %r" % (name, labels))
                self.assertFalse(v.startswith("kw_"), name)


if __name__ == "__main__":
    unittest.main()
