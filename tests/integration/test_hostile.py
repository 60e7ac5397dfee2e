"""test_hostile.py: hostile bytes over the wire against the real keywayd (docs/http.md, docs/errors.md).

Not repeated here (already covered): test_errors.py TargetValidationTest (absolute-form, '*', '//' and
'.'/'..'/'%2e%2e' targets on the main listener, a first set of malformed request lines, NUL in the
target, negative/duplicate Content-Length, a non-hex chunk size) and BodyLimitTest (bodies over the
limit announced by Content-Length, a 50 GiB Content-Length, unannounced chunked bodies over the limit);
test_connections.py ConcurrencyTest (2,000 concurrent requests on a slow upstream).

Here one keywayd (header_timeout 1s, body_timeout 1s, max_body_bytes 64 KiB) gets, in turn: garbage
request lines, NUL bytes, 100 KB heads, body-limit tricks (Expect: 100-continue, 1-byte chunks, a
request smuggled behind an over-limit body, overflowing sizes), chunked bodies with bad sizes, CR/LF
tricks in header fields, bad targets on a compat listener, unknown methods, 2,000 connections at once
(idle, half a request, a hostile request) and slowloris clients. Every hostile request carries a
valid client token, so anything that slipped through would reach the fake upstream.

Afterwards (test_99_*): keywayd is alive and serves a normal request; every answered hostile request
got a 4xx with a JSON error body {"error": {"code": ...}}; the fake upstream received none of them;
VmRSS (/proc/<pid>/status) grew by less than RSS_BOUND_MIB over the baseline taken before the attack,
and by less than RSS_STEADY_MIB over RSS_ROUNDS further rounds of the whole request corpus (~100
requests, ~2 MB per round: keeping ~10 KB per hostile request, e.g. a head or body buffer, would exceed
it; smaller leaks are LeakSanitizer's job); SIGTERM then exits 0. Under AddressSanitizer the RSS bounds
mean nothing (shadow memory, quarantine): there the clean exit is LeakSanitizer's verdict.
OverloadTest: 2,000 connections at once against max_connections 100.
"""

import random
import socket
import struct
import time

from harness import (ConnectionClosed, KeywayTestCase, RawConnection, build_request, concurrent_requests,
                     request)

LIMIT = 65536
RSS_BOUND_MIB = 32      # total growth over the pre-attack baseline (2,000 connections included)
RSS_STEADY_MIB = 4      # growth across RSS_ROUNDS more rounds of the request corpus
RSS_ROUNDS = 4


def _rss_kib(pid):
    with open("/proc/%d/status" % pid, encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/%d/status" % pid)


def _sanitized(pid):
    """True when keywayd runs with AddressSanitizer (its runtime is mapped into the process)."""
    try:
        with open("/proc/%d/maps" % pid, encoding="latin-1") as f:
            return any("libasan" in line or "libtsan" in line for line in f)
    except OSError:
        return False


class HostileWireTest(KeywayTestCase):
    LIMITS = {"max_body_bytes": LIMIT, "header_timeout": "1s", "body_timeout": "1s"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.corpus = []        # (label, raw bytes) of every single-request attack, replayed for RSS
        cls.answers = []       # (label, status) of every hostile request keywayd answered
        cls.unanswered = []    # labels of hostile requests closed without an answer
        cls.stopped = False    # test_99 stops keywayd on purpose
        tok = [("X-Keyway-Token", cls.tokens["app-alpha"])]
        for i in range(50):  # warm-up: allocator, upstream pool, log buffers
            resp = request(cls.kw.main_port, "GET", "/bundleup-proxy/warm/%d" % i, tok)
            assert resp.status == 200, resp
        time.sleep(0.3)
        cls.pid = cls.kw.proc.pid
        cls.asan = _sanitized(cls.pid)
        cls.rss_baseline = _rss_kib(cls.pid)

    # -- helpers --------------------------------------------------------------------------------
    def head(self, method="GET", target="/bundleup-proxy/h", version="HTTP/1.1"):
        """A request line plus Host and a valid client token, without the blank line."""
        return ("%s %s %s\r\nHost: 127.0.0.1\r\nX-Keyway-Token: %s\r\n"
                % (method, target, version, self.token())).encode("latin-1")

    def assertHostileAnswer(self, resp, label):
        self.assertTrue(400 <= resp.status < 500, "%s: %r" % (label, resp))
        self.assertIn("json", (resp.header("Content-Type") or "").lower(), "%s: %r" % (label, resp))
        doc = resp.json()
        self.assertIsInstance(doc.get("error"), dict, label)
        self.assertIsInstance(doc["error"].get("code"), str, label)
        self.assertTrue(doc["error"]["code"], label)
        type(self).answers.append((label, resp.status))

    def attack(self, label, raw, status=None, port=None, record=True, may_close=False, timeout=10):
        """Sends raw bytes on a new connection and reads one answer; asserts it is a 4xx JSON error
        (and `status` when given). Returns the response, or None if closed without one (only allowed
        with may_close)."""
        if record:
            type(self).corpus.append((label, raw, port))
        with RawConnection(port or self.port, timeout=timeout) as c:
            try:
                c.send(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass  # keywayd answered and closed before taking it all: read the answer
            try:
                resp = c.read_response(timeout=timeout)
            except OSError as e:  # ConnectionClosed, reset, timeout
                if not may_close:
                    self.fail("%s: no answer from keywayd (%r)" % (label, e))
                type(self).unanswered.append(label)
                return None
        self.assertHostileAnswer(resp, label)
        if status is not None:
            self.assertEqual(resp.status, status, "%s: %r" % (label, resp))
        return resp

    def attack_all(self, cases, **kw):
        for case in cases:
            label, raw = case[0], case[1]
            status = case[2] if len(case) > 2 else None
            with self.subTest(label):
                self.attack(label, raw, status, **kw)

    def tearDown(self):
        # Nothing hostile may ever reach the upstream; each test starts with a reset fake.
        got = self.fake.requests
        self.assertEqual([(r.method[:20], r.target[:60]) for r in got], [],
                         "hostile requests reached the upstream")
        if not type(self).stopped:
            self.assertTrue(self.kw.running, "keywayd died:\n%s" % self.kw.stderr_tail())

    # -- the attacks ----------------------------------------------------------------------------
    def test_01_garbage_request_lines(self):
        rnd = random.Random(7)
        noise = [bytes(rnd.randrange(256) for _ in range(n)) for n in (1, 17, 512, 4096, 70000)]
        tail = b"Host: x\r\nX-Keyway-Token: " + self.token().encode() + b"\r\n\r\n"
        cases = [("noise-%d" % len(n), n + b"\r\n\r\n") for n in noise]
        cases += [
            ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
            ("trailing-space", b"GET /bundleup-proxy/x HTTP/1.1 \r\n" + tail, 400),
            ("tab-separators", b"GET\t/bundleup-proxy/x\tHTTP/1.1\r\n" + tail, 400),
            ("double-space", b"GET  /bundleup-proxy/x HTTP/1.1\r\n" + tail, 400),
            ("lowercase-version", b"GET /bundleup-proxy/x http/1.1\r\n" + tail, 400),
            ("version-2.0", b"GET /bundleup-proxy/x HTTP/2.0\r\n" + tail),
            ("version-1.10", b"GET /bundleup-proxy/x HTTP/1.10\r\n" + tail, 400),
            ("no-target", b"GET HTTP/1.1\r\n" + tail, 400),
            ("only-spaces", b"        \r\n" + tail, 400),
            ("extra-token", b"GET /bundleup-proxy/x HTTP/1.1 extra\r\n" + tail, 400),
            ("method-bad-char", b"G(T /bundleup-proxy/x HTTP/1.1\r\n" + tail, 400),
            ("utf8-in-target", "GET /bundleup-proxy/\u00e9 HTTP/1.1\r\n".encode("utf-8") + tail, 400),
            ("100KB-request-line", b"GET /bundleup-proxy/" + b"a" * 100000 + b" HTTP/1.1\r\n" + tail),
            ("100KB-one-token", b"G" * 100000),
            ("50k-empty-lines", b"\r\n" * 50000 + b"GET /bundleup-proxy/x HTTP/1.1\r\n" + tail),
            ("response-not-request", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 400),
        ]
        self.attack_all(cases)

    def test_02_nul_bytes(self):
        h = self.head()
        cases = [
            ("nul-in-method", b"GE\x00T /bundleup-proxy/x HTTP/1.1\r\n" + h.split(b"\r\n", 1)[1] + b"\r\n", 400),
            ("nul-in-version", b"GET /bundleup-proxy/x HTTP/1.1\x00\r\n" + h.split(b"\r\n", 1)[1] + b"\r\n", 400),
            ("nul-in-header-name", h + b"X-A\x00b: c\r\n\r\n", 400),
            ("nul-in-header-value", h + b"X-A: b\x00c\r\n\r\n", 400),
            ("nul-line", h + b"\x00\r\n\r\n", 400),
            ("nul-after-value", h + b"X-A: b\r\x00\n\r\n", 400),
            ("nul-in-token-value", b"GET /bundleup-proxy/x HTTP/1.1\r\nHost: x\r\nX-Keyway-Token: "
             + self.token().encode() + b"\x00\r\n\r\n", 400),
            ("nul-in-content-length", h + b"Content-Length: 1\x002\r\n\r\n" + b"a" * 12, 400),
            ("nul-in-chunk-size", h + b"Transfer-Encoding: chunked\r\n\r\n1\x00\r\na\r\n0\r\n\r\n", 400),
            ("nul-in-trailer", h + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: \x00\r\n\r\n", 400),
        ]
        self.attack_all(cases)

    def test_03_100KB_heads(self):
        h = self.head()
        cases = [
            ("one-100KB-value", h + b"X-Big: " + b"v" * 100000 + b"\r\n\r\n", 431),
            ("one-100KB-name", h + b"X-" + b"n" * 100000 + b": v\r\n\r\n", 431),
            ("1000-headers-100KB", h + b"".join(b"X-H%04d: %s\r\n" % (i, b"v" * 90) for i in range(1000))
             + b"\r\n", 431),
            ("101-small-headers", h + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
            ("100KB-cookie", h + b"Cookie: " + b"c=1; " * 20000 + b"\r\n\r\n", 431),
            ("100KB-token", b"GET /bundleup-proxy/x HTTP/1.1\r\nHost: x\r\nX-Keyway-Token: kw_"
             + b"A" * 100000 + b"\r\n\r\n", 431),
        ]
        self.attack_all(cases)
        # The same 100 KB head as the second request on a kept-alive connection: the first is served
        # (its own business), the second refused, nothing of it forwarded.
        with RawConnection(self.port) as c:
            self.assertEqual(c.request("GET", "/bundleup-proxy/first", [("X-Keyway-Token", self.token())]).status, 200)
            self.fake.reset()
            c.send(h + b"X-Big: " + b"v" * 100000 + b"\r\n\r\n")
            resp = c.read_response()
            self.assertHostileAnswer(resp, "100KB-second-on-connection")
            self.assertEqual(resp.status, 431)
            self.assertTrue(c.peer_closed(3), "keywayd kept the connection after a 431")

    def test_04_bodies_over_the_limit(self):
        h = self.head("POST", "/bundleup-proxy/upload")
        # Expect: 100-continue with an over-limit length: 413 at once, no "100 Continue" first.
        with RawConnection(self.port) as c:
            c.send(h + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (LIMIT + 1))
            resp = c.read_response(timeout=5)
            self.assertHostileAnswer(resp, "expect-100-over-limit")
            self.assertEqual(resp.status, 413)
            self.assertNotIn(b"100 Continue", bytes(c.buf))
        chunk1 = b"1\r\nz\r\n" * (LIMIT + 1) + b"0\r\n\r\n"
        cases = [
            ("1-byte-chunks-over-limit", h + b"Transfer-Encoding: chunked\r\n\r\n" + chunk1, 413),
            ("chunk-size-2^63", h + b"Transfer-Encoding: chunked\r\n\r\n8000000000000000\r\nz\r\n0\r\n\r\n"),
            ("chunk-size-2^64-overflow", h + b"Transfer-Encoding: chunked\r\n\r\n10000000000000001\r\nz\r\n0\r\n\r\n"),
            ("chunk-size-80-hex-digits", h + b"Transfer-Encoding: chunked\r\n\r\n" + b"F" * 80 + b"\r\nz\r\n0\r\n\r\n"),
            ("content-length-2^64", h + b"Content-Length: 18446744073709551616\r\n\r\nzz"),
            ("content-length-2^64+1", h + b"Content-Length: 18446744073709551617\r\n\r\nzz"),
            ("content-length-plus", h + b"Content-Length: +5\r\n\r\nzzzzz", 400),
            ("content-length-hex", h + b"Content-Length: 0x10\r\n\r\n" + b"z" * 16, 400),
            ("content-length-list", h + b"Content-Length: 5, 6\r\n\r\nzzzzzz", 400),
            ("content-length-empty", h + b"Content-Length: \r\n\r\n", 400),
            ("content-length-space-inside", h + b"Content-Length: 1 0\r\n\r\n" + b"z" * 10, 400),
        ]
        self.attack_all(cases)
        # A request smuggled behind an over-limit body on the same connection must never be forwarded:
        # after the 413 the connection's framing is gone, so keywayd closes it.
        smuggled = build_request("GET", "/bundleup-proxy/smuggled", [("X-Keyway-Token", self.token())])
        for label, framing, body in (
                ("smuggle-behind-content-length", b"Content-Length: %d\r\n\r\n" % (LIMIT + 1), b"s" * 100),
                ("smuggle-behind-chunked", b"Transfer-Encoding: chunked\r\n\r\n",
                 b"%x\r\n" % (LIMIT + 1) + b"s" * 100)):
            with self.subTest(label), RawConnection(self.port) as c:
                c.send(h + framing + body + smuggled)
                resp = c.read_response(timeout=5)
                self.assertHostileAnswer(resp, label)
                self.assertEqual(resp.status, 413)
                self.assertTrue(c.peer_closed(3), "%s: connection kept after 413" % label)

    def test_05_chunked_bad_sizes(self):
        h = self.head("POST", "/bundleup-proxy/chunks") + b"Transfer-Encoding: chunked\r\n\r\n"
        cases = [
            ("chunk-size-negative", h + b"-1\r\nz\r\n0\r\n\r\n", 400),
            ("chunk-size-0x-prefix", h + b"0x1\r\nz\r\n0\r\n\r\n", 400),
            ("chunk-size-plus", h + b"+1\r\nz\r\n0\r\n\r\n", 400),
            ("chunk-size-space-inside", h + b"1 0\r\n" + b"z" * 16 + b"\r\n0\r\n\r\n", 400),
            ("chunk-size-empty", h + b"\r\nz\r\n0\r\n\r\n", 400),
            ("chunk-size-non-hex", h + b"g\r\nz\r\n0\r\n\r\n", 400),
            ("chunk-size-100KB-leading-zeros", h + b"0" * 100000 + b"1\r\nz\r\n0\r\n\r\n"),
            ("chunk-extension-100KB", h + b"1;" + b"e" * 100000 + b"\r\nz\r\n0\r\n\r\n"),
            ("chunk-data-longer-than-size", h + b"3\r\nabcdef\r\n0\r\n\r\n", 400),
            ("chunk-data-shorter-than-size", h + b"8\r\nabc\r\n0\r\n\r\n\r\n\r\n", 400),
            ("chunk-data-no-crlf", h + b"3\r\nabcXY0\r\n\r\n", 400),
            ("trailer-100KB", h + b"1\r\nz\r\n0\r\nX-T: " + b"t" * 100000 + b"\r\n\r\n", 431),
            ("trailer-obs-fold", h + b"1\r\nz\r\n0\r\nX-T: a\r\n b\r\n\r\n", 400),
            ("trailer-no-colon", h + b"1\r\nz\r\n0\r\nnot a field\r\n\r\n", 400),
            ("chunked-then-gzip", self.head("POST", "/bundleup-proxy/chunks")
             + b"Transfer-Encoding: chunked, gzip\r\n\r\n1\r\nz\r\n0\r\n\r\n"),
            ("gzip-only", self.head("POST", "/bundleup-proxy/chunks") + b"Transfer-Encoding: gzip\r\n\r\nzz"),
            ("chunked-and-content-length", self.head("POST", "/bundleup-proxy/chunks")
             + b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n1\r\nz\r\n0\r\n\r\n", 400),
            ("te-in-http10", self.head("POST", "/bundleup-proxy/chunks", "HTTP/1.0")
             + b"Transfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"),
        ]
        self.attack_all(cases)

    def test_06_cr_lf_in_header_fields(self):
        h = self.head()
        cases = [
            ("obs-fold-space", h + b"X-A: a\r\n b\r\n\r\n", 400),
            ("obs-fold-tab", h + b"X-A: a\r\n\tb\r\n\r\n", 400),
            ("obs-fold-first-line", b"GET /bundleup-proxy/x HTTP/1.1\r\n folded: x\r\n" + h.split(b"\r\n", 1)[1]
             + b"\r\n", 400),
            ("bare-cr-in-value", h + b"X-A: a\rb\r\n\r\n", 400),
            ("bare-cr-injects-header", h + b"X-A: a\rX-Keyway-Token: kw_x\r\n\r\n", 400),
            ("bare-cr-end-of-value", h + b"X-A: a\r\r\n\r\n", 400),
            ("bare-cr-in-name", h + b"X-\rA: a\r\n\r\n", 400),
            ("bare-cr-line", h + b"\r\r\n\r\n", 400),
            ("cr-in-request-line", b"GET /bundleup-proxy/x\r HTTP/1.1\r\n" + h.split(b"\r\n", 1)[1] + b"\r\n", 400),
            ("space-before-colon", h + b"X-A : a\r\n\r\n", 400),
            ("no-colon", h + b"X-A a\r\n\r\n", 400),
            ("empty-name", h + b": a\r\n\r\n", 400),
            ("del-in-value", h + b"X-A: a\x7fb\r\n\r\n", 400),
            ("esc-in-value", h + b"X-A: a\x1b[2Jb\r\n\r\n", 400),
            ("cr-in-host", b"GET /bundleup-proxy/x HTTP/1.1\r\nHost: a\rb\r\nX-Keyway-Token: "
             + self.token().encode() + b"\r\n\r\n", 400),
        ]
        self.attack_all(cases)

    def test_07_bad_targets_on_a_compat_listener(self):
        # The compat listener mounts one upstream at its root: the whole target is the "rest".
        port = self.kw.compat_ports["bundleup-proxy"]
        tok = b"X-Keyway-Token: " + self.token().encode() + b"\r\n"
        cases = []
        for target in ("//evil.example/x", "//", "/../x", "/..", "/a/../x", "/./x", "/a/.", "/%2e%2e/x",
                       "/a/%2E%2e/x", "/%2e/x", "/.%2E/x", "http://evil.example/x", "https://127.0.0.1/x",
                       "*", "x", "?q=1"):
            cases.append(("compat " + target, b"GET " + target.encode() + b" HTTP/1.1\r\nHost: x\r\n" + tok
                          + b"\r\n", 400))
        self.attack_all(cases, port=port)
        # On the main listener, a target starting with '//' names no mount at all: refused too.
        self.attack("main //evil.example/x", self.head("GET", "//evil.example/x") + b"\r\n")

    def test_08_unknown_methods(self):
        tail = b"\r\nHost: x\r\nX-Keyway-Token: " + self.token().encode() + b"\r\n\r\n"
        cases = [
            ("method-with-slash", b"GE/T /bundleup-proxy/x HTTP/1.1" + tail, 400),
            ("method-with-colon", b"GET: /bundleup-proxy/x HTTP/1.1" + tail, 400),
            ("method-8bit", b"G\xc9T /bundleup-proxy/x HTTP/1.1" + tail, 400),
            ("method-100KB", b"M" * 100000 + b" /bundleup-proxy/x HTTP/1.1" + tail),
            ("method-empty", b" /bundleup-proxy/x HTTP/1.1" + tail, 400),
            ("method-only", b"BREW" + tail),
        ]
        self.attack_all(cases)
        # A well-formed unknown method is an upstream's business (docs/http.md: methods pass through), but
        # never without a client token.
        for method in ("BREW", "PROPFIND", "get"):
            with self.subTest(method=method):
                self.attack("no-token " + method, build_request(method, "/bundleup-proxy/x"), 401)

    def test_08b_connect_with_origin_form_is_refused(self):
        # RFC 9110 §9.3.6 / RFC 9112 §3.2.3: CONNECT takes authority-form only; an origin-form CONNECT is
        # malformed and a gateway must not forward it (a 2xx to CONNECT turns the pooled upstream
        # connection into a tunnel).
        with RawConnection(self.port) as c:
            c.send(self.head("CONNECT", "/bundleup-proxy/x") + b"\r\n")
            resp = c.read_response()
        forwarded = self.fake.requests
        self.fake.reset()  # reported here, not again by tearDown
        self.assertEqual([(r.method, r.target) for r in forwarded], [], "an origin-form CONNECT was forwarded")
        self.assertHostileAnswer(resp, "connect-origin-form")
        self.assertEqual(resp.status, 400, resp)

    def test_08c_trace_never_carries_injected_credentials(self):
        # RFC 9110 §9.3.8: a TRACE response reflects the request, and a client MUST NOT send stored
        # credentials in a TRACE. keyway injects the team's API key into what it forwards, so a TRACE
        # must be refused (or at least leave without the key): otherwise any client token holder reads
        # the real key back from an upstream that honours TRACE.
        resp = self.call("TRACE", "/bundleup-proxy/trace")
        leaked = [r for r in self.fake.requests if self.secrets["bundleup"] in str(r.headers)]
        self.fake.reset()  # tearDown checks that nothing else was forwarded
        self.assertEqual(leaked, [], "TRACE was forwarded with the injected API key")
        self.assertNotIn(self.secrets["bundleup"].encode(), resp.body or b"")

    def test_09_2000_connections_at_once(self):
        n_idle, n_half, n_hostile = 800, 600, 600
        socks = []
        try:
            for i in range(n_idle + n_half):
                s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                if i >= n_idle:  # half a request head, never finished
                    s.sendall(self.head("GET", "/bundleup-proxy/half/%d" % i))
                socks.append(s)
            hostile = [b"GE\x00T / HTTP/1.1\r\n\r\n", self.head() + b"X-A: a\r\n b\r\n\r\n",
                       self.head("POST") + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
                       self.head("POST") + b"Content-Length: %d\r\n\r\n" % (LIMIT + 1),
                       self.head("GET", "/bundleup-proxy/../bundleiq/x") + b"\r\n",
                       b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 32]
            raws = [hostile[i % len(hostile)] for i in range(n_hostile)]
            # While 1,400 connections sit idle or half-sent, 600 hostile ones at once, and a normal
            # request must still be served promptly.
            t0 = time.monotonic()
            results = concurrent_requests(self.port, raws, timeout=30)
            took = time.monotonic() - t0
            resp = request(self.port, "GET", "/bundleup-proxy/during", [("X-Keyway-Token", self.token())], timeout=10)
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(len(self.fake.requests), 1)
            self.fake.reset()
            bad = []
            for i, r in enumerate(results):
                if isinstance(r, Exception):
                    bad.append((i, repr(r)))
                else:
                    try:
                        self.assertHostileAnswer(r, "burst-%d" % (i % len(hostile)))
                    except AssertionError as e:
                        bad.append((i, str(e)[:200]))
            self.assertEqual(bad, [], "%d of %d hostile connections not answered with a 4xx JSON error"
                             % (len(bad), n_hostile))
            self.assertLess(took, 20, "600 hostile requests took %.1fs" % took)
        finally:
            # Half of them go away with a reset, half with a FIN.
            for i, s in enumerate(socks):
                if i % 2:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
        time.sleep(0.5)
        self.assertEqual(request(self.port, "GET", "/bundleup-proxy/after", [("X-Keyway-Token", self.token())]).status,
                         200)
        self.fake.reset()

    def test_10_slowloris(self):
        # header_timeout 1s: a client dribbling its head gets 408 and is closed (the housekeeper runs
        # about once a second, so within ~3s), and does not hold up anyone else meanwhile.
        clients = []
        for i in range(100):
            c = RawConnection(self.port, timeout=10)
            c.send(b"G")
            clients.append(c)
        head = self.head("GET", "/bundleup-proxy/slow")[1:]
        t0 = time.monotonic()
        answered = {}
        pos = 0
        while len(answered) < len(clients) and time.monotonic() - t0 < 8:
            for i, c in enumerate(clients):
                if i in answered:
                    continue
                if c.peer_closed(0):
                    answered[i] = time.monotonic() - t0
                    continue
                try:
                    c.send(head[pos:pos + 1] or b"X")
                except OSError:
                    answered[i] = time.monotonic() - t0
            pos += 1
            if pos == 5:  # mid-attack, a normal client is served at once
                t1 = time.monotonic()
                resp = request(self.port, "GET", "/bundleup-proxy/normal", [("X-Keyway-Token", self.token())])
                self.assertEqual(resp.status, 200)
                self.assertLess(time.monotonic() - t1, 2)
                self.fake.reset()
            time.sleep(0.1)
        self.assertEqual(len(answered), len(clients), "slowloris clients still connected after 8s")
        self.assertLess(max(answered.values()), 5, "slowloris clients held for %.1fs" % max(answered.values()))
        for i, c in enumerate(clients):
            with self.subTest(client=i):
                resp = c.read_response(timeout=5)
                self.assertHostileAnswer(resp, "slowloris")
                self.assertEqual(resp.status, 408)
            c.close()
        # A slow body: head complete, body dribbled one byte per 200 ms -> 408 after header_timeout +
        # body_timeout (1s + 1s), never forwarded.
        with RawConnection(self.port, timeout=10) as c:
            c.send(self.head("POST", "/bundleup-proxy/slowbody") + b"Content-Length: 100\r\n\r\n")
            t0 = time.monotonic()
            for _ in range(100):
                if c.peer_closed(0.2):
                    break
                c.send(b"x")
            self.assertLess(time.monotonic() - t0, 6)
            resp = c.read_response(timeout=5)
            self.assertHostileAnswer(resp, "slow-body")
            self.assertEqual(resp.status, 408)
        # A complete head announcing a body that never comes.
        with RawConnection(self.port, timeout=10) as c:
            c.send(self.head("POST", "/bundleup-proxy/nobody") + b"Content-Length: 10\r\n\r\n")
            resp = c.read_response(timeout=6)
            self.assertHostileAnswer(resp, "missing-body")
            self.assertEqual(resp.status, 408)
        # A request that did not arrive in time has its access line, naming whom and why.
        rec = self.kw.wait_for_record(lambda r: r.get("msg") == "access" and r.get("path") == "/nobody", 5)
        self.assertIsNotNone(rec, "no access line for the 408")
        self.assertEqual((rec["status"], rec["client"], rec["upstream"], rec["method"], rec.get("error")),
                         (408, "app-alpha", "bundleup-proxy", "POST", "bad_request"), rec)
        self.assertEqual(rec.get("cause"), resp.json()["error"]["message"], rec)

    # -- afterwards -----------------------------------------------------------------------------
    def test_99_afterwards_alive_bounded_and_nothing_forwarded(self):
        pid = self.pid
        self.assertTrue(self.kw.running, "keywayd died:\n%s" % self.kw.stderr_tail())
        resp = self.call("GET", "/bundleup-proxy/normal")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(len(self.fake.requests), 1)
        self.fake.reset()
        cls = type(self)
        # Every hostile request above that was answered got a 4xx JSON error (asserted as it came);
        # here: there were plenty and none went unanswered.
        self.assertTrue(cls.answers, "no attack ran before this test")
        self.assertEqual(cls.unanswered, [])
        metrics = request(self.port, "GET", "/_keyway/metrics").text
        self.assertIn("keyway_", metrics)
        if cls.asan:
            rss = _rss_kib(pid)
            print("\n  (AddressSanitizer build: RSS bound not applied; VmRSS %d KiB, baseline %d KiB)"
                  % (rss, cls.rss_baseline))
        else:
            grown = _rss_kib(pid) - cls.rss_baseline
            self.assertLess(grown, RSS_BOUND_MIB * 1024,
                            "VmRSS grew by %d KiB over the pre-attack baseline" % grown)
            # Steady state: replay the whole request corpus; after one round to fill the allocator's
            # caches, RSS_ROUNDS more rounds must not grow RSS by more than RSS_STEADY_MIB.
            corpus = [(label, raw, port) for label, raw, port in cls.corpus]
            self._replay(corpus)
            time.sleep(0.2)
            before = _rss_kib(pid)
            for _ in range(RSS_ROUNDS):
                self._replay(corpus)
            time.sleep(0.2)
            steady = _rss_kib(pid) - before
            print("\n  VmRSS: baseline %d KiB, after the attacks +%d KiB, %d more rounds of %d requests +%d KiB"
                  % (cls.rss_baseline, grown, RSS_ROUNDS, len(corpus), steady))
            self.assertLess(steady, RSS_STEADY_MIB * 1024,
                            "VmRSS grew by %d KiB over %d rounds of %d hostile requests (leak?)"
                            % (steady, RSS_ROUNDS, len(corpus)))
        self.assertTrue(self.kw.running)
        self.assertEqual(self.call("GET", "/bundleup-proxy/last").status, 200)
        self.fake.reset()
        # docs/operations.md: SIGTERM -> exit 0. Under the sanitizers this is also where LeakSanitizer reports.
        cls.stopped = True
        code = self.kw.stop(timeout=30)
        self.assertEqual(code, 0, "keywayd exited %s after the attacks; stderr tail:\n%s"
                         % (code, self.kw.stderr_tail()))

    def _replay(self, corpus):
        for label, raw, port in corpus:
            with RawConnection(port or self.port, timeout=10) as c:
                try:
                    c.send(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                resp = c.read_response(timeout=10)
                self.assertTrue(400 <= resp.status < 500, "%s on replay: %r" % (label, resp))


class OverloadTest(KeywayTestCase):
    """2,000 connections at once against limits.max_connections 100: the excess is closed at once,
    keywayd stays up, and serves again as soon as connections go away."""

    LIMITS = {"max_body_bytes": LIMIT, "max_connections": 100}

    def test_2000_connections_against_max_connections_100(self):
        socks = []
        refused = 0
        try:
            for _ in range(2000):
                try:
                    socks.append(socket.create_connection(("127.0.0.1", self.port), timeout=10))
                except OSError:
                    refused += 1
            time.sleep(1.0)
            # Past the limit, a new client is closed (not left hanging).
            with RawConnection(self.port, timeout=10) as c:
                try:
                    c.send(build_request("GET", "/bundleup-proxy/over", [("X-Keyway-Token", self.token())]))
                    resp = c.read_response(timeout=10)
                    self.fail("a connection beyond max_connections was served: %r" % resp)
                except (OSError, ConnectionClosed):
                    pass
            open_now = 0
            for s in socks:
                s.setblocking(False)
                try:
                    data = s.recv(1)
                    open_now += 0 if data == b"" else 1
                except BlockingIOError:
                    open_now += 1
                except OSError:
                    pass
            self.assertLessEqual(open_now, 110, "%d connections kept open with max_connections 100" % open_now)
            self.assertGreater(open_now, 0)
        finally:
            for s in socks:
                s.close()
        time.sleep(1.0)
        resp = self.call("GET", "/bundleup-proxy/after")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual([r.target for r in self.fake.requests], ["/after"])
        self.assertTrue(self.kw.running)
