"""test_errors.py: errors keyway produces itself (docs/http.md, docs/errors.md): bad targets, unknown mounts, body limit,
unreachable and slow upstreams; and the reserved /_keyway endpoints."""

import time

from harness import KeywayTestCase, RawConnection, Response, closed_port, request

LIMIT = 65536  # KeywayTestCase.LIMITS max_body_bytes


class TargetValidationTest(KeywayTestCase):
    BAD_TARGETS = [
        "http://127.0.0.1/bundleup-proxy/x",         # absolute-form
        "https://api.bundleup.io/v1/connections",   # absolute-form
        "*",                                          # asterisk-form
        "bundleup-proxy/x",                          # no leading slash
        "/bundleup-proxy//evil.example/x",           # rest starts with //
        "/bundleup-proxy//",
        "/bundleup-proxy/./x",
        "/bundleup-proxy/a/./x",
        "/bundleup-proxy/a/.",
        "/bundleup-proxy/../bundleiq/x",
        "/bundleup-proxy/a/../x",
        "/bundleup-proxy/a/..",
        "/bundleup-proxy/a/..?q=1",
        "/bundleup-proxy/%2e%2e/x",
        "/bundleup-proxy/%2E%2E/x",
        "/bundleup-proxy/%2e/x",
        "/bundleup-proxy/.%2e/x",
        "/bundleup-proxy/%2e./x",
        "/bundleup-proxy/a/%2E",
    ]

    def test_bad_targets_400_never_forwarded(self):
        for target in self.BAD_TARGETS:
            with self.subTest(target=target):
                resp = self.call("GET", target)
                self.assertKeywayError(resp, 400, "bad_request", "Bad Request")
        self.assertNotForwarded()

    def test_bad_target_with_options_and_connect(self):
        for method, target in (("OPTIONS", "*"), ("CONNECT", "api.bundleup.io:443")):
            with self.subTest(method=method):
                resp = self.call(method, target)
                self.assertKeywayError(resp, 400, "bad_request")
        self.assertNotForwarded()

    def test_dots_inside_segments_are_fine(self):
        for rest in ("/a.b/c", "/.well-known/x", "/a/..b/c", "/v1/x.json", "/a/..."):
            with self.subTest(rest=rest):
                self.fake.reset()
                resp = self.call("GET", "/bundleup-proxy" + rest)
                self.assertEqual(resp.status, 200, resp)
                self.assertEqual(self.only_request().target, rest)

    def test_unknown_mount_404(self):
        for target in ("/nope/x", "/", "/bundleup-proxyx/x", "/BUNDLEUP-PROXY/x", "/_keyway/nothing"):
            with self.subTest(target=target):
                resp = self.call("GET", target)
                self.assertKeywayError(resp, 404, "not_found", "Not Found")
        self.assertNotForwarded()

    def test_malformed_request_lines_do_not_crash(self):
        for raw in (b"GET\r\n\r\n", b"GET /bundleup-proxy/x\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                    b"GET /bundleup-proxy/x HTTP/9.9\r\nHost: x\r\n\r\n",
                    b"GET /bundleup-proxy/x HTTP/1.1\r\nBad Header Line\r\n\r\n",
                    b"GET /bundleup-proxy/\x00x HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"POST /bundleup-proxy/x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                    b"POST /bundleup-proxy/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                    b"POST /bundleup-proxy/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n"):
            with self.subTest(raw=raw[:40]):
                with RawConnection(self.port, timeout=15) as c:
                    c.send(raw)
                    try:
                        resp = c.read_response(timeout=15)
                        self.assertTrue(400 <= resp.status < 500 or resp.status == 505, resp)
                    except OSError:
                        pass  # closing the connection is an acceptable answer to binary junk
        self.assertNotForwarded(0)
        self.assertTrue(self.kw.running, "keywayd died on malformed input")
        self.assertEqual(request(self.port, "GET", "/_keyway/health").status, 200)


class BodyLimitTest(KeywayTestCase):

    def _post_watching(self, headers, body_bytes, chunked=False):
        with RawConnection(self.port, timeout=15) as c:
            hdrs = [("X-Keyway-Token", self.token()), ("Content-Type", "application/octet-stream")] + headers
            c.send_request("POST", "/bundleup-proxy/upload", hdrs, None)
            if chunked:
                piece = b"%x\r\n" % 8192 + b"z" * 8192 + b"\r\n"
                payload = piece * (len(body_bytes) // 8192) + b"0\r\n\r\n"
            else:
                payload = body_bytes
            c.send_body_watching(payload)
            return c.read_response(timeout=15)

    def test_content_length_over_limit_413(self):
        resp = self._post_watching([("Content-Length", str(LIMIT + 1))], b"y" * (LIMIT + 1))
        self.assertKeywayError(resp, 413, "payload_too_large", "Payload Too Large")
        self.assertNotForwarded()

    def test_huge_content_length_413_without_reading_it(self):
        with RawConnection(self.port, timeout=10) as c:
            c.send_request("POST", "/bundleup-proxy/upload",
                           [("X-Keyway-Token", self.token()), ("Content-Length", str(50 * 1024 ** 3))])
            resp = c.read_response(timeout=10)
        self.assertKeywayError(resp, 413, "payload_too_large")
        self.assertNotForwarded()

    def test_chunked_over_limit_413(self):
        resp = self._post_watching([("Transfer-Encoding", "chunked")], b"z" * (LIMIT + 8192), chunked=True)
        self.assertKeywayError(resp, 413, "payload_too_large", "Payload Too Large")
        self.assertNotForwarded()

    def test_body_at_limit_is_forwarded(self):
        body = bytes(i % 251 for i in range(LIMIT))
        resp = self.call("POST", "/bundleup-proxy/upload", [("Content-Type", "application/octet-stream")], body)
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(self.only_request().body, body)

    def test_chunked_under_limit_is_forwarded(self):
        resp = self._post_watching([("Transfer-Encoding", "chunked")], b"z" * (LIMIT - 8192), chunked=True)
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(self.only_request().body, b"z" * (LIMIT - 8192))


class UpstreamFailureTest(KeywayTestCase):

    @classmethod
    def upstreams(cls):
        ups = super().upstreams()
        ups["bundleup-dead"] = {"base_url": "http://127.0.0.1:%d" % closed_port(), "connect_timeout": "2s",
                                "timeout": "5s"}
        ups["bundleup-slow"] = {"base_url": cls.fake.url, "timeout": "1s"}
        return ups

    def test_refused_upstream_502(self):
        t0 = time.monotonic()
        resp = self.call("GET", "/bundleup-dead/v1/x")
        self.assertKeywayError(resp, 502, "upstream_unreachable", "Bad Gateway")
        self.assertLess(time.monotonic() - t0, 10)

    def test_refused_upstream_502_for_post(self):
        resp = self.call("POST", "/bundleup-dead/v1/x", [("Content-Type", "application/json")], b'{"a":1}')
        self.assertKeywayError(resp, 502, "upstream_unreachable", "Bad Gateway")

    def test_stalled_upstream_504(self):
        self.fake.route("*", "/stall*", Response(stall=True))
        t0 = time.monotonic()
        resp = self.call("GET", "/bundleup-slow/stall", timeout=20)
        took = time.monotonic() - t0
        self.assertKeywayError(resp, 504, "upstream_timeout", "Gateway Timeout")
        self.assertGreaterEqual(took, 0.9, "answered 504 before the configured 1s timeout")
        self.assertLess(took, 6, "504 took far longer than the configured 1s timeout")
        self.assertEqual(len(self.fake.requests), 1)

    def test_slow_headers_past_timeout_504_but_fast_enough_is_ok(self):
        self.fake.route("GET", "/late", Response(body=b"late", delay=3))
        self.fake.route("GET", "/ontime", Response(body=b"on time", delay=0.3))
        self.assertKeywayError(self.call("GET", "/bundleup-slow/late", timeout=20), 504, "upstream_timeout")
        resp = self.call("GET", "/bundleup-slow/ontime")
        self.assertEqual((resp.status, resp.body), (200, b"on time"))

    def test_daemon_survives_and_serves_after_failures(self):
        self.call("GET", "/bundleup-dead/x")
        resp = self.call("GET", "/bundleup-proxy/after")
        self.assertEqual(resp.status, 200)
        self.assertTrue(self.kw.running)


class ReservedEndpointsTest(KeywayTestCase):

    def test_health_without_token(self):
        resp = request(self.port, "GET", "/_keyway/health")
        self.assertEqual(resp.status, 200, resp)
        self.assertNotForwarded(0)

    def test_ready_without_token(self):
        resp = request(self.port, "GET", "/_keyway/ready")
        self.assertEqual(resp.status, 200, resp)

    def test_metrics_prometheus_text(self):
        self.call("GET", "/bundleup-proxy/m1")
        self.call("GET", "/nope/x")
        resp = request(self.port, "GET", "/_keyway/metrics")
        self.assertEqual(resp.status, 200, resp)
        self.assertTrue((resp.header("Content-Type") or "").startswith("text/plain"), resp.headers)
        text = resp.text
        self.assertIn("# TYPE ", text)
        samples = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
        self.assertTrue(samples, "no samples in /_keyway/metrics")
        for ln in samples:
            name_labels, _, value = ln.rpartition(" ")
            self.assertTrue(name_labels, ln)
            float(value)  # every sample value parses as a number
        self.assertIn("bundleup-proxy", text, "requests by upstream must be counted")

    def test_reserved_paths_are_not_upstreams(self):
        resp = self.call("GET", "/_keyway/health")
        self.assertEqual(resp.status, 200)
        self.assertNotForwarded(0)
