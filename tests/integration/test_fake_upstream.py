"""test_fake_upstream.py: self-tests of the fake upstream and the raw HTTP client (no keywayd needed).

If these fail, every other integration result is suspect: they prove the instruments measure what
the keyway tests assume (raw targets, header order, keep-alive accounting, streaming, failures)."""

import gzip
import json
import subprocess
import sys
import threading
import time
import unittest

from harness import (REPO, ConnectionClosed, FakeUpstream, RawConnection, Response, build_request,
                     concurrent_requests, request)


class FakeUpstreamTest(unittest.TestCase):
    def setUp(self):
        self.fake = FakeUpstream().start()
        self.addCleanup(self.fake.stop)

    def test_records_raw_target_headers_and_body(self):
        body = bytes(range(256)) * 3
        resp = request(self.fake.port, "PATCH", "/a%2Fb/c/?z=1&a=2&z=0&flag",
                       [("X-One", "1"), ("x-TWO", "2"), ("X-One", "3")], body)
        self.assertEqual(resp.status, 200)
        r = self.fake.last_request()
        self.assertEqual(r.method, "PATCH")
        self.assertEqual(r.target, "/a%2Fb/c/?z=1&a=2&z=0&flag")
        self.assertEqual(r.path, "/a%2Fb/c/")
        self.assertEqual(r.query, "z=1&a=2&z=0&flag")
        self.assertEqual([n for n, _ in r.headers], ["Host", "X-One", "x-TWO", "X-One", "Content-Length"])
        self.assertEqual(r.header_all("x-one"), ["1", "3"])
        self.assertEqual(r.body, body)
        echo = resp.json()
        self.assertEqual(echo["target"], r.target)
        self.assertEqual(echo["conn"], r.conn_id)

    def test_chunked_request_body_and_expect_continue(self):
        with RawConnection(self.fake.port) as c:
            c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                   b"Expect: 100-continue\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n")
            resp = c.read_response()
        self.assertEqual(resp.status, 200)
        r = self.fake.last_request()
        self.assertTrue(r.chunked)
        self.assertEqual(r.body, b"hello world")

    def test_keep_alive_and_connection_counting(self):
        with RawConnection(self.fake.port) as c:
            for i in range(20):
                self.assertEqual(c.request("GET", "/k/%d" % i).status, 200)
            self.assertFalse(c.peer_closed(0.1))
        reqs = self.fake.requests
        self.assertEqual(len(reqs), 20)
        self.assertEqual({r.conn_id for r in reqs}, {1})
        self.assertEqual([r.seq for r in reqs], list(range(1, 21)))
        self.assertEqual(self.fake.connections_accepted, 1)

    def test_connection_close_and_http10(self):
        with RawConnection(self.fake.port) as c:
            resp = c.request("GET", "/x", [("Connection", "close")])
            self.assertIn("close", resp.connection_tokens())
            self.assertTrue(c.peer_closed(2))
        with RawConnection(self.fake.port) as c:
            c.request("GET", "/x", version="HTTP/1.0")
            self.assertTrue(c.peer_closed(2))
        self.assertEqual(self.fake.connections_accepted, 2)

    def test_scripted_status_reason_headers_and_routing(self):
        self.fake.route("GET", "/r", Response(418, "I'm a teapot", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                                                   ("Retry-After", "7")], b"tea"))
        self.fake.route("*", "/pre/*", Response(201, body=b"prefix"))
        self.fake.route("GET", "/once", Response(503), times=1)
        resp = request(self.fake.port, "GET", "/r?q=1")
        self.assertEqual((resp.status, resp.reason, resp.body), (418, "I'm a teapot", b"tea"))
        self.assertEqual(resp.header_all("set-cookie"), ["a=1", "b=2"])
        self.assertEqual(request(self.fake.port, "DELETE", "/pre/x/y").status, 201)
        self.assertEqual(request(self.fake.port, "GET", "/once").status, 503)
        self.assertEqual(request(self.fake.port, "GET", "/once").status, 200)  # back to echo

    def test_delay_stall_close_after_and_garbage(self):
        self.fake.route("GET", "/slow", Response(body=b"late", delay=0.5))
        t0 = time.monotonic()
        self.assertEqual(request(self.fake.port, "GET", "/slow").body, b"late")
        self.assertGreaterEqual(time.monotonic() - t0, 0.45)

        self.fake.route("GET", "/stall", Response(stall=True))
        with RawConnection(self.fake.port, timeout=0.5) as c:
            c.send_request("GET", "/stall")
            with self.assertRaises(OSError):
                c.read_response(timeout=0.5)

        self.fake.route("GET", "/cut", Response(body=b"x" * 1000, close_after=10))
        with RawConnection(self.fake.port) as c:
            c.send_request("GET", "/cut")
            with self.assertRaises(ConnectionClosed):
                c.read_response()

        self.fake.route("GET", "/junk", Response(garbage=b"NOT HTTP AT ALL\r\n\r\n"))
        with RawConnection(self.fake.port) as c:
            c.send_request("GET", "/junk")
            with self.assertRaises(ValueError):
                c.read_response()

    def test_sse_gate_releases_second_event(self):
        gate = threading.Event()
        self.fake.route("GET", "/events", Response(sse=["one", gate, "two"]))
        with RawConnection(self.fake.port, timeout=5) as c:
            c.send_request("GET", "/events")
            head = c.read_head()
            self.assertEqual(head.header("Content-Type"), "text/event-stream")
            got = c.read_stream_until(b"data: one\n\n", timeout=3)
            self.assertNotIn(b"two", got)
            gate.set()
            got = c.read_stream_until(b"data: two\n\n", timeout=3)
            self.assertEqual(got, b"data: one\n\ndata: two\n\n")

    def test_chunked_and_gzip_bodies_pass_as_bytes(self):
        gz = gzip.compress(b"hello " * 100)
        self.fake.route("GET", "/gz", Response(headers=[("Content-Encoding", "gzip")], body=gz))
        self.fake.route("GET", "/ch", Response(chunks=[b"ab", 0.05, b"cd", "ef"]))
        self.assertEqual(request(self.fake.port, "GET", "/gz").body, gz)
        resp = request(self.fake.port, "GET", "/ch")
        self.assertEqual(resp.header("Transfer-Encoding"), "chunked")
        self.assertEqual(resp.body, b"abcdef")

    def test_head_and_204_have_no_body(self):
        self.fake.route("*", "/nb", Response(body=b"12345"))
        self.fake.route("DELETE", "/gone", Response(204))
        with RawConnection(self.fake.port) as c:
            resp = c.request("HEAD", "/nb")
            self.assertEqual((resp.header("Content-Length"), resp.body), ("5", b""))
            resp = c.request("DELETE", "/gone")
            self.assertEqual((resp.status, resp.body), (204, b""))
            self.assertEqual(c.request("GET", "/nb").body, b"12345")

    def test_concurrent_client_against_slow_fake(self):
        self.fake.route("GET", "/c/*", lambda req: Response(body=req.target.encode(), delay=0.5))
        raws = [build_request("GET", "/c/%d" % i) for i in range(300)]
        t0 = time.monotonic()
        results = concurrent_requests(self.fake.port, raws, timeout=20)
        took = time.monotonic() - t0
        for i, r in enumerate(results):
            self.assertNotIsInstance(r, Exception, "request %d: %r" % (i, r))
            self.assertEqual(r.body, ("/c/%d" % i).encode())
        self.assertLess(took, 10, "300 x 0.5 s requests must overlap")
        self.assertEqual(self.fake.connections_accepted, 300)

    def test_command_line_mode(self):
        proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fakes" / "fake_upstream.py"),
                                 "--status", "202", "--body", "cli"], stdout=subprocess.PIPE, text=True)
        try:
            info = json.loads(proc.stdout.readline())
            resp = request(info["port"], "GET", "/any")
            self.assertEqual((resp.status, resp.body), (202, b"cli"))
        finally:
            proc.terminate()
            out = proc.communicate(timeout=10)[0]
        self.assertEqual(json.loads(out.strip().splitlines()[-1])["requests"], 1)


if __name__ == "__main__":
    unittest.main()
