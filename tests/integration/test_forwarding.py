"""test_forwarding.py: what the upstream receives and what the client gets back are exact (docs/http.md).

Forwarding checks go through bundleup-proxy (never cached, docs/cache.md) or use unique paths, so a cache
in front can never hide a request from the fake."""

import gzip
import os
import uuid

from harness import HOP_BY_HOP, KeywayTestCase, RawConnection, Response, request


def _uid():
    return uuid.uuid4().hex[:12]


class ForwardRequestTest(KeywayTestCase):
    """Client -> keyway -> fake: method, raw target, headers and body."""

    def test_raw_target_percent_encoding_query_order_duplicates(self):
        rest = "/repos/acme%2Fapi/a%20b/%7Euser/x%3By/?z=1&a=2&z=0&empty=&flag&sp=%20+x&u=%C3%A9"
        resp = self.call("GET", "/bundleup-proxy" + rest)
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(self.only_request().target, rest)

    def test_trailing_slash_and_mount_root(self):
        self.assertEqual(self.call("GET", "/bundleup-proxy/v1/things/").status, 200)
        self.assertEqual(self.only_request().target, "/v1/things/")
        self.fake.reset()
        self.assertEqual(self.call("GET", "/bundleup-proxy/").status, 200)
        self.assertEqual(self.only_request().target, "/")
        self.fake.reset()
        self.assertEqual(self.call("GET", "/bundleup-proxy/?only=query").status, 200)
        self.assertEqual(self.only_request().target, "/?only=query")

    def test_bodies_for_each_method_byte_for_byte(self):
        body = bytes(range(256)) * 7 + b"\r\n\r\n\x00tail"
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            with self.subTest(method=method):
                self.fake.reset()
                resp = self.call(method, "/bundleup-proxy/items/%s" % method.lower(),
                                 [("Content-Type", "application/octet-stream")], body)
                self.assertEqual(resp.status, 200, resp)
                r = self.only_request()
                self.assertEqual(r.method, method)
                self.assertEqual(r.target, "/items/%s" % method.lower())
                self.assertEqual(r.body, body)
                self.assertEqual(r.header("Content-Type"), "application/octet-stream")

    def test_empty_post_and_delete_without_body(self):
        self.assertEqual(self.call("POST", "/bundleup-proxy/empty", [("Content-Length", "0")]).status, 200)
        r = self.only_request()
        self.assertEqual((r.method, r.body), ("POST", b""))
        self.fake.reset()
        self.assertEqual(self.call("DELETE", "/bundleup-proxy/things/1").status, 200)
        r = self.only_request()
        self.assertEqual((r.method, r.body), ("DELETE", b""))

    def test_chunked_request_body_is_forwarded(self):
        with RawConnection(self.port) as c:
            c.send(("POST /bundleup-proxy/upload HTTP/1.1\r\nHost: x\r\nX-Keyway-Token: %s\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n" % self.token()).encode()
                   + b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n")
            resp = c.read_response()
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(self.only_request().body, b"abcdefg")

    def test_other_methods_pass(self):
        self.assertEqual(self.call("OPTIONS", "/bundleup-proxy/opt").status, 200)
        self.assertEqual(self.only_request().method, "OPTIONS")

    def test_end_to_end_headers_kept(self):
        sent = [
            ("Accept", "application/vnd.api+json"),
            ("User-Agent", "python-requests/2.31.0"),
            ("BU-Connection-Id", "conn_123"),
            ("BU-Include-Raw", "true"),
            ("Mcp-Session-Id", "sess-42"),
            ("If-None-Match", '"etag-1"'),
            ("X-Custom-A", "first"),
            ("X-Empty-Ok", "x"),
            ("X-Custom-A", "second"),
            ("Accept-Language", "fr-CH, fr;q=0.9"),
            ("Cache-Control", "no-cache"),
        ]
        resp = self.call("GET", "/bundleup-proxy/hdrs/" + _uid(), sent)
        self.assertEqual(resp.status, 200, resp)
        r = self.only_request()
        for name, value in sent:
            if name == "X-Custom-A":
                continue
            self.assertEqual(r.header_all(name), [value], name)
        # Repeated header: kept in order, as two lines or folded into one list (RFC 9110 §5.3).
        self.assertEqual(", ".join(r.header_all("X-Custom-A")), "first, second")

    def test_host_is_the_upstream(self):
        self.call("GET", "/bundleup-proxy/host", [("Host", "evil.example:8750")])
        r = self.only_request()
        self.assertEqual(r.header_all("Host"), ["127.0.0.1:%d" % self.fake.port])

    def test_hop_by_hop_request_headers_dropped(self):
        sent = [
            ("Connection", "keep-alive, X-Hop-Named"),
            ("X-Hop-Named", "drop me"),
            ("Keep-Alive", "timeout=5, max=100"),
            ("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("X-Kept", "yes"),
        ]
        self.assertEqual(self.call("GET", "/bundleup-proxy/hop", sent).status, 200)
        r = self.only_request()
        for name in ("X-Hop-Named", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "TE", "Trailer"):
            self.assertFalse(r.has_header(name), "%s reached the upstream: %r" % (name, r.headers))
        for v in r.header_all("Connection"):
            self.assertNotIn("x-hop-named", v.lower())
        self.assertEqual(r.header("X-Kept"), "yes")

    def test_base_url_path_prefix(self):
        resp = self.call("GET", "/prefixed/v2/items?x=1")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(self.only_request().target, "/base/path/v2/items?x=1")

    @classmethod
    def upstreams(cls):
        ups = super().upstreams()
        ups["prefixed"] = {"base_url": cls.fake.url + "/base/path", "protocol": "bundleup"}
        return ups


class ForwardResponseTest(KeywayTestCase):
    """Fake -> keyway -> client: status, reason phrase, headers and body unchanged."""

    def test_status_and_reason_pass_through(self):
        for status, reason in ((201, "Created"), (202, "Accepted"), (404, "Not Found"),
                               (409, "Conflict"), (418, "I'm a teapot"), (422, "Unprocessable Entity"),
                               (500, "Internal Server Error"), (503, "Service Unavailable")):
            with self.subTest(status=status):
                self.fake.route("GET", "/st", Response(status, reason, [("Content-Type", "application/json")],
                                                       b'{"code":"upstream_own","message":"from upstream"}'))
                resp = self.call("GET", "/bundleup-proxy/st")
                self.assertEqual((resp.status, resp.reason), (status, reason))
                self.assertEqual(resp.body, b'{"code":"upstream_own","message":"from upstream"}')

    def test_custom_reason_phrase_unchanged(self):
        self.fake.route("GET", "/reason", Response(200, "Totally Fine Thanks", body=b"ok"))
        resp = self.call("GET", "/bundleup-proxy/reason")
        self.assertEqual((resp.status, resp.reason, resp.body), (200, "Totally Fine Thanks", b"ok"))

    def test_response_headers_unchanged(self):
        hdrs = [
            ("Content-Type", "application/vnd.bundleup+json; charset=utf-8"),
            ("Retry-After", "7"),
            ("Mcp-Session-Id", "3f2a-session"),
            ("Set-Cookie", "a=1; Path=/; HttpOnly"),
            ("ETag", '"v1-abc"'),
            ("Set-Cookie", "b=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Secure"),
            ("X-RateLimit-Remaining", "99"),
            ("Link", '<https://api.example/next?page=2>; rel="next"'),
        ]
        self.fake.route("GET", "/h", Response(429, headers=hdrs, body=b'{"code":"rate_limit"}'))
        resp = self.call("GET", "/bundleup-proxy/h")
        self.assertEqual((resp.status, resp.reason), (429, "Too Many Requests"))
        for name, value in hdrs:
            if name != "Set-Cookie":
                self.assertEqual(resp.header_all(name), [value], name)
        # Set-Cookie must never be folded (RFC 6265 §3): two lines, in order.
        self.assertEqual(resp.header_all("Set-Cookie"), [hdrs[3][1], hdrs[5][1]])
        self.assertEqual(resp.body, b'{"code":"rate_limit"}')

    def test_hop_by_hop_response_headers_dropped(self):
        hdrs = [("Connection", "X-Hop-Resp"), ("X-Hop-Resp", "secret-ish"), ("Keep-Alive", "timeout=3"),
                ("Proxy-Authenticate", "Basic realm=x"), ("Upgrade", "h2c"), ("X-Kept", "1")]
        self.fake.route("GET", "/hop", Response(headers=hdrs, chunks=[b"abc", b"def"]))
        resp = self.call("GET", "/bundleup-proxy/hop")
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.body, b"abcdef")
        for name in ("X-Hop-Resp", "Keep-Alive", "Proxy-Authenticate", "Upgrade"):
            self.assertFalse(resp.has_header(name), "%s reached the client: %r" % (name, resp.headers))
        self.assertEqual(resp.header("X-Kept"), "1")

    def test_binary_and_large_bodies_unchanged(self):
        blob = os.urandom(3 * 1024 * 1024 + 17)
        self.fake.route("GET", "/blob", Response(headers=[("Content-Type", "application/octet-stream")], body=blob))
        resp = self.call("GET", "/bundleup-proxy/blob", timeout=30)
        self.assertEqual(resp.status, 200)
        self.assertEqual(len(resp.body), len(blob))
        self.assertTrue(resp.body == blob, "body bytes differ")

    def test_encoded_body_not_decoded(self):
        gz = gzip.compress(b'{"data":[1,2,3]}' * 50)
        self.fake.route("GET", "/gz", Response(headers=[("Content-Type", "application/json"),
                                                        ("Content-Encoding", "gzip")], body=gz))
        resp = self.call("GET", "/bundleup-proxy/gz", [("Accept-Encoding", "gzip")])
        self.assertEqual(resp.header("Content-Encoding"), "gzip")
        self.assertEqual(resp.body, gz)
        self.assertEqual(self.only_request().header("Accept-Encoding"), "gzip")

    def test_no_content_and_empty_bodies(self):
        self.fake.route("DELETE", "/gone", Response(204))
        resp = self.call("DELETE", "/bundleup-proxy/gone")
        self.assertEqual((resp.status, resp.reason, resp.body), (204, "No Content", b""))
        self.fake.route("GET", "/empty", Response(200, body=b""))
        resp = self.call("GET", "/bundleup-proxy/empty")
        self.assertEqual((resp.status, resp.body), (200, b""))

    def test_head_request(self):
        self.fake.route("HEAD", "/head", Response(headers=[("Content-Type", "text/plain"), ("X-Head", "1")],
                                                  body=b"0123456789"))
        with RawConnection(self.port) as c:
            resp = c.request("HEAD", "/bundleup-proxy/head", [("X-Keyway-Token", self.token())], timeout=10)
            self.assertEqual((resp.status, resp.body), (200, b""))
            self.assertEqual(resp.header("X-Head"), "1")
            # the connection is still usable: no stray body bytes were sent after the HEAD response
            resp = c.request("GET", "/bundleup-proxy/after-head", [("X-Keyway-Token", self.token())])
            self.assertEqual(resp.status, 200)
        self.assertEqual(self.fake.requests[0].method, "HEAD")

    def test_upstream_closing_mid_body_is_not_a_success(self):
        self.fake.route("GET", "/cut", Response(body=b"x" * 100000, close_after=1000))
        with RawConnection(self.port, timeout=15) as c:
            c.send_request("GET", "/bundleup-proxy/cut", [("X-Keyway-Token", self.token())])
            try:
                resp = c.read_response()
            except (OSError, ValueError):
                return  # the client saw the truncation (connection dropped): correct
            # A complete, well-framed answer must not pretend the truncated body is whole.
            self.assertFalse(resp.status == 200 and len(resp.body) == 100000, resp)
            self.assertNotEqual(resp.status, 200, "a truncated upstream body was served as 200")

    def test_upstream_garbage_gives_502(self):
        self.fake.route("GET", "/junk", Response(garbage=b"\x00\x01NOT-HTTP\r\n\r\n"))
        resp = self.call("GET", "/bundleup-proxy/junk")
        self.assertKeywayError(resp, 502, "upstream_unreachable", "Bad Gateway")


class CompatListenerTest(KeywayTestCase):
    """compat_listen: one upstream served at the root of its own port (docs/config.md)."""

    def test_root_paths_reach_their_upstream(self):
        for name in ("bundleup-api", "bundleup-proxy", "bundleup-unify"):
            with self.subTest(upstream=name):
                self.fake.reset()
                port = self.kw.compat_ports.get(name)
                self.assertTrue(port, "no compat listener logged for %s" % name)
                target = "/v1/x/%s/acme%%2Fapi/?b=2&a=1&b=1" % _uid()
                resp = request(port, "POST", target,
                               [("Authorization", "Bearer " + self.token()),
                                ("Content-Type", "application/json")], b'{"k":"v"}')
                self.assertEqual(resp.status, 200, resp)
                r = self.only_request()
                self.assertEqual((r.method, r.target, r.body), ("POST", target, b'{"k":"v"}'))
                self.assertEqual(r.header_all("Authorization"), ["Bearer " + self.secrets["bundleup"]])

    def test_reserved_paths_are_main_listener_only(self):
        port = self.kw.compat_ports["bundleup-proxy"]
        resp = request(port, "GET", "/_keyway/health", [("Authorization", "Bearer " + self.token())])
        self.assertEqual(resp.status, 200)
        self.assertEqual(self.only_request().target, "/_keyway/health")

    def test_compat_needs_a_token(self):
        port = self.kw.compat_ports["bundleup-api"]
        resp = request(port, "GET", "/v1/connections")
        self.assertKeywayError(resp, 401, "unauthorized", "Unauthorized")
        self.assertNotForwarded()

    def test_compat_refuses_bad_targets(self):
        port = self.kw.compat_ports["bundleup-api"]
        for target in ("//evil.example/v1/x", "/./v1/x", "/v1/%2E%2E/x", "http://127.0.0.1/v1/x"):
            with self.subTest(target=target):
                resp = request(port, "GET", target, [("Authorization", "Bearer " + self.token())])
                self.assertKeywayError(resp, 400, "bad_request", "Bad Request")
        self.assertNotForwarded()

    def test_compat_listener_keeps_mount_names_as_paths(self):
        # At the root of a compat port, "/bundleup-api/..." is just a path of that upstream.
        port = self.kw.compat_ports["bundleup-api"]
        resp = request(port, "GET", "/bundleup-proxy/v1/x", [("Authorization", "Bearer " + self.token())])
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(self.only_request().target, "/bundleup-proxy/v1/x")


# The same exchanges with the fake behind TLS (a certificate of the test CA, `tls: {ca_file}`):
# https upstreams go through libcurl, whose framing must be as exact as over plain HTTP.

class TlsForwardRequestTest(ForwardRequestTest):
    TLS = True


class TlsForwardResponseTest(ForwardResponseTest):
    TLS = True
