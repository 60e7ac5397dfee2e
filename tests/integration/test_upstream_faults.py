"""test_upstream_faults.py: upstreams that fail, against the real keywayd (docs/http.md, docs/errors.md).

Each fault is mapped to docs/errors.md (502 upstream_unreachable, 504 upstream_timeout, or the upstream's own
answer passed through unchanged), is never retried on these non-BOSA upstreams (the fake counts exactly
one request or connection per client request, keyway_retries_total stays 0), is answered within a
bounded time (never a hang), and moves keyway_upstream_errors_total{upstream=...,kind=...} for the
kind it is. BOSA retries are tested with the BOSA fake elsewhere.

Fakes: ../fakes/fake_upstream.py (HTTP-level: stalls, cut-short bodies, 5xx, 429) and
../fakes/fault_upstream.py (below HTTP: RST, garbage, talking first, a TLS server with a self-signed
wrong-name certificate made with the openssl CLI). Not repeated: test_errors.py UpstreamFailureTest
(refused and stalled upstreams, without the metrics).
"""

import json
import re
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time

from harness import (REPO, ConnectionClosed, KeywayTestCase, RawConnection, Response, build_request,
                     closed_port, concurrent_requests, request)

sys.path.insert(0, str(REPO / "tests" / "fakes"))
from fault_upstream import FaultServer, Script, TlsFake, make_self_signed  # noqa: E402

KINDS = ("connect", "timeout", "reset", "tls", "protocol", "too_large")
_SAMPLE = re.compile(r'^([a-z_]+)(?:\{([^}]*)\})? (\S+)$')


class UpstreamFaultsTest(KeywayTestCase):

    @classmethod
    def setUpClass(cls):
        cls.certdir = tempfile.mkdtemp(prefix="keyway-it-tls-")
        cls.addClassCleanup(shutil.rmtree, cls.certdir, True)
        cls.cert, key = make_self_signed(cls.certdir, "wrong.example")
        cls.faulty = FaultServer().start()
        cls.addClassCleanup(cls.faulty.stop)
        cls.tls = TlsFake(cls.cert, key).start()
        cls.addClassCleanup(cls.tls.stop)
        cls.tls_stall = TlsFake(cls.cert, key, mode="stall").start()
        cls.addClassCleanup(cls.tls_stall.stop)
        # Something that answers a ClientHello with plain-text HTTP, then hangs up.
        cls.not_tls = FaultServer(Script([b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"],
                                         then="close", read_request=False)).start()
        cls.addClassCleanup(cls.not_tls.stop)
        super().setUpClass()

    @classmethod
    def upstreams(cls):
        ups = super().upstreams()
        iq = {"protocol": "bundleiq"}
        ups["iq-dead"] = dict(iq, base_url="http://127.0.0.1:%d" % closed_port(), connect_timeout="2s")
        ups["iq-slow"] = dict(iq, base_url=cls.fake.url, timeout="1s")
        ups["iq-fault"] = dict(iq, base_url=cls.faulty.url, timeout="2s", connect_timeout="2s")
        ups["iq-tls"] = dict(iq, base_url=cls.tls.url, connect_timeout="2s", timeout="5s")
        ups["iq-tls-stall"] = dict(iq, base_url=cls.tls_stall.url, connect_timeout="1s", timeout="3s")
        ups["iq-not-tls"] = dict(iq, base_url="https://127.0.0.1:%d" % cls.not_tls.port, connect_timeout="2s")
        return ups

    def setUp(self):
        super().setUp()
        self.faulty.reset()

    def tearDown(self):
        self.assertTrue(self.kw.running, "keywayd died:\n%s" % self.kw.stderr_tail())

    # -- helpers --------------------------------------------------------------------------------
    def metrics(self):
        """{(name, frozenset(labels)): value} from /_keyway/metrics."""
        text = request(self.port, "GET", "/_keyway/metrics").text
        out = {}
        for line in text.splitlines():
            m = _SAMPLE.match(line)
            if m:
                labels = frozenset(tuple(kv.split("=", 1)) for kv in re.findall(r'[a-z_]+="[^"]*"', m.group(2) or ""))
                out[(m.group(1), labels)] = float(m.group(3))
        return out

    @staticmethod
    def errors(snapshot, upstream):
        return {k: snapshot.get(("keyway_upstream_errors_total",
                                 frozenset({("upstream", '"%s"' % upstream), ("kind", '"%s"' % k)})), 0.0)
                for k in KINDS}

    @staticmethod
    def retries(snapshot, upstream):
        return snapshot.get(("keyway_retries_total", frozenset({("upstream", '"%s"' % upstream)})), 0.0)

    def assertErrorsMoved(self, before, upstream, expected):
        """keyway_upstream_errors_total for `upstream` moved by exactly `expected` ({kind: n}), no
        other kind moved, and nothing was retried."""
        after = self.metrics()
        b, a = self.errors(before, upstream), self.errors(after, upstream)
        delta = {k: a[k] - b[k] for k in KINDS if a[k] != b[k]}
        self.assertEqual(delta, {k: float(v) for k, v in expected.items() if v}, "error kinds of %s" % upstream)
        self.assertEqual(self.retries(after, upstream), self.retries(before, upstream), "%s was retried" % upstream)

    def assertNothingInFlight(self):
        """keyway_requests_in_flight settles to 1 (the scrape itself); it is decremented just after a
        response is handed over, so give it a moment."""
        deadline = time.monotonic() + 3
        while True:
            value = self.metrics().get(("keyway_requests_in_flight", frozenset()))
            if value == 1.0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(value, 1.0, "requests stuck in flight")

    def timed_call(self, method, target, body=None, limit=8.0, **kw):
        headers = [("Content-Type", "application/json")] if body is not None else None
        t0 = time.monotonic()
        resp = self.call(method, target, headers, body, timeout=limit + 10, **kw)
        took = time.monotonic() - t0
        self.assertLess(took, limit, "%s %s took %.1fs" % (method, target, took))
        return resp, took

    def assertGatewayError(self, resp, status, code):
        doc = self.assertKeywayError(resp, status, code)
        text = json.dumps(doc)
        for secret in self.secrets.values():
            self.assertNotIn(secret, text)
        self.assertEqual(resp.header("X-Keyway-Cache"), "BYPASS", resp)
        return doc

    # -- refused --------------------------------------------------------------------------------
    def test_refused_connection_502(self):
        before = self.metrics()
        for method, body in (("GET", None), ("POST", b'{"a":1}'), ("DELETE", None)):
            with self.subTest(method=method):
                resp, _ = self.timed_call(method, "/iq-dead/v1/notes", body, limit=5)
                doc = self.assertGatewayError(resp, 502, "upstream_unreachable")
                self.assertIn("iq-dead", doc["error"]["message"])
        self.assertErrorsMoved(before, "iq-dead", {"connect": 3})

    # -- resets ---------------------------------------------------------------------------------
    def test_reset_before_any_response_byte_502(self):
        self.faulty.set_script(Script([], then="reset"))
        before = self.metrics()
        for method, body in (("GET", None), ("POST", b'{"a":1}')):
            with self.subTest(method=method):
                self.faulty.reset()
                resp, _ = self.timed_call(method, "/iq-fault/v1/reset-early", body)
                self.assertGatewayError(resp, 502, "upstream_unreachable")
                self.assertEqual((self.faulty.connections, len(self.faulty.requests)), (1, 1),
                                 "a non-BOSA request must reach the upstream exactly once")
        self.assertErrorsMoved(before, "iq-fault", {"reset": 2})

    def test_reset_mid_response_502(self):
        self.faulty.set_script(Script([b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                       b"Content-Length: 4000\r\n\r\n{\"partial\":", 0.2], then="reset"))
        before = self.metrics()
        for method, body in (("GET", None), ("POST", b'{"a":1}')):
            with self.subTest(method=method):
                self.faulty.reset()
                resp, _ = self.timed_call(method, "/iq-fault/v1/reset-mid", body)
                self.assertGatewayError(resp, 502, "upstream_unreachable")
                self.assertNotIn(b"partial", resp.body)
                self.assertEqual((self.faulty.connections, len(self.faulty.requests)), (1, 1))
        self.assertErrorsMoved(before, "iq-fault", {"reset": 2})

    def test_reset_while_streaming_aborts_the_stream(self):
        # 512 KiB of a 1 MiB body, then RST: keywayd is already streaming to the client (past its
        # buffering threshold), so the honest signal left is a body that never completes.
        sent = b"s" * (512 << 10)
        self.faulty.set_script(Script([b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                       b"Content-Length: %d\r\n\r\n" % (1 << 20), sent, 0.3], then="reset"))
        before = self.metrics()
        with RawConnection(self.port, timeout=10) as c:
            c.send_request("POST", "/iq-fault/v1/big", [("X-Keyway-Token", self.token()),
                                                         ("Content-Type", "application/json")], b"{}")
            head = c.read_head(timeout=8)
            self.assertEqual(head.status, 200, head)
            with self.assertRaises(ConnectionClosed, msg="the cut stream was completed as if whole"):
                c.read_stream_until(b"never-sent", timeout=8)
            got = bytes(c.stream_body)
        self.assertNotEqual(c._stream[0], "done", "the stream ended with a last chunk: it looks complete")
        self.assertTrue(sent.startswith(got), "the client got bytes the upstream never sent")
        self.assertGreater(len(got), 0)
        self.assertEqual(self.faulty.connections, 1)
        self.assertErrorsMoved(before, "iq-fault", {"reset": 1})

    # -- cut short ------------------------------------------------------------------------------
    def test_response_cut_short_502(self):
        # Content-Length larger than what is sent, then FIN.
        self.fake.route("*", "/v1/short", Response(headers=[("Content-Type", "application/json")],
                                                   body=b'{"x":"' + b"y" * 2000 + b'"}', close_after=100))
        before = self.metrics()
        for method, body in (("GET", None), ("POST", b'{"a":1}')):
            with self.subTest(method=method):
                self.fake.reset()
                self.fake.route("*", "/v1/short", Response(headers=[("Content-Type", "application/json")],
                                                           body=b'{"x":"' + b"y" * 2000 + b'"}', close_after=100))
                resp, _ = self.timed_call(method, "/iq-slow/v1/short", body)
                self.assertGatewayError(resp, 502, "upstream_unreachable")
                self.assertEqual(len(self.fake.requests), 1)
        self.assertErrorsMoved(before, "iq-slow", {"reset": 2})

    def test_chunked_response_cut_short_502(self):
        self.faulty.set_script(Script([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                       b"5\r\nhello\r\n10\r\nonly-half"], then="close"))
        before = self.metrics()
        resp, _ = self.timed_call("POST", "/iq-fault/v1/chunks", b"{}")
        self.assertGatewayError(resp, 502, "upstream_unreachable")
        self.assertEqual(self.faulty.connections, 1)
        self.assertErrorsMoved(before, "iq-fault", {"reset": 1})

    def test_event_stream_cut_short_aborts_the_stream(self):
        # An SSE response streams at once; the upstream then hangs up without the last chunk.
        self.faulty.set_script(Script([b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                       b"Transfer-Encoding: chunked\r\n\r\n",
                                       b"d\r\ndata: first\n\n\r\n", 0.5], then="close"))
        before = self.metrics()
        with RawConnection(self.port, timeout=10) as c:
            c.send_request("GET", "/iq-fault/v1/events", [("X-Keyway-Token", self.token()),
                                                          ("Accept", "text/event-stream")])
            head = c.read_head(timeout=5)
            self.assertEqual(head.status, 200, head)
            self.assertEqual(head.header("Content-Type"), "text/event-stream")
            self.assertEqual(c.read_stream_until(b"data: first\n\n", timeout=5), b"data: first\n\n")
            with self.assertRaises(ConnectionClosed, msg="the cut event stream was completed as if whole"):
                c.read_stream_until(b"never-sent", timeout=8)
        self.assertEqual(self.faulty.connections, 1)
        self.assertErrorsMoved(before, "iq-fault", {"reset": 1})

    # -- stalls ---------------------------------------------------------------------------------
    def test_stall_before_headers_504(self):
        self.fake.route("*", "/v1/stall", Response(stall=True))
        before = self.metrics()
        for method, body in (("GET", None), ("POST", b'{"a":1}')):
            with self.subTest(method=method):
                self.fake.reset()
                self.fake.route("*", "/v1/stall", Response(stall=True))
                resp, took = self.timed_call(method, "/iq-slow/v1/stall", body, limit=6)
                self.assertGatewayError(resp, 504, "upstream_timeout")
                self.assertGreaterEqual(took, 0.9, "504 before the configured 1s timeout")
                self.assertEqual(len(self.fake.requests), 1, "a timed-out request was sent again")
        self.assertErrorsMoved(before, "iq-slow", {"timeout": 2})

    def test_stall_mid_body_504(self):
        # Headers and 2 of 10 body bytes, then silence: the buffered exchange hits its 2s timeout.
        self.faulty.set_script(Script([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab"], then="stall"))
        before = self.metrics()
        resp, took = self.timed_call("POST", "/iq-fault/v1/stall-body", b"{}", limit=8)
        self.assertGatewayError(resp, 504, "upstream_timeout")
        self.assertGreaterEqual(took, 1.9)
        self.assertEqual(self.faulty.connections, 1)
        self.assertErrorsMoved(before, "iq-fault", {"timeout": 1})

    # -- upstream statuses pass through -----------------------------------------------------------
    def test_5xx_storm_passes_through_unchanged(self):
        statuses = [(500, "Internal Server Error"), (502, "Bad Gateway"), (503, "Service Unavailable"),
                    (504, "Gateway Timeout"), (599, "Custom Trouble")]

        def answer(req):
            i = int(req.path.rsplit("/", 1)[1])
            status, reason = statuses[i % len(statuses)]
            return Response(status, reason, headers=[("Content-Type", "application/json"),
                                                     ("X-Upstream-Trace", "t-%d" % i), ("Retry-After", "7")],
                            body=json.dumps({"upstream_error": i}))

        self.fake.route("*", "/v1/storm/*", answer)
        before = self.metrics()
        n = 300
        raws = []
        for i in range(n):
            method = ("GET", "POST", "PUT")[i % 3]
            mount = ("bundleiq", "bundleup-proxy", "bundleup-api")[i % 3 if i % 2 else 0]
            body = b'{"i":%d}' % i if method != "GET" else None
            raws.append(build_request(method, "/%s/v1/storm/%d" % (mount, i),
                                      [("Host", "127.0.0.1:%d" % self.port), ("X-Keyway-Token", self.token())]
                                      + ([("Content-Type", "application/json")] if body else []), body))
        t0 = time.monotonic()
        results = concurrent_requests(self.port, raws, timeout=60)
        took = time.monotonic() - t0
        bad = []
        for i, r in enumerate(results):
            status, reason = statuses[i % len(statuses)]
            if isinstance(r, Exception):
                bad.append((i, repr(r)))
            elif ((r.status, r.reason, r.header("X-Upstream-Trace"), r.header("Retry-After"), r.json())
                  != (status, reason, "t-%d" % i, "7", {"upstream_error": i})):
                bad.append((i, r))
        self.assertEqual(bad[:5], [], "%d of %d 5xx answers not passed through unchanged" % (len(bad), n))
        self.assertLess(took, 30)
        # Exactly one upstream request per client request: no retry, no coalescing across paths.
        self.assertEqual(len(self.fake.requests), n)
        self.assertEqual(sorted(int(r.path.rsplit("/", 1)[1]) for r in self.fake.requests), list(range(n)))
        after = self.metrics()
        for up in ("bundleiq", "bundleup-proxy", "bundleup-api"):
            self.assertEqual(self.errors(after, up), self.errors(before, up),
                             "an upstream 5xx is an answer, not a transport error (%s)" % up)
            self.assertEqual(self.retries(after, up), self.retries(before, up))
        self.assertNothingInFlight()
        self.fake.reset()
        self.assertEqual(self.call("GET", "/bundleup-proxy/v1/after-storm").status, 200)

    def test_429_with_huge_retry_after_passes_through_at_once(self):
        values = ["999999999", "99999999999999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT", "-5", "soon"]
        before = self.metrics()
        for i, value in enumerate(values):
            for method, body in (("GET", None), ("POST", b'{"a":1}')):
                with self.subTest(retry_after=value, method=method):
                    self.fake.reset()
                    self.fake.route("*", "/v1/limited/*",
                                    Response(429, headers=[("Content-Type", "application/json"),
                                                           ("Retry-After", value)],
                                             body=b'{"message":"slow down"}'))
                    resp, _ = self.timed_call(method, "/bundleiq/v1/limited/%d" % i, body, limit=3)
                    self.assertEqual((resp.status, resp.reason), (429, "Too Many Requests"), resp)
                    self.assertEqual(resp.header_all("Retry-After"), [value])
                    self.assertEqual(resp.body, b'{"message":"slow down"}')
                    self.assertEqual(len(self.fake.requests), 1, "a 429 was retried on a non-BOSA upstream")
        self.assertErrorsMoved(before, "bundleiq", {})

    # -- not HTTP ---------------------------------------------------------------------------------
    GARBAGE = [
        ("words", Script([b"this is not http\r\n\r\n"])),
        ("binary", Script([bytes(range(256)) * 8])),
        ("bad-status-code", Script([b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"])),
        ("http/0.9-style", Script([b"hello"])),
        ("talks-first", Script([b"220 smtp.example ESMTP\r\n"], read_request=False)),
        ("negative-length", Script([b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"])),
        ("status-line-only", Script([b"HTTP/1.1 200 OK\r\n"])),
        ("nothing", Script([])),
        ("bad-chunk-size", Script([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"])),
        ("header-without-colon", Script([b"HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 2\r\n\r\nok"])),
        ("tls-alert", Script([b"\x15\x03\x03\x00\x02\x02\x28"])),
    ]

    def test_garbage_instead_of_http_502(self):
        for name, script in self.GARBAGE:
            for method, body in (("GET", None), ("POST", b'{"a":1}')):
                with self.subTest(name, method=method):
                    self.faulty.set_script(script)
                    self.faulty.reset()
                    before = self.metrics()
                    resp, _ = self.timed_call(method, "/iq-fault/v1/garbage", body, limit=6)
                    self.assertGatewayError(resp, 502, "upstream_unreachable")
                    self.assertEqual(self.faulty.connections, 1, "retried after garbage")
                    after = self.metrics()
                    moved = sum(self.errors(after, "iq-fault").values()) - sum(self.errors(before, "iq-fault").values())
                    self.assertEqual(moved, 1.0, "exactly one upstream error counted")
                    self.assertEqual(self.retries(after, "iq-fault"), self.retries(before, "iq-fault"))

    def test_garbage_status_line_counts_as_protocol_error(self):
        self.faulty.set_script(Script([b"this is not http\r\n\r\n"]))
        before = self.metrics()
        resp, _ = self.timed_call("GET", "/iq-fault/v1/protocol")
        self.assertGatewayError(resp, 502, "upstream_unreachable")
        self.assertErrorsMoved(before, "iq-fault", {"protocol": 1})

    def test_oversized_upstream_head_502(self):
        self.faulty.set_script(Script([b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 300000 + b"\r\nContent-Length: 0\r\n\r\n"]))
        before = self.metrics()
        resp, _ = self.timed_call("GET", "/iq-fault/v1/big-head")
        self.assertGatewayError(resp, 502, "upstream_unreachable")
        # A malformed answer, not a failed connection (libcurl says "out of memory" for it).
        self.assertErrorsMoved(before, "iq-fault", {"protocol": 1})

    def test_conflicting_content_lengths_502(self):
        # RFC 9112 §6.3: differing Content-Length values make the framing invalid; a proxy "MUST close
        # the connection to the server, discard the received response, and send a 502". Passing one
        # reading through lets the upstream (or anything between) choose where the next response starts.
        self.faulty.set_script(Script([b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                                       b"Content-Length: 5\r\n\r\nabcde"], then="close"))
        before = self.metrics()
        resp, _ = self.timed_call("POST", "/iq-fault/v1/two-lengths", b"{}")
        self.assertGatewayError(resp, 502, "upstream_unreachable")
        self.assertEqual(self.faulty.connections, 1)
        self.assertErrorsMoved(before, "iq-fault", {"protocol": 1})

    def test_control_characters_in_upstream_headers_never_reach_the_client(self):
        # A hostile upstream must not be able to split keyway's response to its client.
        cases = [b"X-Evil: a\rInjected: 1\r\n", b"X-Evil: a\x00Injected: 1\r\n", b"X-Evil: a\x0bb\r\n",
                 b"X-Evil: a\r\n Injected: 1\r\n", b"X-E\rvil: a\r\n"]
        for raw in cases:
            with self.subTest(raw=raw):
                self.faulty.set_script(Script([b"HTTP/1.1 200 OK\r\n" + raw + b"Content-Length: 2\r\n\r\nok"]))
                resp, _ = self.timed_call("POST", "/iq-fault/v1/split", b"{}")
                self.assertIn(resp.status, (200, 502), resp)
                for name, value in resp.headers:
                    self.assertNotEqual(name.strip().lower(), "injected", resp)
                    for ch in "\r\n\x00\x0b":
                        self.assertNotIn(ch, name + value, resp)
                if resp.status == 200:
                    self.assertEqual(resp.body, b"ok")
                else:
                    self.assertGatewayError(resp, 502, "upstream_unreachable")

    # -- TLS ------------------------------------------------------------------------------------
    def test_tls_fake_positive_control(self):
        # The fake is a working TLS server: a client that trusts its certificate gets through.
        ctx = ssl.create_default_context(cafile=self.cert)
        ctx.check_hostname = False
        before = self.tls.handshakes_ok
        with socket.create_connection(("127.0.0.1", self.tls.port), timeout=10) as raw:
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertIn(b"tls-got-through", s.recv(4096))
        self.assertEqual(self.tls.handshakes_ok, before + 1)

    def test_tls_wrong_certificate_502(self):
        ok_before, failed_before = self.tls.handshakes_ok, self.tls.handshakes_failed
        before = self.metrics()
        for method, body in (("GET", None), ("POST", b'{"a":1}')):
            with self.subTest(method=method):
                resp, _ = self.timed_call(method, "/iq-tls/v1/notes", body, limit=6)
                doc = self.assertGatewayError(resp, 502, "upstream_unreachable")
                message = doc["error"]["message"]
                self.assertIn("TLS", message)
                self.assertIn("certificate", message.lower())
        deadline = time.monotonic() + 3  # the fake counts a failed handshake once it reads keywayd's alert
        while self.tls.handshakes_failed < failed_before + 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        self.assertEqual(self.tls.handshakes_ok, ok_before, "keywayd completed a handshake with an untrusted certificate")
        self.assertEqual(self.tls.handshakes_failed, failed_before + 2, "one handshake per request, no retry")
        self.assertErrorsMoved(before, "iq-tls", {"tls": 2})

    def test_tls_server_answering_plain_http_502(self):
        before = self.metrics()
        resp, _ = self.timed_call("GET", "/iq-not-tls/v1/notes", limit=6)
        doc = self.assertGatewayError(resp, 502, "upstream_unreachable")
        self.assertIn("TLS", doc["error"]["message"])
        self.assertEqual(self.not_tls.connections, 1)
        self.assertErrorsMoved(before, "iq-not-tls", {"tls": 1})

    def test_tls_handshake_stall_is_bounded_504(self):
        before = self.metrics()
        resp, took = self.timed_call("GET", "/iq-tls-stall/v1/notes", limit=5)
        self.assertGatewayError(resp, 504, "upstream_timeout")
        self.assertGreaterEqual(took, 0.9, "answered before the 1s connect_timeout")
        self.assertErrorsMoved(before, "iq-tls-stall", {"timeout": 1})

    # -- afterwards -----------------------------------------------------------------------------
    def test_zz_daemon_fine_after_all_faults(self):
        resp = self.call("GET", "/bundleup-proxy/v1/fine")
        self.assertEqual(resp.status, 200, resp)
        self.assertNothingInFlight()
        threads = [threading.Thread(target=self.call, args=("GET", "/iq-dead/x")) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(self.call("GET", "/bundleup-proxy/v1/still-fine").status, 200)
        self.assertNothingInFlight()
